"""The `llmvis` command line: serve, analyze, show, score, explain. Errors print `Error: ...` and exit 1, never
a traceback. Shared flags live in llmvis.cli.flags, each command in its own module."""
from __future__ import annotations

import argparse
import logging
import os
import sys

# Read by huggingface_hub and transformers when they are first imported (by the imports below):
# nothing is ever downloaded, and the CLI shows their errors only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from llmvis.cli import batch, explain, keep, serve  # noqa: E402  (after the environment above)
from llmvis.core.errors import LlmvisError  # noqa: E402

COMMANDS = {"serve": serve.cmd_serve, **keep.COMMANDS, "score": batch.cmd_score, "explain": explain.cmd_explain}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmvis",
        description="llmvis: see inside a causal language model while it generates "
        "(attention, token probabilities, entropy, hidden states) in a local web app.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_command(sub)
    keep.add_commands(sub)  # analyze, show
    batch.add_command(sub)  # score
    explain.add_command(sub)  # explain
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except LlmvisError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
