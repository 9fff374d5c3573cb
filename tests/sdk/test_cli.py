import json
import subprocess
import sys


def udrl(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "udrl", *args], capture_output=True, text=True, timeout=300,
                          input=stdin)


def test_generate_prints_the_prompt(tiny_artifacts):
    import udrl as sdk

    out = udrl("generate", "poster for a bakery", "--task", "tags", "--length", "4",
               "--model", str(tiny_artifacts["llama"]))
    assert out.returncode == 0, out.stderr
    with sdk.load(tiny_artifacts["llama"]) as m:
        assert out.stdout.strip() == m.generate("poster for a bakery", task="tags", length=4).text
    assert out.stderr == ""


def test_generate_stream_json_and_batch_from_stdin(tiny_artifacts):
    model = str(tiny_artifacts["onnx"])
    single = udrl("generate", "jazz night flyer", "--length", "6", "--model", model)
    streamed = udrl("generate", "jazz night flyer", "--length", "6", "--model", model, "--stream")
    assert streamed.stdout == single.stdout
    out = udrl("generate", "--file", "-", "--json", "--task", "search", "--length", "3", "--model", model,
               stdin="jazz night flyer\n\nbakery logo\n")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["query"] for r in rows] == ["jazz night flyer", "bakery logo"]
    assert all(r["words"] == 3 and r["command"]["task"] == "search" for r in rows)
    assert all(r["decode_tok_s"] >= 0 and r["finish_reason"] in ("stop", "length") for r in rows)


def test_generate_takes_the_query_focus_and_info_shows_the_default(tiny_artifacts):
    import udrl as sdk

    model = str(tiny_artifacts["llama"])
    out = udrl("generate", "poster for a summer festival", "--length", "9", "--focus", "50", "--model", model)
    with sdk.load(model) as m:
        assert out.stdout.strip() == m.generate("poster for a summer festival", length=9, focus=50).text
        bonus = "; ".join(f"{t} {b:g}" for t, b in m.manifest.focus_bias.items())
        assert f"query focus   {bonus}" in udrl("info", model).stdout
    assert "never ends on 35 words (a, about, an, and, as, at, ...)" in udrl("info", model).stdout
    assert "title case    headline\n" in udrl("info", model).stdout
    assert "--focus X" in udrl("generate", "--help").stdout


def test_generate_errors_are_one_line(tiny_artifacts):
    out = udrl("generate", "poster", "--task", "video", "--model", str(tiny_artifacts["llama"]))
    assert out.returncode == 3 and out.stderr.startswith("udrl generate: error: unknown task 'video'")
    assert "Traceback" not in out.stderr
    assert udrl("generate", "--model", str(tiny_artifacts["llama"])).returncode == 1
