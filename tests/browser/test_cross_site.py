"""Another web page attacks the local server from real Chromium: a second local origin (another
port) tries a no-cors fetch, a text/plain form, sendBeacon and a multipart import, reads the
history, and frames the page; a rebinding name (resolved to 127.0.0.1) loads the app. Nothing is
created, imported or read, and the frame stays empty."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.browser.conftest import CHROMIUM_ARGS, _chromium_path

pytestmark = pytest.mark.browser

ATTACK = """<!doctype html><html><head><meta charset="utf-8"><title>attacker</title></head><body>
<iframe name="sink" id="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="API/api/generate">
<input name='{"prompt":"pwned-form","max_new_tokens":2,"pad":"' value='"}'></form>
<iframe id="framed" src="API/"></iframe>
<script>
window.results = {};
(async () => {
  const api = "API";
  const body = JSON.stringify({prompt: "pwned-fetch", max_new_tokens: 2});
  try { await fetch(api + "/api/generate", {method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body}); results.nocors = "sent"; }
  catch (e) { results.nocors = String(e); }
  results.beacon = navigator.sendBeacon(api + "/api/generate", JSON.stringify({prompt: "pwned-beacon", max_new_tokens: 2}));
  const fd = new FormData();
  fd.append("file", new Blob([new Uint8Array(64)]), "x.llmvis");
  try { await fetch(api + "/api/import", {method: "POST", mode: "no-cors", body: fd}); results.imp = "sent"; }
  catch (e) { results.imp = String(e); }
  try { const r = await fetch(api + "/api/history"); results.read = await r.text(); }
  catch (e) { results.read = "blocked"; }
  document.getElementById("form").submit();
  results.done = true;
})();
</script></body></html>"""


def history_total(base: str) -> tuple[int, list[str]]:
    with urllib.request.urlopen(base + "/api/history?limit=1000", timeout=30) as resp:
        body = json.loads(resp.read())
    return body["total"], [r["title"] for r in body["runs"]]


@pytest.fixture()
def attacker(server):
    """The attack page, served from a second local origin (127.0.0.1 on another port)."""
    page = ATTACK.replace("API", server).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the http.server API
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_another_origin_creates_imports_and_reads_nothing(browser, server, attacker):
    before, _ = history_total(server)
    context = browser.new_context()
    pg = context.new_page()
    try:
        pg.goto(attacker)
        pg.wait_for_function("window.results && window.results.done === true", timeout=30_000)
        results = pg.evaluate("window.results")
        assert results["read"] == "blocked", results  # CORS: the answer never reaches the attacker
        time.sleep(3)  # the beacon and the form are asynchronous; give them time to arrive
        # the framed app: refused (X-Frame-Options / frame-ancestors), so no frame shows our page
        assert not [f.url for f in pg.frames if f.url.startswith(server)], [f.url for f in pg.frames]
    finally:
        context.close()
    after, titles = history_total(server)
    assert after == before and not [t for t in titles if "pwned" in t], titles


def test_a_rebinding_name_gets_nothing(browser, server):
    """A name of the attacker's that resolves to 127.0.0.1: the Host check refuses it."""
    port = server.rsplit(":", 1)[1]
    other = browser.browser_type.launch(executable_path=_chromium_path(),
                                        args=CHROMIUM_ARGS + ["--host-resolver-rules=MAP rebind.test 127.0.0.1"])
    try:
        pg = other.new_page()
        resp = pg.goto(f"http://rebind.test:{port}/")
        assert resp.status == 403
        status = pg.evaluate("fetch('/api/history').then(r => r.status)")
        body = pg.evaluate("fetch('/api/model').then(r => r.json())")
        assert status == 403 and body["status"] == 403 and "host" in body["error"]
    finally:
        other.close()


def test_the_page_works_in_token_mode(browser, tmp_path):
    """`llmvis serve --token T`: the printed URL opens the page (the token moves into a cookie),
    a generation runs, and a visit without the token, or with a wrong one, gets nothing."""
    import os
    import socket
    import subprocess
    import sys

    from playwright.sync_api import expect

    token = "browser-token-0123456789"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "LLMVIS_DATA_DIR": str(tmp_path / "data")}
    log = tmp_path / "server.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "llmvis", "serve", "--port", str(port), "--token", token],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while f"?token={token}" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        context = browser.new_context()
        pg = context.new_page()
        try:
            assert pg.goto(base + "/").status == 401
            assert pg.goto(base + "/?token=wrong-token-000000").status == 401
            pg.goto(f"{base}/?token={token}")
            assert "token=" not in pg.url  # redirected without it; the cookie carries it now
            pg.wait_for_selector("body[data-ready='true']", timeout=120_000)
            pg.get_by_test_id("prompt").fill("Say hi.")
            pg.get_by_test_id("temperature").fill("0")
            pg.get_by_test_id("max-new-tokens").fill("3")
            pg.get_by_test_id("generate").click()
            expect(pg.locator("[data-testid='token'][data-source='generated']").first).to_be_visible(timeout=120_000)
            cookies = {c["name"]: c for c in context.cookies()}
            assert cookies["llmvis_token"]["httpOnly"] and cookies["llmvis_token"]["sameSite"] == "Strict"
        finally:
            context.close()
        other = browser.new_context()  # no cookie: the API refuses a script without the token
        try:
            pg = other.new_page()
            assert pg.goto(base + "/api/model").status == 401
        finally:
            other.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
