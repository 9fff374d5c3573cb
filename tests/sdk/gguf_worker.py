"""Loads and uses each GGUF named on standard input, one per line, printing one JSON line per file
before (``start``) and after (``end``, with the outcome). Run as a subprocess by the hardening
tests, so that a death by signal is seen and pinned to the file that caused it."""

import json
import sys

import udrl


def main() -> None:
    for line in sys.stdin:
        path = line.strip()
        print(json.dumps({"start": path}), flush=True)
        try:
            with udrl.load(path, threads=1) as model:
                text = model.generate("poster for a jazz night", task=model.commands.tasks[0], max_tokens=6).text
            outcome = {"result": "ok", "text": text}
        except udrl.UdrlError as exc:
            outcome = {"result": type(exc).__name__, "message": str(exc)[:300]}
        except Exception as exc:  # noqa: BLE001 - the test reports any stray exception type
            outcome = {"result": "stray " + type(exc).__name__, "message": str(exc)[:300]}
        print(json.dumps({"end": path, **outcome}), flush=True)


if __name__ == "__main__":
    main()
