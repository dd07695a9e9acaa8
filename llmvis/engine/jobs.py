"""Jobs: generations admitted to a bounded queue, and what the store keeps of a failed one.

A job is created by the Engine's prepare_* methods (after validation against the model and
the budgets) and leaves the queue when its run finishes, is cancelled or fails. Its id becomes
the run id, so a client can cancel it before the run exists.
"""
from __future__ import annotations

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


def inherit_parent_steps(result, parent: Run, start: int, stop: int) -> None:
    """A fork re-reads the parent's tokens [start, stop) as its prefix; give them the parent's
    sampled-step statistics (identical model and prefix, so identical distributions)."""
    if stop <= start:
        return
    mine, theirs = result.stats, parent.result.stats
    for name in mine.__dataclass_fields__:
        getattr(mine, name)[start:stop] = getattr(theirs, name)[start:stop]
