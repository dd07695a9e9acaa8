"""POST /api/generate/stream (SSE), POST /api/cancel, injected faults and the bounded queue on the
tiny model. A fault hook that waits on an event holds a run mid-generation, so cancellation is
tested deterministically however fast the tiny model is."""
import threading

import pytest
import torch

from .support import get, ok, read_events, wait_idle

BODY = {"prompt": "Tell a long story.", "temperature": 0, "max_new_tokens": 20}


@pytest.fixture()
def fresh(make_server):
    """A server of its own per test (fault hooks and queue state never leak)."""
    return make_server()


class Gate:
    """A fault hook that lets `steps` decode steps pass, then waits until released."""

    def __init__(self, steps: int):
        self.steps, self.seen = steps, []
        self.reached, self.release = threading.Event(), threading.Event()

    def __call__(self, position):
        self.seen.append(position)
        if len(self.seen) == self.steps:
            self.reached.set()
            assert self.release.wait(20), "the test never released the gate"


def test_stream_sends_start_prompt_tokens_done(fresh, ref):
    eng, client = fresh
    resp = client.post("/api/generate/stream", json=BODY | {"max_new_tokens": 8}, buffered=False)
    assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    events = list(read_events(resp))
    kinds = [k for k, _ in events]
    assert kinds == ["start", "prompt"] + ["token"] * 8 + ["done"]
    start, prompt, done = events[0][1], events[1][1], events[-1][1]
    assert start["run_id"] == done["run_id"] and start["model"]["name"] == "tiny-llama"
    assert start["num_prompt_tokens"] == done["num_prompt_tokens"]
    assert {k: start["params"][k] for k in ("temperature", "top_k", "top_p", "max_new_tokens")} == \
        {"temperature": 0.0, "top_k": 50, "top_p": 0.95, "max_new_tokens": 8}
    p = done["num_prompt_tokens"]
    assert prompt["tokens"] == done["tokens"][:p]  # the prompt with its teacher-forced statistics
    streamed = [d for k, d in events if k == "token"]
    assert [t["position"] for t in streamed] == list(range(p, p + 8))
    for live, final in zip(streamed, done["tokens"][p:]):
        assert live == final
    assert done["finish_reason"] == "length" and done["status"] == "done"
    # the streamed run is the stored run, and its numbers are the model's
    assert get(client, "/api/run", run_id=done["run_id"])["tokens"] == done["tokens"]
    ids = [t["id"] for t in done["tokens"]]
    for t in streamed:
        assert t["prob"] == pytest.approx(ref.position_stats(ids, t["position"])["prob"], rel=1e-4, abs=1e-7)
    wait_idle(eng)


def test_stream_and_plain_generate_agree(fresh):
    _, client = fresh
    body = BODY | {"temperature": 0.9, "seed": 3, "max_new_tokens": 6}
    plain = ok(client.post("/api/generate", json=body))
    done = list(read_events(client.post("/api/generate/stream", json=body, buffered=False)))[-1][1]
    assert [t["id"] for t in done["tokens"]] == [t["id"] for t in plain["tokens"]]
    assert [t["sample_prob"] for t in done["tokens"]] == [t["sample_prob"] for t in plain["tokens"]]


def test_explicit_cancel_stops_within_one_step(fresh):
    eng, client = fresh
    gate = Gate(3)
    eng.fault_hook = gate
    events = read_events(client.post("/api/generate/stream", json=BODY, buffered=False))
    kind, start = next(events)
    assert kind == "start"
    assert gate.reached.wait(20)
    answer = ok(client.post("/api/cancel", json={"run_id": start["run_id"]}))
    assert answer == {"run_id": start["run_id"], "cancelled": True, "status": "running"}
    gate.release.set()
    rest = list(events)
    kind, done = rest[-1]
    assert kind == "done" and done["finish_reason"] == "cancelled" and done["status"] == "cancelled"
    assert done["num_tokens"] - done["num_prompt_tokens"] == 3 == len(gate.seen)  # not one step more
    assert [k for k, _ in rest].count("token") == 3
    wait_idle(eng)
    again = ok(client.post("/api/cancel", json={"run_id": start["run_id"]}))
    assert again == {"run_id": start["run_id"], "cancelled": False, "status": "cancelled"}
    assert get(client, "/api/run", run_id=start["run_id"])["status"] == "cancelled"
    # a cancelled run is a run: its views work
    assert get(client, "/api/attention", run_id=start["run_id"], layer=0)["num_tokens"] == done["num_tokens"]


def test_cancel_of_a_finished_run_changes_nothing(client, greedy_run):
    answer = ok(client.post("/api/cancel", json={"run_id": greedy_run["run_id"]}))
    assert answer == {"run_id": greedy_run["run_id"], "cancelled": False, "status": "done"}
    assert get(client, "/api/run", run_id=greedy_run["run_id"])["status"] == "done"


def test_closing_the_connection_cancels_the_run(fresh):
    eng, client = fresh
    gate = Gate(2)
    eng.fault_hook = gate
    resp = client.post("/api/generate/stream", json=BODY, buffered=False)
    events = read_events(resp)
    run_id = next(events)[1]["run_id"]
    assert gate.reached.wait(20)
    resp.close()  # what the WSGI server does when the client goes away
    gate.release.set()
    wait_idle(eng)
    run = get(client, "/api/run", run_id=run_id)
    assert run["status"] == "cancelled" and run["num_tokens"] - run["num_prompt_tokens"] == 2


def test_cancel_bad_input(client, assert_error):
    assert_error(client.post("/api/cancel", json={}), 400, "run_id")
    assert_error(client.post("/api/cancel", json={"run_id": 5}), 400, "run_id")
    assert_error(client.post("/api/cancel", json={"run_id": ""}), 400, "run_id")
    body = assert_error(client.post("/api/cancel", json={"run_id": "0123456789abcdef"}), 404, "run_id")
    assert "unknown run id" in body["error"]


def test_fault_in_stream_sends_an_error_event_and_the_run_is_failed(fresh, assert_error):
    eng, client = fresh

    def boom(position):
        raise RuntimeError("injected fault")

    eng.fault_hook = boom
    events = list(read_events(client.post("/api/generate/stream", json=BODY, buffered=False)))
    assert [k for k, _ in events] == ["start", "prompt", "error"]
    err = events[-1][1]
    assert err["status"] == 500 and err["run_id"] == events[0][1]["run_id"] and "RuntimeError" in err["error"]
    failed = assert_error(client.get("/api/run", query_string={"run_id": err["run_id"]}), 409, "run_id")
    assert "failed" in failed["error"]
    eng.fault_hook = None
    assert list(read_events(client.post("/api/generate/stream", json=BODY, buffered=False)))[-1][0] == "done"
    wait_idle(eng)


def test_out_of_memory_mid_run_is_500_then_409_and_the_server_keeps_serving(fresh, assert_error):
    eng, client = fresh

    def oom(position):
        if oom.calls >= 2:
            raise torch.OutOfMemoryError("injected out of memory")
        oom.calls += 1

    oom.calls = 0
    eng.fault_hook = oom
    body = assert_error(client.post("/api/generate", json=BODY), 500)
    assert "OutOfMemoryError" in body["error"] and "Traceback" not in body["error"] and body["run_id"]
    for path in ("/api/run", "/api/attention", "/api/token_probs", "/api/logit_lens", "/api/segments"):
        assert_error(client.get(path, query_string={"run_id": body["run_id"], "layer": 0, "position": 1}), 409, "run_id")
    assert_error(client.get("/api/diff", query_string={"run_a": body["run_id"], "run_b": body["run_id"]}), 409, "run_a")
    assert ok(client.post("/api/cancel", json={"run_id": body["run_id"]}))["status"] == "failed"
    eng.fault_hook = None
    assert ok(client.post("/api/generate", json=BODY | {"max_new_tokens": 2}))["status"] == "done"
    assert not len(eng.jobs)


def test_an_unexpected_exception_is_a_json_500(fresh, assert_error, monkeypatch):
    eng, client = fresh
    monkeypatch.setattr(eng, "model_info", lambda: 1 / 0)
    body = assert_error(client.get("/api/model"), 500)
    assert body["error"] == "internal error: ZeroDivisionError"
    monkeypatch.undo()
    assert ok(client.get("/api/model"))["name"] == "tiny-llama"


def test_full_queue_answers_503_with_retry_after(make_server, tiny_lm, assert_error):
    eng, client = make_server(max_queue=1)
    results = []
    tiny_lm.lock.acquire()  # hold the model so that the first job waits in the queue
    try:
        first = threading.Thread(target=lambda: results.append(client.post("/api/generate", json=BODY).status_code))
        first.start()
        for _ in range(2000):
            if len(eng.jobs):
                break
            threading.Event().wait(0.005)
        assert len(eng.jobs) == 1
        for path in ("/api/generate", "/api/generate/stream", "/api/score"):
            resp = client.post(path, json=BODY | {"text": "some text to score"})
            assert_error(resp, 503, "queue")
            assert int(resp.headers["Retry-After"]) > 0
    finally:
        tiny_lm.lock.release()
    first.join(30)
    assert results == [200]
    wait_idle(eng)
    assert client.post("/api/generate", json=BODY | {"max_new_tokens": 1}).status_code == 200


def test_a_fork_streams_like_a_generation_and_can_be_stopped(fresh, assert_error):
    eng, client = fresh
    parent = ok(client.post("/api/generate", json=BODY | {"max_new_tokens": 6}))
    p = parent["num_prompt_tokens"]
    body = {"run_id": parent["run_id"], "position": p + 2, "token_id": 7, "max_new_tokens": 5, "temperature": 0}
    events = list(read_events(client.post("/api/fork/stream", json=body, buffered=False)))
    kinds = [k for k, _ in events]
    assert kinds == ["start", "prompt"] + ["token"] * 5 + ["done"]
    start, done = events[0][1], events[-1][1]
    assert start["kind"] == "fork" and start["parent_id"] == parent["run_id"] and start["fork_position"] == p + 2
    assert start["params"]["max_new_tokens"] == 5  # the body's settings, not the parent's
    streamed = [d for k, d in events if k == "token"]
    assert streamed[0]["position"] == p + 2 and streamed[0]["id"] == 7  # the forced token comes first
    assert done["kind"] == "fork" and done["parent_id"] == parent["run_id"]
    assert [t["id"] for t in done["tokens"][: p + 2]] == [t["id"] for t in parent["tokens"][: p + 2]]
    plain = ok(client.post("/api/fork", json=body))
    assert [t["id"] for t in plain["tokens"]] == [t["id"] for t in done["tokens"]]
    assert done["run_id"] in get(client, "/api/run", run_id=parent["run_id"])["children"]
    # stopped mid-way: a gate holds the second step, the client cancels, the fork ends "cancelled"
    gate = Gate(2)
    eng.fault_hook = gate
    try:
        resp = client.post("/api/fork/stream", json=body | {"max_new_tokens": 20}, buffered=False)
        frames = read_events(resp)
        run_id = next(frames)[1]["run_id"]
        assert gate.reached.wait(20)
        assert ok(client.post("/api/cancel", json={"run_id": run_id}))["cancelled"] is True
        gate.release.set()
        last = list(frames)[-1]
        assert last[0] == "done" and last[1]["finish_reason"] == "cancelled"
    finally:
        eng.fault_hook = None
    wait_idle(eng)
    assert_error(client.post("/api/fork/stream", json=body | {"position": 0}), 400, "position")
    assert_error(client.post("/api/fork/stream", data="x", content_type="text/plain"), 415, "Content-Type")
