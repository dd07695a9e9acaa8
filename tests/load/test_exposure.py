"""The real server (waitress) when exposed: a random token when bound beyond loopback, waitress's
own refusals in the error shape, slow clients that cannot take every connection, and one-line
`Error:` exits for a port in use or an unusable data folder. Traffic goes to loopback only."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.model
SLOW_SOCKETS = 130


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method="GET", data=None, headers=None, timeout=60):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def run_cli(*args, timeout=120):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "llmvis", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def exposed(tmp_path_factory):
    """`llmvis serve --host 0.0.0.0`: reachable beyond loopback, so it makes up a token."""
    port = free_port()
    log = tmp_path_factory.mktemp("exposed") / "server.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--host", "0.0.0.0", "--port", str(port),
                                 "--max-import-mb", "1", "--no-history"], stdout=fh, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
    token = None
    while token is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("server did not start:\n" + log.read_text()[-4000:])
        m = re.search(r"serving .* at http://0\.0\.0\.0:\d+/\?token=([A-Za-z0-9_-]+)", log.read_text())
        token = m.group(1) if m else None
        time.sleep(0.2)
    base = f"http://127.0.0.1:{port}"
    while call(base + "/api/model", headers={"Authorization": f"Bearer {token}"}, timeout=5)[0] != 200:
        time.sleep(0.2)
    yield base, token, port
    proc.terminate()
    proc.wait(timeout=30)


def test_an_exposed_server_needs_the_token_it_printed(exposed):
    base, token, _ = exposed
    assert len(token) >= 24
    status, _, body = call(base + "/api/model")
    assert status == 401 and json.loads(body)["status"] == 401
    assert call(base + "/api/model", headers={"Authorization": "Bearer not-the-token"})[0] == 401
    assert call(base + "/api/model", headers={"Authorization": f"Bearer {token}"})[0] == 200


def test_an_over_cap_body_gets_the_error_shape_from_waitress_too(exposed):
    base, token, port = exposed
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
    status, headers, body = call(base + "/api/import", "POST", b"\0" * (1536 << 10), auth)  # past the app's cap
    assert status == 413 and headers["Content-Type"].startswith("application/json"), (status, body[:200])
    assert json.loads(body)["status"] == 413
    # past waitress's own cap: it answers from the headers alone (and closes), so send only those
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST /api/import HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                  f"Content-Type: application/octet-stream\r\nContent-Length: {64 << 20}\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw or len(raw.split(b"\r\n\r\n", 1)[1]) < int(
                re.search(rb"Content-Length: (\d+)", raw).group(1) if re.search(rb"Content-Length: (\d+)", raw) else 1):
            chunk = s.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), raw[:300]
    assert b"Content-Type: application/json" in head, head
    assert json.loads(rest)["status"] == 413


def test_slow_clients_cannot_take_every_connection(exposed):
    base, token, port = exposed
    socks = []
    try:
        for _ in range(SLOW_SOCKETS):  # slowloris: each sends half a request line and waits
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /api/model HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            socks.append(s)
        status, _, _ = call(base + "/api/model", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert status == 200
    finally:
        for s in socks:
            s.close()


def test_a_port_in_use_is_one_error_line():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        res = run_cli("serve", "--port", str(held.getsockname()[1]), "--no-history")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and re.search(r"^Error: cannot listen on 127\.0\.0\.1:\d+", res.stderr, re.M), res.stderr


def test_an_unusable_data_folder_is_one_error_line(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    res = run_cli("serve", "--port", str(free_port()), "--data-dir", str(blocker / "data"))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and "Error: cannot use data folder" in res.stderr, res.stderr


def test_heavy_reads_are_admitted_a_few_at_a_time_and_the_rest_still_answers(exposed):
    """12 heavy views at once on a long run: some admitted, the rest 503 + Retry-After at once;
    meanwhile /api/model answers (its time is measured in bench/bench_heavy_reads.py, not here)."""
    import threading

    base, token, _ = exposed
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    text = " ".join(f"word{i}" for i in range(700))
    status, _, body = call(base + "/api/score", "POST", json.dumps({"text": text}).encode(), auth, timeout=300)
    assert status == 200
    rid = json.loads(body)["run_id"]
    results = []

    def heavy(i):
        path = (f"/api/attention?run_id={rid}&layer={i}&head={i % 9}&pool=256" if i % 2 else
                f"/api/logit_lens?run_id={rid}&start={i * 50}&end={i * 50 + 40}")
        status, headers, _ = call(base + path, headers=auth, timeout=300)
        results.append((status, headers.get("Retry-After")))

    threads = [threading.Thread(target=heavy, args=(i,)) for i in range(12)]
    for th in threads:
        th.start()
    model_status = [call(base + "/api/model", headers=auth, timeout=30)[0] for _ in range(3)]
    for th in threads:
        th.join()
    assert model_status == [200, 200, 200]
    assert {s for s, _ in results} <= {200, 503} and any(s == 200 for s, _ in results), results
    assert all(retry for s, retry in results if s == 503), results
