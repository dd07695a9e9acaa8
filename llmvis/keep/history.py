"""Run history on disk: SQLite for the metadata, one `.llmvis` bundle file per run.

Layout of the data folder:
    history.sqlite      one row per run (id, title, model, sizes, times); WAL journal
    runs/<id>.llmvis    the run's bundle (see bundle.py), written atomically

Several processes may share one folder. SQLite runs in WAL mode with a busy timeout, every
write is one `BEGIN IMMEDIATE` transaction (so eviction decisions are serialised across
processes), and bundle files are written to a temporary file in the same folder, fsynced and
moved into place with os.replace, so a reader sees either no file or a whole one. Files are
unlinked only after the transaction that dropped their row has committed.

The folder has a byte budget: after each save the oldest runs (by creation time) are evicted
until the total fits; the run just saved is never evicted.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from llmvis.core.errors import HistoryUnavailable, LlmvisError, RunNotFound
from llmvis.keep.bundle import SUFFIX, check_run_id, valid_run_id

BUSY_TIMEOUT_S = 30.0
TITLE_MAX = 200
ORPHAN_AGE_S = 600  # files without a row, older than this, are removed when a History opens

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    title         TEXT NOT NULL,
    created       REAL NOT NULL,   -- when the run was generated (unix seconds)
    saved         REAL NOT NULL,   -- when it entered this history
    model         TEXT NOT NULL,
    kind          TEXT NOT NULL DEFAULT 'generate',
    num_tokens    INTEGER NOT NULL,
    num_prompt    INTEGER NOT NULL,
    finish_reason TEXT NOT NULL,
    nbytes        INTEGER NOT NULL, -- size of the bundle file
    parent_id     TEXT,            -- a fork's parent run
    fork_position INTEGER          -- where a fork branches from its parent
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
"""
COLUMNS = ("id", "title", "created", "saved", "model", "kind", "num_tokens", "num_prompt", "finish_reason", "nbytes",
           "parent_id", "fork_position")
ADDED_COLUMNS = {"parent_id": "TEXT", "fork_position": "INTEGER"}  # added to folders made before them


def default_data_dir() -> Path:
    """Where history lives: $LLMVIS_DATA_DIR, else $XDG_DATA_HOME/llmvis, else ~/.local/share/llmvis."""
    env = os.environ.get("LLMVIS_DATA_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "llmvis"


def atomic_write(path: Path, data: bytes) -> None:
    """Write data to path so that readers see the old file, or the whole new one, never a part."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class History:
    """The run history in `folder`, bounded by `budget_bytes` of bundle files."""

    def __init__(self, folder: Path, budget_bytes: int):
        self.folder = Path(folder).expanduser()
        self.runs_dir = self.folder / "runs"
        self.budget = int(budget_bytes)
        self.db_path = self.folder / "history.sqlite"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.runs_dir, prefix=".probe-", suffix=".tmp")
            probe.close()  # a read-only or full folder fails here, at start, not on the first save
            with self._connect() as con:
                self._enable_wal(con)
                con.executescript(SCHEMA)
                have = {row[1] for row in con.execute("PRAGMA table_info(runs)")}
                for name, kind in ADDED_COLUMNS.items():
                    if name not in have:  # an older folder: add the column, old rows read NULL
                        try:
                            con.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                        except sqlite3.OperationalError as exc:  # another process added it just now
                            if "duplicate column" not in str(exc):
                                raise
            self._sweep_orphans()
        except (OSError, HistoryUnavailable) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise LlmvisError(f"cannot use data folder {self.folder}: {reason} (use --data-dir or --no-history)") from None

    @staticmethod
    def _enable_wal(con) -> None:
        """Switch the database to WAL (persistent, once per file).

        Changing the journal mode answers "database is locked" at once, without waiting on the
        busy timeout, when another process is opening the same new file; so retry until then.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                if str(con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    con.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # ---- plumbing ----------------------------------------------------------------
    @contextlib.contextmanager
    def _connect(self):
        """A connection; SQLite failures (read-only, full, corrupt, gone) become HistoryUnavailable (503)."""
        try:
            con = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"history: cannot open {self.db_path.name}: {exc}") from None
        try:
            con.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            con.execute("PRAGMA synchronous=NORMAL")
            yield con
        except sqlite3.Error as exc:
            raise HistoryUnavailable(f"history: the data folder cannot be used now ({str(exc)[:120]})") from None
        finally:
            con.close()

    @contextlib.contextmanager
    def _write(self):
        """One write transaction, taken up front so concurrent writers queue instead of deadlocking."""
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    def path_of(self, run_id: str) -> Path:
        """The bundle file of a run. run_id must already be validated (hex only)."""
        return self.runs_dir / f"{check_run_id(run_id)}{SUFFIX}"

    def _unlink(self, run_ids) -> None:
        for run_id in run_ids:
            try:
                self.path_of(run_id).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # the row is gone; the sweep at the next start removes the file
                raise HistoryUnavailable(f"history: cannot remove run {run_id}'s file: {exc.strerror or exc}") from None

    def _sweep_orphans(self) -> None:
        """Remove stale temp files and bundle files whose row is gone (a crash between the two)."""
        now = time.time()
        with self._connect() as con:
            known = {row[0] for row in con.execute("SELECT id FROM runs")}
        for path in self.runs_dir.iterdir():
            try:
                old = now - path.stat().st_mtime > ORPHAN_AGE_S
            except FileNotFoundError:
                continue
            orphan = path.name.endswith(".tmp") or (path.suffix == ".llmvis" and path.stem not in known)
            if old and orphan:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

    # ---- operations --------------------------------------------------------------
    def save(self, row: dict, data: bytes) -> list[str]:
        """Store one run (row: the COLUMNS but saved/nbytes; data: its bundle); returns evicted ids."""
        run_id = row["id"]
        path = self.path_of(run_id)
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise HistoryUnavailable(f"history: cannot write {path.name}: {exc.strerror or exc}") from None
        values = {"parent_id": None, "fork_position": None} | dict(row, title=str(row["title"])[:TITLE_MAX],
                                                                  saved=time.time(), nbytes=len(data))
        evicted: list[str] = []
        with self._write() as con:
            con.execute(
                f"INSERT OR REPLACE INTO runs ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})",
                [values[c] for c in COLUMNS],
            )
            total = con.execute("SELECT COALESCE(SUM(nbytes), 0) FROM runs").fetchone()[0]
            for old_id, size in con.execute(
                "SELECT id, nbytes FROM runs WHERE id != ? ORDER BY created, saved", (run_id,)
            ).fetchall():
                if total <= self.budget:
                    break
                con.execute("DELETE FROM runs WHERE id = ?", (old_id,))
                total -= size
                evicted.append(old_id)
        self._unlink(evicted)
        return evicted

    def read(self, run_id: str) -> bytes | None:
        """A run's bundle bytes, or None when this history does not hold it."""
        if self.get(run_id) is None:
            return None
        try:
            return self.path_of(run_id).read_bytes()
        except FileNotFoundError:  # evicted or deleted by another process just now
            return None
        except OSError as exc:
            raise HistoryUnavailable(f"history: cannot read run {run_id}: {exc.strerror or exc}") from None

    def get(self, run_id: str) -> dict | None:
        if not valid_run_id(run_id):
            return None
        with self._connect() as con:
            row = con.execute(f"SELECT {', '.join(COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        return dict(zip(COLUMNS, row)) if row else None

    def list(self, limit: int = 100, offset: int = 0) -> tuple[list[dict], int, int]:
        """(rows newest first, total count, total bytes)."""
        with self._connect() as con:
            rows = con.execute(
                f"SELECT {', '.join(COLUMNS)} FROM runs ORDER BY created DESC, saved DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            count, total = con.execute("SELECT COUNT(*), COALESCE(SUM(nbytes), 0) FROM runs").fetchone()
        return [dict(zip(COLUMNS, r)) for r in rows], int(count), int(total)

    def rename(self, run_id: str, title: str) -> dict:
        with self._write() as con:
            cur = con.execute("UPDATE runs SET title = ? WHERE id = ?", (title[:TITLE_MAX], run_id))
            if cur.rowcount == 0:
                raise RunNotFound(f"run_id: no run {run_id} in the history")
        return self.get(run_id)

    def delete(self, run_id: str) -> None:
        with self._write() as con:
            cur = con.execute("DELETE FROM runs WHERE id = ?", (run_id,))
            if cur.rowcount == 0:
                raise RunNotFound(f"run_id: no run {run_id} in the history")
        self._unlink([run_id])

    def total_bytes(self) -> int:
        with self._connect() as con:
            return int(con.execute("SELECT COALESCE(SUM(nbytes), 0) FROM runs").fetchone()[0])

    def check(self) -> str:
        """SQLite's own integrity check ('ok' when sound)."""
        with self._connect() as con:
            return con.execute("PRAGMA integrity_check").fetchone()[0]
