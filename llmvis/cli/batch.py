"""`llmvis score FILE`: score many texts with one model load, one JSON line of results per text,
resumable (texts already in --out are skipped), with a progress bar on stderr."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from llmvis import pyapi
from llmvis.cli.flags import add_model_flags, positive_int, stage_bar
from llmvis.core.errors import LlmvisError
from llmvis.keep.history import default_data_dir
from llmvis.keep.library import attach_history


def add_command(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score many texts (a .jsonl or .txt file) with one model load; write one JSON line per text",
        description="Score every text of FILE without generating: per text, perplexity, mean NLL, mean "
        "prediction entropy, GLTR buckets (rank within 10 / 100 / 1000 / beyond) and the most surprising "
        "tokens. FILE is .jsonl (one object per line, the text in --field) or .txt (one text per non-empty "
        "line). Results go to --out, one JSON line per text with its index; running again skips the texts "
        "already there (resumable). Progress on stderr.",
    )
    p.add_argument("file", type=Path, help="a .jsonl or .txt file of texts")
    p.add_argument("--field", default="text", help="the text field of each .jsonl object (default: %(default)s)")
    p.add_argument("--out", "-o", type=Path, default=None,
                   help="results file, JSON lines (default: FILE with .scores.jsonl)")
    p.add_argument("--keep", action="store_true",
                   help="also save each scored text as a run in the history (--data-dir), to open in the web app")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"history folder for --keep (default: $LLMVIS_DATA_DIR or {default_data_dir()})")
    p.add_argument("--surprising", type=positive_int, default=5,
                   help="how many of the least likely tokens to list per text (default: %(default)s)")
    p.add_argument("--chat-template", action="store_true",
                   help="wrap each text as a user message in the tokenizer's chat template (default: plain text)")
    add_model_flags(p)


def read_texts(path: Path, field: str) -> list[str]:
    """The texts of a .jsonl or .txt file; LlmvisError naming the line of a bad entry."""
    path = path.expanduser()
    if not path.is_file():
        raise LlmvisError(f"no such file: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".txt"):
        raise LlmvisError(f"{path.name}: expected a .jsonl or .txt file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmvisError(f"cannot read {path}: {exc}") from None
    texts = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if suffix == ".txt":
            texts.append(line)
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LlmvisError(f"{path.name}:{number}: not JSON ({exc.msg})") from None
        value = obj.get(field) if isinstance(obj, dict) else None
        if not isinstance(value, str) or not value.strip():
            raise LlmvisError(f"{path.name}:{number}: field {field!r} must be a non-empty string")
        texts.append(value)
    if not texts:
        raise LlmvisError(f"{path.name}: holds no texts")
    return texts


def done_indices(out: Path) -> set[int]:
    """Indices already written to --out (a line cut short by an interruption is ignored)."""
    if not out.is_file():
        return set()
    done = set()
    for line in out.read_text(encoding="utf-8").splitlines():
        try:
            done.add(int(json.loads(line)["index"]))
        except (ValueError, KeyError, TypeError):
            continue
    return done


def cmd_score(args) -> int:
    """Score every text of the file not yet in --out; append one JSON line per text."""
    from tqdm import tqdm  # optional: only the CLI's progress bars need it

    texts = read_texts(args.file, args.field)
    out = (args.out or args.file.with_suffix(".scores.jsonl")).expanduser()
    if not out.parent.is_dir():
        raise LlmvisError(f"cannot write {out}: folder {out.parent} does not exist")
    done = done_indices(out)
    todo = [i for i in range(len(texts)) if i not in done]
    with stage_bar("Loading model"):
        eng = pyapi.engine_for(args.model, args.device, args.dtype)
    if args.keep and eng.history is None:
        eng.config.data_dir = args.data_dir or default_data_dir()
        attach_history(eng)  # every scored run is saved as it is stored
    with open(out, "a", encoding="utf-8") as fh, \
            tqdm(total=len(texts), initial=len(done), desc="Scoring", unit="text", file=sys.stderr) as bar:
        for i in todo:
            row = pyapi.score_many([texts[i]], args.model, use_chat_template=args.chat_template,
                                   surprising=args.surprising, device=args.device, dtype=args.dtype,
                                   keep=args.keep, as_dataframe=False)[0]
            row["index"] = i
            fh.write(json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n")
            fh.flush()
            bar.update(1)
    print(f"wrote {out} ({len(todo)} scored, {len(done)} already there, {len(texts)} texts)")
    return 0
