"""Write a benchmark result as JSON, a markdown table and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _med(row: dict[str, Any], key: str) -> float | None:
    return (row.get(key) or {}).get("median")


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Machine: {m.get('cpu', '?')}, {m.get('cores')} cores, {m.get('memory_gb', '?')} GB, GPU: {m.get('gpu') or 'none'}; "
        f"{result['config']['threads']} threads; memory bandwidth {result['memory_bandwidth_gb_s']:.1f} GB/s "
        f"(copy); {result['config']['reps']} repetitions, medians.",
        "",
        "| row | kind | device | size MB | params M | import + load s | prefill ms | TTFT ms | decode tok/s | "
        "latency p50 ms | p95 ms | batch req/s | peak RSS MB | roofline |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['name']} | {r['kind']} | – | skipped: {r['skipped']} |" + " |" * 10)
            continue
        if "error" in r:
            lines.append(f"| {r['name']} | {r['kind']} | {r.get('device', '')} | error: {r['error'][:80]} |" + " |" * 10)
            continue
        lat = r.get("latency_all_s") or {}
        roof = r.get("roofline", {}).get("fraction")
        lines.append(
            f"| {r['name']} | {r['kind']} | {r.get('device', 'cpu')} | {_fmt((r.get('size_bytes') or 0) / 1e6)} | "
            f"{_fmt((r.get('n_params') or 0) / 1e6)} | {_fmt((r.get('import_s') or 0) + (r.get('load_s') or 0), '.2f')} | "
            f"{_fmt(_med(r, 'prefill_s') and _med(r, 'prefill_s') * 1e3)} | {_fmt(_med(r, 'ttft_s') and _med(r, 'ttft_s') * 1e3)} | "
            f"{_fmt(_med(r, 'decode_tok_s'))} | {_fmt(lat.get('median') and lat['median'] * 1e3)} | "
            f"{_fmt(lat.get('p95') and lat['p95'] * 1e3)} | {_fmt(_med(r, 'batch_requests_s'))} | "
            f"{_fmt(r.get('peak_rss_mb'), '.0f')} | {'–' if roof is None else f'{roof:.0%}'} |"
        )
    ratios = result.get("ratios", {})
    if ratios:
        lines += ["", "Headline ratios (same run):", ""]
        for name, value in ratios.get("sdk_over_raw_llama_decode", {}).items():
            lines.append(f"- SDK / raw llama-cpp-python decode tok/s on {name}: **{value:.3f}**")
        if "best_udrl_over_hf_eager_decode" in ratios:
            b = ratios["best_udrl_over_hf_eager_decode"]
            lines.append(f"- best udrl backend ({b['artifact']}) / HF eager decode tok/s: **{b['ratio']:.1f}x**")
        if "teacher_over_udrl_latency_per_request" in ratios:
            t = ratios["teacher_over_udrl_latency_per_request"]
            lines.append(f"- teacher latency per request / {t['artifact']}: **{t['ratio']:.1f}x** "
                         f"(parameters: {ratios.get('teacher_over_udrl_parameters', float('nan')):.0f}x)")
    skipped = result["devices"].get("skipped", {})
    if skipped:
        lines += ["", "Skipped devices: " + "; ".join(f"{k}: {v}" for k, v in skipped.items())]
    return "\n".join(lines) + "\n"


def _save(fig: Any, path: Path, paths: list[Path]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)


def plots(result: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if _med(r, "decode_tok_s")]
    paths = []
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows)), 4))
    colors = {"udrl": "tab:blue", "raw-llama": "tab:gray", "hf-eager": "tab:orange", "teacher": "tab:red"}
    ax.bar(range(len(rows)), [_med(r, "decode_tok_s") for r in rows], color=[colors.get(r["kind"], "k") for r in rows])
    ax.set_xticks(range(len(rows)), [f"{r['name']}\n({r['kind']})" for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("decode tok/s (median)")
    ax.set_title("decode speed by backend x quantization")
    _save(fig, out.with_suffix(".decode.png"), paths)

    sized = [r for r in result["rows"] if r.get("n_params") and (r.get("latency_all_s") or {}).get("median")]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in sized:
        x = r["n_params"] / 1e6
        ax.scatter(x, r["latency_all_s"]["median"] * 1e3, color=colors.get(r["kind"], "k"))
        ax.annotate(r["name"], (x, r["latency_all_s"]["median"] * 1e3), fontsize=6)
        if _med(r, "decode_tok_s"):
            ax2.scatter(x, _med(r, "decode_tok_s"), color=colors.get(r["kind"], "k"))
            ax2.annotate(r["name"], (x, _med(r, "decode_tok_s")), fontsize=6)
    for a, label in ((ax, "latency per request, p50 (ms)"), (ax2, "decode tok/s (median)")):
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("parameters (M)")
        a.set_ylabel(label)
    ax.set_title("latency against model size")
    ax2.set_title("decode speed against model size")
    _save(fig, out.with_suffix(".latency.png"), paths)

    curves = [r for r in result["rows"] if r.get("prefill_curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in curves:
            pts = sorted((v["prompt_tokens"], v["prefill_s"] * 1e3) for v in r["prefill_curve"].values())
            ax.plot(*zip(*pts), "o-", label=r["name"])
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel("prefill (ms)")
        ax.legend(fontsize=7)
        ax.set_title("prefill time against prompt length")
        _save(fig, out.with_suffix(".prefill.png"), paths)
    return paths


def write_report(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``out``.json, ``out``.md and ``out``.*.png."""
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path = out.with_suffix(".md")
    md_path.write_text(markdown(result))
    return {"json": json_path, "markdown": md_path, **{p.suffixes[0][1:]: p for p in plots(result, out)}}
