import json
import subprocess
import sys

import pytest
from udrl.benchmarks.harness import BenchConfig, memory_bandwidth_gbs, ratios, run

ROW_KEYS = {"name", "kind", "device", "import_s", "load_s", "decode_tok_s", "latency_all_s", "latency_s", "peak_rss_mb"}


@pytest.fixture(scope="module")
def quick_result(tiny_artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "quick"
    result = run(BenchConfig(artifacts=[str(tiny_artifacts["llama"]), str(tiny_artifacts["onnx"])], threads=1,
                             quick=True, out=str(out)), log=lambda _: None)
    return result, out


# How long the quick run takes is a benchmark figure, not a test: this machine is shared and noisy.
def test_quick_run_covers_every_row_kind(quick_result):
    result, _ = quick_result
    kinds = [r["kind"] for r in result["rows"]]
    assert kinds == ["udrl", "raw-llama", "udrl", "hf-eager", "teacher"]
    assert not [r for r in result["rows"] if "error" in r]


def test_result_schema(quick_result):
    result, out = quick_result
    assert result["schema"] == "udrl-bench/1"
    assert {"cpu", "cores", "packages"} <= set(result["machine"])
    assert result["memory_bandwidth_gb_s"] > 0.1
    for row in result["rows"]:
        assert ROW_KEYS <= set(row), row.keys()
        assert row["decode_tok_s"]["median"] > 0 and row["latency_all_s"]["p95"] >= row["latency_all_s"]["median"] > 0
        assert row["peak_rss_mb"] > 5 and row["import_s"] > 0.001
    udrl_gguf = result["rows"][0]
    assert set(udrl_gguf["latency_s"]) == {"image", "search", "headline", "tags"}
    assert udrl_gguf["roofline"]["fraction"] > 0 and udrl_gguf["batch_requests_s"]["median"] > 0
    assert {int(k) for k in udrl_gguf["prefill_curve"]} == {4, 16, 48}
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == json.loads(json.dumps(result["rows"]))


def test_report_files_and_headline_ratios(quick_result):
    result, out = quick_result
    table = out.with_suffix(".md").read_text()
    assert "| row | kind |" in table and "SDK / raw llama-cpp-python" in table
    for suffix in (".decode.png", ".latency.png", ".prefill.png"):
        assert out.with_suffix(suffix).stat().st_size > 5000
    r = result["ratios"]
    assert set(r) >= {"sdk_over_raw_llama_decode", "best_udrl_over_hf_eager_decode",
                      "teacher_over_udrl_latency_per_request", "teacher_over_udrl_parameters"}
    assert r["teacher_over_udrl_parameters"] > 100


def test_ratios_are_computed_from_rows():
    rows = [
        {"name": "m.gguf", "kind": "udrl", "decode_tok_s": {"median": 90.0}, "latency_all_s": {"median": 0.1}, "n_params": 10},
        {"name": "m.gguf", "kind": "raw-llama", "decode_tok_s": {"median": 100.0}, "latency_all_s": {"median": 0.1}},
        {"name": "ckpt", "kind": "hf-eager", "decode_tok_s": {"median": 30.0}, "latency_all_s": {"median": 0.4}},
        {"name": "gemma", "kind": "teacher", "decode_tok_s": {"median": 50.0}, "latency_all_s": {"median": 1.0},
         "n_params": 270},
    ]
    r = ratios(rows)
    assert r["sdk_over_raw_llama_decode"] == {"m.gguf": 0.9}
    assert r["best_udrl_over_hf_eager_decode"]["ratio"] == 3.0
    assert r["teacher_over_udrl_latency_per_request"]["ratio"] == 10.0
    assert r["teacher_over_udrl_parameters"] == 27.0


def test_bandwidth_probe_is_positive():
    assert memory_bandwidth_gbs(size_mb=16, reps=2) > 0.1


def test_cli_quick(tiny_artifacts, tmp_path):
    out = subprocess.run([sys.executable, "-m", "udrl", "bench", str(tiny_artifacts["llama"]), "--quick", "--no-teacher",
                          "--no-hf", "--threads", "1", "--out", str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| row | kind |" in out.stdout and (tmp_path / "r.json").exists()


def test_contention_run_times_every_setting_beside_busy_processes(tiny_artifacts, tmp_path):
    from udrl.benchmarks.contention import ContentionConfig, run_contention

    out = tmp_path / "contention"
    result = run_contention(ContentionConfig(artifact=str(tiny_artifacts["llama"]), busy=(0, 1), length=8, reps=1,
                                             rounds=1, busy_limit_s=30, out=str(out)))
    assert [r["busy"] for r in result["rows"]] == [0, 1]
    for row in result["rows"]:
        assert set(row["latency_s"]) == {"default", "1 threads", "2 threads"}
        assert all(v > 0 for v in row["latency_s"].values())
    assert result["rows"][0]["vs_default_idle"]["default"] == 1.0
    assert "| busy processes | default | 1 threads | 2 threads |" in (out.with_suffix(".md")).read_text()
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == result["rows"]


def test_busy_spinners_are_bounded_in_time():
    from udrl.benchmarks.contention import busy_processes

    procs = busy_processes(1, limit_s=0.5)
    assert procs[0].wait(timeout=30) == 0
