"""Streaming (SSE), cancellation, injected faults and the bounded queue, on the real default model."""
import json
import threading
import time

import pytest
import torch

from llmvis.web.app import create_app
from llmvis.core.config import ServerConfig
from llmvis.engine.engine import Engine

pytestmark = pytest.mark.model


@pytest.fixture()
def engine(default_lm):
    return Engine(default_lm, ServerConfig(max_new_tokens=64))


@pytest.fixture()
def client(engine):
    return create_app(engine).test_client()


def read_events(resp):
    """Parse SSE frames from a streamed test-client response, one at a time."""
    buf = ""
    for chunk in resp.response:
        buf += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n\n" in buf:
            frame, buf = buf.split("\n\n", 1)
            if frame.startswith(":"):
                continue
            lines = dict(line.split(": ", 1) for line in frame.splitlines())
            yield lines["event"], json.loads(lines["data"])


def wait_idle(engine, timeout=60):
    deadline = time.monotonic() + timeout
    while engine.jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not engine.jobs


def test_stream_sends_start_prompt_tokens_done(client):
    body = {"prompt": "Name three colours.", "temperature": 0, "max_new_tokens": 10}
    resp = client.post("/api/generate/stream", json=body, buffered=False)
    assert resp.mimetype == "text/event-stream"
    events = list(read_events(resp))
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[1] == "prompt" and kinds[-1] == "done"
    streamed = [d for k, d in events if k == "token"]
    done = events[-1][1]
    gen = [t for t in done["tokens"] if t["source"] == "generated"]
    assert len(streamed) == len(gen) >= 1
    for live, final in zip(streamed, gen):
        assert live["id"] == final["id"] and live["position"] == final["position"]
        assert live["prob"] == pytest.approx(final["prob"]) and live["rank"] == final["rank"]
    prompt = events[1][1]["tokens"]
    assert [t["id"] for t in prompt] == [t["id"] for t in done["tokens"][: done["num_prompt_tokens"]]]
    assert events[0][1]["run_id"] == done["run_id"]


def test_stream_bad_input_is_json_error(client, assert_error):
    assert_error(client.post("/api/generate/stream", json={"prompt": ""}), 400, "prompt")


def test_explicit_cancel_stops_within_one_step(engine, client):
    seen = []
    engine.fault_hook = seen.append  # records each step the engine takes
    resp = client.post("/api/generate/stream", json={"prompt": "Tell a long story.", "temperature": 0,
                                                     "max_new_tokens": 64}, buffered=False)
    events = read_events(resp)
    run_id = next(events)[1]["run_id"]
    for kind, _ in events:
        if kind == "token" and len(seen) >= 3:
            break
    answer = client.post("/api/cancel", json={"run_id": run_id}).get_json()
    assert answer["cancelled"] is True
    steps_at_cancel = len(seen)
    rest = list(events)
    done = rest[-1][1]
    assert rest[-1][0] == "done" and done["finish_reason"] == "cancelled" and done["status"] == "cancelled"
    generated = len(done["tokens"]) - done["num_prompt_tokens"]
    assert generated <= steps_at_cancel + 1 < 64
    again = client.post("/api/cancel", json={"run_id": run_id}).get_json()
    assert again == {"run_id": run_id, "cancelled": False, "status": "cancelled"}


def test_client_disconnect_cancels(engine, client):
    resp = client.post("/api/generate/stream", json={"prompt": "Tell a long story.", "temperature": 0,
                                                     "max_new_tokens": 64}, buffered=False)
    events = read_events(resp)
    run_id = next(events)[1]["run_id"]
    for kind, _ in events:
        if kind == "token":
            break
    resp.close()  # what the WSGI server does when the client goes away
    wait_idle(engine)
    run = engine.store.get(run_id)
    assert run.status == "cancelled" and run.num_tokens - run.num_prompt < 64


def test_cancel_bad_input(client, assert_error):
    assert_error(client.post("/api/cancel", json={}), 400, "run_id")
    assert_error(client.post("/api/cancel", json={"run_id": "nope"}), 404, "run_id")


def test_fault_mid_run_is_500_run_failed_and_next_request_works(engine, client, assert_error):
    def oom(position):
        if len(oom.calls) >= 2:
            raise torch.OutOfMemoryError("injected out of memory")
        oom.calls.append(position)

    oom.calls = []
    engine.fault_hook = oom
    body = assert_error(client.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 20}), 500)
    assert "OutOfMemoryError" in body["error"] and body["run_id"]
    failed = assert_error(client.get(f"/api/run?run_id={body['run_id']}"), 409, "run_id")
    assert "failed" in failed["error"]
    assert_error(client.get(f"/api/attention?run_id={body['run_id']}&layer=0"), 409)
    engine.fault_hook = None
    ok = client.post("/api/generate", json={"prompt": "Hi", "temperature": 0, "max_new_tokens": 3})
    assert ok.status_code == 200
    assert client.get(f"/api/run?run_id={ok.get_json()['run_id']}").get_json()["status"] == "done"
    assert not engine.jobs


def test_fault_in_stream_sends_error_event(engine, client):
    def boom(position):
        raise RuntimeError("injected fault")

    engine.fault_hook = boom
    resp = client.post("/api/generate/stream", json={"prompt": "Hi", "max_new_tokens": 5}, buffered=False)
    events = list(read_events(resp))
    assert events[-1][0] == "error" and events[-1][1]["status"] == 500 and events[-1][1]["run_id"]


def test_full_queue_answers_503_with_retry_after(default_lm, assert_error):
    eng = Engine(default_lm, ServerConfig(max_new_tokens=8, max_queue=1))
    client = create_app(eng).test_client()
    default_lm.lock.acquire()  # hold the model so the first job waits in the queue
    try:
        first = threading.Thread(target=lambda: client.post("/api/generate", json={"prompt": "a", "max_new_tokens": 2}))
        first.start()
        deadline = time.monotonic() + 30
        while not eng.jobs and time.monotonic() < deadline:
            time.sleep(0.01)
        resp = client.post("/api/generate", json={"prompt": "b", "max_new_tokens": 2})
        assert_error(resp, 503, "queue")
        assert int(resp.headers["Retry-After"]) > 0
    finally:
        default_lm.lock.release()
    first.join(60)
    wait_idle(eng)
    assert client.post("/api/generate", json={"prompt": "c", "max_new_tokens": 2}).status_code == 200
