"""``udrl bench``: registered into the ``udrl`` command through an entry point."""

from __future__ import annotations

import argparse

DEFAULT_OUT = "benchmarks/results/latest"


def _busy_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--busy takes counts separated by commas, such as 0,1,2,3,4; got {text!r}")
    if not counts or any(not 0 <= n <= 64 for n in counts):
        raise argparse.ArgumentTypeError(f"--busy counts must be from 0 to 64, got {text!r}")
    return counts


def _cmd_contention(args: argparse.Namespace) -> int:
    from .contention import ContentionConfig, markdown, run_contention

    if len(args.artifacts) != 1:
        from udrl.errors import UdrlError

        raise UdrlError("--contention measures one artifact; give exactly one")
    out = args.out if args.out != DEFAULT_OUT else "benchmarks/results/contention"
    result = run_contention(ContentionConfig(artifact=args.artifacts[0], busy=args.busy, out=out))
    print(markdown(result))
    print(f"written: {out}.json, .md")
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeBenchConfig, markdown, run_serve_bench

    if len(args.artifacts) != 1:
        from udrl.errors import UdrlError

        raise UdrlError("--serve measures one artifact; give exactly one")
    out = args.out if args.out != DEFAULT_OUT else "benchmarks/results/serve"
    config = ServeBenchConfig(artifact=args.artifacts[0], threads=args.threads, out=out,
                              rounds=1 if args.quick else 3, requests=32 if args.quick else 96)
    print(markdown(run_serve_bench(config)))
    print(f"written: {out}.json, .md, .png")
    return 0


def _cmd_teacher(args: argparse.Namespace) -> int:
    from .teacher import TeacherBenchConfig, markdown, run_teacher_bench

    out = args.out if args.out != DEFAULT_OUT else "benchmarks/results/teacher"
    result = run_teacher_bench(TeacherBenchConfig(samples=16 if args.quick else 48, out=out))
    print(markdown(result))
    print(f"written: {out}.json, .md")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .harness import BenchConfig, run
    from .report import markdown

    if args.teacher:
        return _cmd_teacher(args)

    if args.contention:
        return _cmd_contention(args)
    if args.serve:
        return _cmd_serve(args)
    if not args.artifacts:
        from udrl.errors import UdrlError

        raise UdrlError("give one or more artifacts to benchmark (or --teacher)")

    config = BenchConfig(artifacts=args.artifacts, checkpoint=args.checkpoint, teacher=not args.no_teacher,
                         raw_llama=not args.no_raw, hf_eager=not args.no_hf, threads=args.threads, reps=args.reps,
                         decode_tokens=args.decode_tokens, quick=args.quick, out=args.out)
    result = run(config)
    print(markdown(result))
    print(f"written: {args.out}.json, .md, .decode.png, .latency.png, .prefill.png")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark artifacts against raw llama.cpp, HF eager and the teacher")
    p.add_argument("artifacts", nargs="*", help=".gguf / .onnx / .mlpackage / checkpoint directories")
    p.add_argument("--checkpoint", help="checkpoint for the HF eager baseline (default: the artifacts' parent)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--decode-tokens", type=int, default=64, help="tokens per decode-speed measurement")
    p.add_argument("--quick", action="store_true", help="one repetition, one query per task (under 2 minutes)")
    p.add_argument("--no-teacher", action="store_true", help="skip the Gemma teacher baseline")
    p.add_argument("--no-raw", action="store_true", help="skip raw llama-cpp-python")
    p.add_argument("--no-hf", action="store_true", help="skip HF transformers eager")
    p.add_argument("--contention", action="store_true",
                   help="per-request latency beside busy processes: default threads against 1 and 2")
    p.add_argument("--teacher", action="store_true",
                   help="the distillation teacher's samples/s, batched against one at a time (no artifact)")
    p.add_argument("--serve", action="store_true",
                   help="udrl serve at 1, 4, 8 and 16 concurrent clients against one request after another")
    p.add_argument("--busy", type=_busy_counts, default=(0, 1, 2, 3, 4), metavar="N,N,...",
                   help="busy-process counts for --contention (default 0,1,2,3,4)")
    p.add_argument("--out", default=DEFAULT_OUT, help="output path without extension")
    p.set_defaults(func=_cmd_bench)
