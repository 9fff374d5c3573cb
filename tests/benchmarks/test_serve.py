"""`udrl bench --serve` at a tiny scale: every setting measured, the server stopped with status 0."""

from pathlib import Path

from udrl.benchmarks.serve import ServeBenchConfig, bench_requests, markdown, run_serve_bench


def test_serve_bench_measures_every_setting_and_stops_its_server(tiny_artifacts, tmp_path):
    out = tmp_path / "serve"
    config = ServeBenchConfig(artifact=str(tiny_artifacts["llama"]), clients=(1, 3), requests=6, rounds=1,
                              batch=4, out=str(out))
    result = run_serve_bench(config)
    assert [r["clients"] for r in result["rows"]] == [1, 3]
    assert all(r["requests_s"] > 0 and r["p95_ms"] >= r["p50_ms"] > 0 for r in result["rows"])
    assert result["server_exit_code"] == 0
    assert result["generate_batch"]["same_greedy_texts"] == 4
    k = result["kernels"]
    assert k["prompt_tok_s_1"] > 0 and k["decode_tok_s_8"] > 0 and 0 < k["prompt_share"] < 1
    assert result["second_thread"]["first_thread_ms"] > 0
    for suffix in (".json", ".md", ".png"):
        assert Path(str(out) + suffix).stat().st_size > 0
    assert "| 3 |" in markdown(result)


def test_bench_requests_come_from_the_tuning_half_across_tasks():
    from udrl.trainer.handwritten import load_split

    requests = bench_requests(8)
    assert {r["task"] for r in requests} == {"image", "search", "headline", "tags"}
    assert set(load_split("tune")) >= {r["query"] for r in requests}
    assert not set(load_split("eval")) & {r["query"] for r in requests}
