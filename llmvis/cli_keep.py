"""CLI pieces for keeping runs: history flags for `serve`, and the `analyze` and `show` commands.

cli.py stays the entry point; it calls add_history_flags / add_commands and dispatches
COMMANDS. Progress bars (tqdm) go to stderr; errors surface as LlmvisError, which cli.main
prints as one `Error: ...` line with exit code 1.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from .errors import LlmvisError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {value}")
    return value


def add_history_flags(p: argparse.ArgumentParser) -> None:
    """--data-dir, --no-history, --history-budget-mb, --max-import-mb (serve and show)."""
    from .config import ServerConfig
    from .history import default_data_dir

    p.add_argument("--data-dir", type=Path, default=None,
                   help="folder of the run history (SQLite index + one .llmvis file per run); several servers "
                   f"may share it (default: $LLMVIS_DATA_DIR or {default_data_dir()})")
    p.add_argument("--no-history", action="store_true",
                   help="keep runs in memory only; nothing is written to disk and the history list is empty")
    p.add_argument("--history-budget-mb", type=_positive_int, default=ServerConfig.history_budget_bytes >> 20,
                   help="disk budget of the history folder in MiB; the oldest runs are evicted first "
                   "(default: %(default)s)")
    p.add_argument("--max-import-mb", type=_positive_int, default=ServerConfig.max_import_bytes >> 20,
                   help="largest .llmvis bundle POST /api/import accepts, in MiB; other requests keep "
                   "--max-body-kb (default: %(default)s)")


def history_settings(args) -> dict:
    """ServerConfig fields from the history flags (none when the command has no such flags)."""
    from .history import default_data_dir

    if not hasattr(args, "no_history"):
        return {}
    data_dir = None if args.no_history else (args.data_dir or default_data_dir())
    return {"data_dir": data_dir, "history_budget_bytes": args.history_budget_mb << 20,
            "max_import_bytes": args.max_import_mb << 20}


@contextlib.contextmanager
def stage_bar(desc: str, enabled: bool = True):
    """A one-step progress bar on stderr for work that reports no progress of its own."""
    if not enabled:
        yield
        return
    from tqdm import tqdm

    with tqdm(total=1, desc=desc, file=sys.stderr, bar_format="{desc}: {bar} {elapsed}", leave=True) as bar:
        yield
        bar.update(1)


def add_commands(sub) -> None:
    """The `analyze` and `show` sub-commands."""
    an = sub.add_parser(
        "analyze",
        help="generate and trace one prompt without the web server; write a .llmvis bundle",
        description="Load a model, generate from PROMPT with the given sampling settings, trace every "
        "token (probabilities, alternatives, entropy, hidden states of every layer) and write the run as "
        "one .llmvis bundle. Open it later with `llmvis show FILE`, the page's Import button, or "
        "llmvis.load(FILE) in Python. Shows progress on stderr.",
    )
    an.add_argument("prompt", help="the user message to answer")
    an.add_argument("--out", "-o", type=Path, required=True,
                    help="bundle file to write (e.g. run.llmvis); its folder must exist")
    an.add_argument("--model", default="default",
                    help="'default' (embedded SmolLM2-135M-Instruct), a local model folder or a .gguf file "
                    "(default: %(default)s)")
    an.add_argument("--system", default=None, help="optional system prompt")
    an.add_argument("--temperature", type=float, default=0.7,
                    help="sampling temperature, >= 0; 0 = greedy (default: %(default)s)")
    an.add_argument("--top-k", type=int, default=50, help="keep the k most likely tokens, 0 = off (default: %(default)s)")
    an.add_argument("--top-p", type=float, default=0.95,
                    help="nucleus sampling: keep the smallest set with this mass, in (0, 1] (default: %(default)s)")
    an.add_argument("--max-new-tokens", type=int, default=128,
                    help="stop after this many new tokens (or at end of sequence) (default: %(default)s)")
    an.add_argument("--seed", type=int, default=None,
                    help="random seed; the same inputs and seed give the same tokens (default: random, reported)")
    an.add_argument("--no-chat-template", action="store_true",
                    help="feed the prompt as plain text instead of through the tokenizer's chat template")
    an.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    an.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="weights dtype (default: %(default)s)")
    an.add_argument("--share-html", type=Path, default=None,
                    help="also write a self-contained HTML view of the run to this file")

    sh = sub.add_parser(
        "show",
        help="serve the web app with a .llmvis bundle opened",
        description="Start the web app (like `llmvis serve`) with the run in FILE imported, and print the "
        "page URL with that run selected (/?run=<id>). The model the bundle was made with is loaded "
        "unless --model says otherwise. The run is also added to the history unless --no-history.",
    )
    sh.add_argument("file", type=Path, help="a .llmvis bundle (from `llmvis analyze`, the page or run.save())")
    sh.add_argument("--model", default=None,
                    help="model to load instead of the one recorded in the bundle (it must be the same model)")
    sh.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    sh.add_argument("--port", type=int, default=5000, help="TCP port (default: %(default)s)")
    sh.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    sh.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="weights dtype (default: %(default)s)")
    sh.add_argument("--open", action="store_true", help="also open the page in the default web browser")
    add_history_flags(sh)


def cmd_analyze(args) -> int:
    """Generate and trace one prompt, write the bundle (and optionally the share HTML)."""
    from tqdm import tqdm

    from . import pyapi

    for target in (args.out, args.share_html):
        if target is not None and not target.expanduser().parent.is_dir():
            raise LlmvisError(f"cannot write {target}: folder {target.expanduser().parent} does not exist")
    if args.out.expanduser().is_dir():
        raise LlmvisError(f"--out is a folder, not a file: {args.out}")
    pyapi.parse_request(args.prompt, system=args.system, temperature=args.temperature, top_k=args.top_k,
                        top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)  # fail fast
    with stage_bar("Loading model"):
        pyapi.engine_for(args.model, args.device, args.dtype)  # cached: trace() below reuses it
    with tqdm(total=max(1, args.max_new_tokens), desc="Generating", unit="tok", file=sys.stderr) as bar:
        run = pyapi.trace(args.prompt, args.model, system=args.system, temperature=args.temperature,
                          top_k=args.top_k, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed,
                          use_chat_template=False if args.no_chat_template else None, device=args.device,
                          dtype=args.dtype, on_token=lambda tok: bar.update(1))
    path = run.save(args.out)
    print(f"wrote {path} ({run.run.num_tokens} tokens, finish: {run.finish_reason}, seed {run.params.get('seed')})")
    if args.share_html is not None:
        with stage_bar("Writing share HTML"):
            html_path = run.share_html(args.share_html)
        print(f"wrote {html_path}")
    return 0


def cmd_show(args) -> int:
    """Serve the app with the bundle imported; print the URL that opens it."""
    from .bundle import bundle_header
    from .cli import build_parser, cmd_serve
    from .library import import_bundle
    from .pyapi import bundle_model, read_bundle_file

    data = read_bundle_file(args.file)
    meta = bundle_header(data)  # an unreadable file fails here, before the model loads
    serve_args = build_parser().parse_args(["serve"])
    for key, value in vars(args).items():
        setattr(serve_args, key, value)
    serve_args.model = bundle_model(meta, args.model)
    serve_args.progress = True

    def on_engine(engine) -> str:
        with stage_bar("Importing run"):
            run = import_bundle(engine, data)
        url_path = f"/?run={run.id}"
        if args.open:
            import webbrowser

            webbrowser.open(f"http://{args.host}:{args.port}{url_path}")
        return url_path

    return cmd_serve(serve_args, on_engine=on_engine)


COMMANDS = {"analyze": cmd_analyze, "show": cmd_show}
