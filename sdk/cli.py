"""The ``udrl`` command line. Each subcommand parses arguments and calls one library function.

Subcommands that live outside the SDK (``udrl train`` in the trainer, later ``udrl export`` in the
converters) register through the ``udrl.cli`` entry-point group, so the SDK never imports them;
a subcommand whose extra is not installed reports which one to install.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from . import __version__
from .errors import UdrlError
from .artifacts import read_manifest


def artifact_size(path: Path) -> int:
    """Bytes on disk of an artifact file or directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def info(path: str) -> dict:
    """The manifest and size of an artifact, as a dict."""
    p = Path(path)
    manifest = read_manifest(p)
    return {"path": str(p), "size_bytes": artifact_size(p), "manifest": manifest.to_dict()}


def _print_info(report: dict) -> None:
    m = report["manifest"]
    size = report["size_bytes"]
    print(f"artifact      {report['path']}")
    print(f"size          {size / 1e6:.2f} MB ({size} bytes)")
    print(f"format        {m['format']} v{m['version']}")
    print(f"tasks         {', '.join(m['tasks'])}")
    print(f"length        {m['length']['min']} to {m['length']['max']} words")
    edges = ", ".join(f"{e:.3f}" for e in m["reward"]["edges"])
    levels = len(m["reward"]["edges"]) + 1
    print(f"reward        {levels} levels ({m['reward']['metric']}; edges {edges or 'none'})")
    print(f"conditioning  task + {', '.join(m['conditioning']) or 'nothing else'}")
    print(f"template      {m['template']}")
    if m["default_length"]:
        print("default len   " + ", ".join(f"{k}={v}" for k, v in m["default_length"].items()))
    for key in ("data_hash", "parent", "quantization"):
        if m.get(key):
            print(f"{key:<13} {m[key]}")
    for key, value in m["model"].items():
        print(f"{'model.' + key:<13} {value}")


def _cmd_info(args: argparse.Namespace) -> int:
    report = info(args.path)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_info(report)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="udrl", description="Command-conditioned prompt models.")
    parser.add_argument("--version", action="version", version=f"udrl-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("info", help="print an artifact's manifest and size")
    p.add_argument("path", help="checkpoint directory, .gguf, .onnx or .mlpackage")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_cmd_info)
    for ep in sorted(entry_points(group="udrl.cli"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UdrlError as exc:
        print(f"udrl {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"udrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
