"""`llmvis analyze` (generate and trace one prompt into a .llmvis bundle, no server) and
`llmvis show` (serve the app with a bundle opened).

Progress bars (tqdm) go to stderr; errors surface as LlmvisError, which llmvis.cli.main prints
as one `Error: ...` line with exit code 1.
"""
from __future__ import annotations

import sys
import webbrowser
from pathlib import Path

from llmvis import pyapi
from llmvis.cli.flags import add_bind_flags, add_history_flags, add_model_flags, stage_bar
from llmvis.cli.serve import cmd_serve, serve_defaults
from llmvis.core.errors import LlmvisError
from llmvis.keep.bundle import bundle_header
from llmvis.keep.library import import_bundle


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
    add_model_flags(an)
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
    add_model_flags(sh, model_default=None,
                    model_help="model to load instead of the one recorded in the bundle (it must be the same model)")
    add_bind_flags(sh)
    sh.add_argument("--open", action="store_true", help="also open the page in the default web browser")
    add_history_flags(sh)


def cmd_analyze(args) -> int:
    """Generate and trace one prompt, write the bundle (and optionally the share HTML)."""
    from tqdm import tqdm  # optional: only the CLI's progress bars need it

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
    data = pyapi.read_bundle_file(args.file)
    meta = bundle_header(data)  # an unreadable file fails here, before the model loads
    serve_args = serve_defaults()
    for key, value in vars(args).items():
        setattr(serve_args, key, value)
    serve_args.model = pyapi.bundle_model(meta, args.model)
    serve_args.progress = True

    def on_engine(engine) -> str:
        with stage_bar("Importing run"):
            run = import_bundle(engine, data)
        url_path = f"/?run={run.id}"
        if args.open:
            webbrowser.open(f"http://{args.host}:{args.port}{args.base_url}{url_path}")  # under --base-url
        return url_path

    return cmd_serve(serve_args, on_engine=on_engine)


COMMANDS = {"analyze": cmd_analyze, "show": cmd_show}
