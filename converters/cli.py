"""``udrl export``: registered into the ``udrl`` command through an entry point."""

from __future__ import annotations

import argparse

from udrl.errors import UdrlError


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        from .export import export
    except ImportError as exc:
        raise UdrlError(f"export needs the 'convert' extra: pip install 'udrl-edge[convert]' ({exc})") from None
    quants = args.quant or [None]
    if args.out and len(quants) > 1:
        raise UdrlError("--out names one file: give a single --quant with it")
    results = [export(args.checkpoint, args.format, quant, out=args.out, force=args.force, verify=not args.no_verify)
               for quant in quants]
    if args.report:
        import dataclasses
        import json

        from udrl.files import write_atomic

        rows = [dataclasses.asdict(r) for r in results]
        write_atomic(args.report, json.dumps(rows, indent=2, default=str) + "\n")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a checkpoint or a udrl GGUF to GGUF, ONNX or Core ML (verified)")
    p.add_argument("checkpoint", help="checkpoint directory written by udrl train (e.g. runs/x/model), or a udrl "
                   "GGUF such as the bundled sdk/models/udrl-mini-q8_0.gguf (its weights dequantized)")
    p.add_argument("--format", required=True, help="gguf, onnx or coreml")
    p.add_argument("--quant", nargs="+", help="variant(s): gguf f32 f16 q8_0 q6_k q5_k_m q4_k_m; "
                   "onnx fp32 int8 fp16; coreml fp16 int8 palette4 stateful (default: the format's first)")
    p.add_argument("--out", help="output path (default: next to the source, named by variant)")
    p.add_argument("--force", action="store_true", help="replace an existing output")
    p.add_argument("--report", metavar="JSON", help="also write each artifact's size and verification figures")
    p.add_argument("--no-verify", action="store_true",
                   help="skip the checks against PyTorch (tokenizer, logits, greedy decoding); "
                        "the artifact is then written unverified")
    p.set_defaults(func=_cmd_export)
