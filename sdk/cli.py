"""The ``udrl`` command line. Each subcommand parses arguments and calls one library function.

Subcommands that live outside the SDK (``udrl train`` in the trainer, ``udrl export`` in the
converters, ``udrl bench``) register through the ``udrl.cli`` entry-point group, so the SDK never
imports them; a subcommand whose extra is not installed reports which one to install.

User input never ends in a traceback: an error prints one line on stderr and exits with a status
per kind (each error's ``exit_code``): 1 any other udrl error (an unreadable --file, --threads out of range), 2 usage, 3 a request or input the model does not
accept, 4 a corrupted artifact or manifest, 5 a runtime missing or unable to run it, 6 a training
configuration or dataset, 130 interrupted, 141 standard output closed by its reader.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path

from . import __version__, errors
from .artifacts import artifact_size, read_manifest
from .errors import UdrlError
from .generate import DEFAULTS, GenerationOptions
from .manifest import describe_focus


def info(path: str, full: bool = False) -> dict:
    """The manifest and size of an artifact, as a dict. Unless ``full``, the manifest's spelling list
    (`spelling.words`, about 160,000 words) is given as its count, ``spelling.word_count``."""
    p = Path(path)
    manifest = read_manifest(p).to_dict()
    spelling = manifest.get("spelling", {})
    if not full and "words" in spelling:
        words = spelling.pop("words")
        spelling["word_count"] = len(words.split())
    return {"path": str(p), "size_bytes": artifact_size(p), "manifest": manifest}


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
    focus = m["focus"]["bias"]
    rule = "split words too" if m["focus"].get("split_words") else "one-token words only"
    if m["focus"].get("push_function_words"):
        rule += ", function words pushed down"
    print("query focus   " + ("; ".join(f"{t} {describe_focus(b)}" for t, b in focus.items()) + f" ({rule})"
                              if any(focus.values()) else "off"))
    ends = m.get("length_guard", {}).get("end_stopwords", [])
    print(f"never ends on {len(ends)} words ({', '.join(ends[:6])}{', ...' if len(ends) > 6 else ''})" if ends
          else "never ends on (no end words: an older manifest)")
    words = m.get("spelling", {}).get("word_count", 0)
    print(f"whole words   {words:,} words or the request's" if words
          else "whole words   off (no spelling words in the manifest)")
    title = m.get("case", {}).get("title", [])
    print(f"title case    {', '.join(title)}" if title else "title case    none (every task as the model writes it)")
    print(f"conditioning  task + {', '.join(m['conditioning']) or 'nothing else'}")
    print(f"template      {m['template']!r}, output prefix {m.get('output_prefix', '')!r}")
    if m["default_length"]:
        print("default len   " + ", ".join(f"{k}={v}" for k, v in m["default_length"].items()))
    for key in ("data_hash", "parent", "quantization"):
        if m.get(key):
            print(f"{key:<13} {m[key]}")
    for key, value in m["model"].items():
        print(f"{'model.' + key:<13} {value}")


def _cmd_info(args: argparse.Namespace) -> int:
    from .model import default_model_path

    report = info(args.path or str(default_model_path()), full=args.full)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_info(report)
    return 0


def _source_name(args: argparse.Namespace) -> str:
    return "standard input" if args.file == "-" else str(args.file)


def _read_queries(args: argparse.Namespace) -> list[tuple[int, str]]:
    """(line number, query) pairs: the query argument (line 0) or every non-blank line of --file."""
    if args.query is not None and args.file:
        raise UdrlError("give a query or --file, not both")
    if args.query is not None:
        return [(0, args.query)]
    if not args.file:
        raise UdrlError("give a query, or --file FILE (one query per line; '-' for standard input)")
    where = _source_name(args)
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except IsADirectoryError:
        raise UdrlError(f"--file {args.file} is a directory; give a text file with one query per line") from None
    except OSError as exc:
        raise UdrlError(f"cannot read --file {args.file}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise UdrlError(f"line {line} of {where} is not UTF-8 text (byte {data[exc.start]:#04x}); "
                        "save the file as UTF-8") from None
    queries = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not queries:
        raise UdrlError(f"no queries in {where}")
    return queries


def _cmd_generate(args: argparse.Namespace) -> int:
    from .model import Request, load

    lines = _read_queries(args)
    queries = [q for _, q in lines]
    switches = ("length_guard", "whole_words")  # on by default: the flags turn them off
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(GenerationOptions) if f.name not in switches}
    options.update(length_guard=not args.no_length_guard, whole_words=not args.no_whole_words)
    with load(args.model, backend=args.backend, threads=args.threads) as model:
        if args.stream and len(queries) == 1 and not args.json:
            for piece in model.stream(queries[0], task=args.task, length=args.length, reward=args.reward, **options):
                print(piece, end="", flush=True)
            print()
            return 0
        requests = [Request(q, args.task, args.length, args.reward) for q in queries]
        try:
            results = model.generate_batch(requests, **options)
        except errors.CommandError as exc:
            if exc.index is None:
                raise
            message = str(exc).removeprefix(f"request {exc.index}: ")
            where = f"line {lines[exc.index][0]} of {_source_name(args)}: " if args.file else ""
            raise errors.CommandError(where + message) from None
        for result in results:
            if args.json:  # to_dict() holds the command as a dict too
                print(json.dumps(result.to_dict(), ensure_ascii=False))
            else:
                print(result.text)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig, serve

    if args.max_body_bytes < 1024:
        raise UdrlError(f"--max-body-bytes must be at least 1024, got {args.max_body_bytes}")
    if args.keep_alive < 1:
        raise UdrlError(f"--keep-alive is seconds an idle connection stays open, at least 1; got {args.keep_alive}")
    config = ServerConfig(model=args.model, host=args.host, port=args.port, api_key=args.api_key or None,
                          threads=args.threads, parallel=args.parallel, max_body_bytes=args.max_body_bytes,
                          keep_alive_s=args.keep_alive, log_level=args.log_level)
    serve(config, on_ready=lambda: print(f"udrl serve: http://{args.host}:{args.port}/v1 (Ctrl-C or SIGTERM to stop)",
                                         file=sys.stderr, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="udrl", description="Command-conditioned prompt models.")
    parser.add_argument("--version", action="version", version=f"udrl-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    g = sub.add_parser("generate", help="write a prompt for a design request")
    g.add_argument("query", nargs="?", help="the design request (or use --file)")
    g.add_argument("--file", metavar="FILE", help="queries, one per line ('-': standard input); batched")
    g.add_argument("--task", default="image", help="image, search, headline, tags (see `udrl info`)")
    g.add_argument("--length", type=int, help="target length in words (default: the task's usual)")
    g.add_argument("--reward", type=int, help="relevance level, 0 lowest (default: the highest)")
    # One flag per GenerationOptions field, its default from there (a test checks they stay one set).
    g.add_argument("--temperature", type=float, default=DEFAULTS.temperature, help="0 is greedy (default)")
    g.add_argument("--top-k", type=int, default=DEFAULTS.top_k, help="0: off (default)")
    g.add_argument("--top-p", type=float, default=DEFAULTS.top_p)
    g.add_argument("--seed", type=int, default=DEFAULTS.seed)
    g.add_argument("--max-tokens", type=int, default=DEFAULTS.max_tokens)
    g.add_argument("--no-length-guard", action="store_true", help="let the model end or run on freely")
    g.add_argument("--no-whole-words", action="store_true",
                   help="let the model spell words that neither the model's word list nor the request holds")
    g.add_argument("--no-repeat-ngram", type=int, default=DEFAULTS.no_repeat_ngram, metavar="N",
                   help=f"forbid repeating any N generated tokens in a row, a word twice in a row and a content "
                        f"word three times (default {DEFAULTS.no_repeat_ngram}; 0: off)")
    g.add_argument("--focus", type=float, default=DEFAULTS.focus, metavar="X",
                   help="query focus bonus for the request's words the output lacks "
                        "(default: the model's, see `udrl info`; 0: off)")
    g.add_argument("--model", help="artifact path (default: the bundled model)")
    g.add_argument("--backend", default="auto", help="auto, llama, onnx, torch, coreml")
    g.add_argument("--threads", type=int)
    g.add_argument("--json", action="store_true", help="one JSON object per result, with timings")
    g.add_argument("--stream", action="store_true", help="print text as it is generated")
    g.set_defaults(func=_cmd_generate)

    s = sub.add_parser("serve", help="serve a model over HTTP on this machine (OpenAI-compatible; "
                                     "needs the server extra)")
    s.add_argument("--model", help="artifact path (default: the bundled model)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--api-key", default=os.environ.get("UDRL_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1 requests (default: $UDRL_API_KEY, else none)")
    s.add_argument("--threads", type=int)
    s.add_argument("--parallel", type=int, default=8, help="requests decoded together (default 8)")
    s.add_argument("--max-body-bytes", type=int, default=64 * 1024, help="larger request bodies get 413")
    s.add_argument("--keep-alive", type=int, default=75, help="seconds an idle connection stays open (default 75: "
                   "longer than clients pool one, so that none is reused as the server closes it)")
    s.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=_cmd_serve)

    p = sub.add_parser("info", help="print an artifact's manifest and size")
    p.add_argument("path", nargs="?", help="checkpoint directory, .gguf, .onnx or .mlpackage "
                   "(default: the bundled model)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--full", action="store_true", help="with --json: the spelling list's words too, not only "
                   "their count (about 1.3 MB)")
    p.set_defaults(func=_cmd_info)
    for ep in sorted(entry_points(group="udrl.cli"), key=lambda e: e.name):
        ep.load()(sub)
    return parser


def exit_code(exc: UdrlError) -> int:
    """The documented exit status for an error kind (each kind's ``exit_code``; see the module
    docstring). Argparse's usage errors exit 2."""
    return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at interpreter exit
        return status
    except UdrlError as exc:
        # One line: a multi-line message (a manifest's list of problems) is joined with "; ".
        message = "; ".join(re.sub(r"^\s*-\s+", "", line) for line in str(exc).splitlines() if line.strip())
        print(f"udrl {args.command}: error: {message}", file=sys.stderr)
        return exit_code(exc)
    except BrokenPipeError:
        # The reader went away (`udrl generate --json | head -c 5`): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print(f"udrl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
