"""Jobs: generations admitted to a bounded queue, and what the store keeps of a failed one.

A job is created by the Engine's prepare_* methods (after validation against the model and
the budgets) and leaves the queue when its run finishes, is cancelled or fails. Its id becomes
the run id, so a client can cancel it before the run exists.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

from llmvis.core.errors import Busy
from llmvis.core.tokens import Prompt
from llmvis.engine.decode import GenerationParams
from llmvis.engine.run import Run


@dataclass
class Job:
    """A generation admitted to the queue; its id becomes the run id."""

    id: str
    prompt: Prompt
    params: GenerationParams
    use_chat_template: bool
    cancel: threading.Event = field(default_factory=threading.Event)
    status: str = "queued"          # queued | running | done | cancelled | failed
    error: str | None = None
    kind: str = "generate"          # generate | fork | score
    forced: list[int] | None = None  # ids taken instead of the first samples (fork)
    parent: Run | None = None       # the run a fork branches from
    fork_position: int | None = None

    def __post_init__(self):
        if self.parent is not None:
            self.kind = "fork"


@dataclass
class FailedRun:
    """What the store keeps of a run whose generation raised."""

    id: str
    error: str
    status: str = "failed"
    nbytes: int = 256


@dataclass
class ReadJob:
    """A long view computed in steps (a logit-lens range) that its client named, can follow
    (`done` of `total` positions) and cancel between steps."""

    id: str
    kind: str
    run_id: str
    total: int
    done: int = 0
    status: str = "running"         # running | done | cancelled | failed
    cancel: threading.Event = field(default_factory=threading.Event)

    def as_dict(self) -> dict:
        return {"job_id": self.id, "kind": self.kind, "run_id": self.run_id, "done": self.done,
                "total": self.total, "status": self.status}


class JobQueue:
    """Jobs waiting or running, at most `capacity` of them; thread-safe."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def admit(self, job: Job) -> Job:
        """Add a job, or raise Busy (503 with Retry-After) when the queue is full."""
        with self._lock:
            if len(self._jobs) >= self.capacity:
                raise Busy(f"generation queue is full ({self.capacity} runs waiting or running); retry shortly")
            self._jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def finish(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)


class Admission:
    """At most `capacity` holders at once; more raise Busy at once (503 + Retry-After), never wait.

    Re-entrant per thread, so a view that computes another view inside it counts once.
    """

    def __init__(self, capacity: int, what: str):
        self.capacity = int(capacity)
        self.what = what
        self._held = 0
        self._lock = threading.Lock()
        self._mine = threading.local()

    @contextlib.contextmanager
    def slot(self):
        depth = getattr(self._mine, "depth", 0)
        if depth == 0:
            with self._lock:
                if self._held >= self.capacity:
                    raise Busy(f"{self.what}: {self.capacity} are being computed; retry shortly")
                self._held += 1
        self._mine.depth = depth + 1
        try:
            yield
        finally:
            self._mine.depth = depth
            if depth == 0:
                with self._lock:
                    self._held -= 1

    def __len__(self) -> int:
        with self._lock:
            return self._held


def inherit_parent_steps(result, parent: Run, start: int, stop: int) -> None:
    """A fork re-reads the parent's tokens [start, stop) as its prefix; give them the parent's
    sampled-step statistics (identical model and prefix, so identical distributions)."""
    if stop <= start:
        return
    mine, theirs = result.stats, parent.result.stats
    for name in mine.__dataclass_fields__:
        getattr(mine, name)[start:stop] = getattr(theirs, name)[start:stop]
