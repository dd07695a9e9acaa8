"""A run store bounded by bytes. Least recently used runs are evicted first."""
from __future__ import annotations

import ctypes
import ctypes.util
import threading
from collections import OrderedDict, deque

from llmvis.core.errors import RunExpired, RunNotFound


def _load_libc_function(name: str):
    """A glibc function (malloc_trim, mallopt), or None elsewhere."""
    lib = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _load_libc_function("malloc_trim")
_MALLOPT = _load_libc_function("mallopt")
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD_BYTES = 256 << 20


def tune_allocator() -> bool:
    """One malloc arena, and blocks under 256 MiB from the heap rather than fresh mmaps.

    Model work runs in the WSGI server's worker threads. glibc gives each thread its own arena,
    whose heaps are capped at 64 MiB, so every large tensor (a 38 MB chunk of attention rows, a
    32 MB block of logits) was a fresh mmap, page-faulted in and unmapped again. The Heads grid of
    a 4,096-token run took 1.26-1.7x as long in a worker thread as in the main thread; with this,
    1.0-1.08x (bench/bench_threads.py). The cost is a higher peak RSS on a 4,096-token run (2.42
    against 2.21 GB). Freed memory still goes back to the OS through release_freed_memory().
    Idempotent; does nothing off glibc. Returns whether it applied.
    """
    if _MALLOPT is None:
        return False
    return bool(_MALLOPT(M_ARENA_MAX, 1)) and bool(_MALLOPT(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_freed_memory() -> None:
    """Hand memory freed by evicted runs back to the OS, so RSS follows the store's budget.

    glibc keeps large freed blocks in its heap after its mmap threshold has grown; without this,
    RSS stays at the high-water mark of the largest run ever held.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class RunStore:
    """Keeps runs in memory while their total size stays within `budget_bytes`.

    Sizes are re-read with `resize` when a run grows (e.g. cached attention). The ids
    of evicted runs are remembered (up to `remember` of them) so that a request for one
    answers "run expired" rather than "unknown run_id".
    """

    def __init__(self, budget_bytes: int, remember: int = 100_000):
        self.budget = int(budget_bytes)
        self._runs: OrderedDict[str, object] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._expired: deque[str] = deque(maxlen=remember)
        self._expired_set: set[str] = set()
        self._lock = threading.RLock()

    @property
    def total_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def __len__(self) -> int:
        return len(self._runs)

    def __contains__(self, run_id: str) -> bool:
        return run_id in self._runs

    def put(self, run) -> None:
        with self._lock:
            self._runs[run.id] = run
            self._runs.move_to_end(run.id)
            self._sizes[run.id] = run.nbytes
            self._evict(keep=run.id)

    def get(self, run_id: str):
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                if run_id in self._expired_set:
                    raise RunExpired(f"run expired (evicted from the run store): {run_id[:64]}")
                raise RunNotFound(f"unknown run id: {run_id[:64]}")
            self._runs.move_to_end(run_id)
            return run

    def remove(self, run_id: str) -> None:
        """Forget a run (deleted by the user); a later get answers 'unknown run_id'."""
        with self._lock:
            self._runs.pop(run_id, None)
            self._sizes.pop(run_id, None)

    def resize(self, run) -> None:
        """Re-measure a run after it grew, then evict others if over budget."""
        with self._lock:
            if run.id in self._runs:
                self._sizes[run.id] = run.nbytes
                self._evict(keep=run.id)

    def _evict(self, keep: str) -> None:
        evicted = False
        while sum(self._sizes.values()) > self.budget and len(self._runs) > 1:
            evicted = True
            oldest = next(iter(self._runs))
            if oldest == keep:
                self._runs.move_to_end(oldest)
                oldest = next(iter(self._runs))
            self._runs.pop(oldest)
            self._sizes.pop(oldest)
            if len(self._expired) == self._expired.maxlen:
                self._expired_set.discard(self._expired[0])
            self._expired.append(oldest)
            self._expired_set.add(oldest)
        if evicted:
            release_freed_memory()
