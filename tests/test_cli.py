"""The command line: --help, one-line errors with exit 1, and a real server start."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest


def run_cli(*args, timeout=120):
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "llmvis", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_help_lists_every_serve_flag():
    top = run_cli("--help")
    assert top.returncode == 0 and "serve" in top.stdout
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0
    for flag in ("--model", "--host", "--port", "--device", "--dtype", "--device-map", "--cache-dir", "--store-budget-mb"):
        assert flag in serve.stdout


@pytest.mark.parametrize("args, message", [
    (["serve", "--model", "/definitely/not/here"], "model path does not exist"),
    (["serve", "--model", __file__], "not a .gguf file"),
    (["serve", "--model", os.path.dirname(__file__)], "no config.json"),
])
def test_bad_model_path_is_one_line_error(args, message):
    res = run_cli(*args)
    assert res.returncode == 1
    lines = [line for line in res.stderr.strip().splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and message in lines[0]
    assert "Traceback" not in res.stderr


def test_corrupt_gguf_is_one_line_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file at all")
    res = run_cli("serve", "--model", str(bad), "--cache-dir", str(tmp_path / "cache"))
    assert res.returncode == 1 and "Error: could not load model" in res.stderr
    assert "Traceback" not in res.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.model
def test_serve_binds_loopback_with_waitress():
    port = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {proc.stderr.read()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/model", timeout=2) as resp:
                    info = json.loads(resp.read())
                    server = resp.headers.get("Server", "")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("server did not become ready")
                time.sleep(0.2)
        assert info["name"] == "SmolLM2-135M-Instruct"
        assert "llmvis" in server  # waitress with our ident, not werkzeug's dev server
        conns = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout if os.path.exists("/usr/bin/ss") else ""
        if conns:
            assert f"127.0.0.1:{port}" in conns
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_binding_beyond_loopback_warns():
    res = run_cli("serve", "--host", "0.0.0.0", "--model", "/definitely/not/here")
    assert "binding to 0.0.0.0" in res.stderr and "every request needs the token" in res.stderr
    assert res.returncode == 1  # then the bad model path stops it
    quiet = run_cli("serve", "--model", "/definitely/not/here")
    assert "binding to" not in quiet.stderr
