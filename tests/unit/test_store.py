"""The run store is bounded by bytes and says 'run expired' for evicted runs."""
from dataclasses import dataclass

import pytest

from llmvis.core.errors import RunExpired, RunNotFound
from llmvis.engine.store import RunStore


@dataclass
class FakeSized:
    """Only the two attributes the store reads; runs themselves are tested via the API."""

    id: str
    nbytes: int


def test_evicts_least_recently_used_over_budget():
    store = RunStore(budget_bytes=100)
    a, b, c = FakeSized("a", 40), FakeSized("b", 40), FakeSized("c", 40)
    store.put(a)
    store.put(b)
    store.get("a")  # a is now more recent than b
    store.put(c)
    assert "b" not in store and "a" in store and "c" in store
    assert store.total_bytes == 80
    with pytest.raises(RunExpired, match="run expired"):
        store.get("b")
    with pytest.raises(RunNotFound, match="unknown run id"):
        store.get("zzz")


def test_resize_evicts_others_but_keeps_the_growing_run():
    store = RunStore(budget_bytes=100)
    a, b = FakeSized("a", 30), FakeSized("b", 30)
    store.put(a)
    store.put(b)
    a.nbytes = 90
    store.resize(a)
    assert "a" in store and "b" not in store


def test_tune_allocator_applies_on_glibc_and_is_idempotent():
    import platform

    from llmvis.engine.store import tune_allocator

    first, second = tune_allocator(), tune_allocator()
    assert first == second
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert first is True
