"""The HTTP API, the status page (in a real headless Chromium), webhook
notifications and the `keydrift status` / `keydrift repair` clients, against a
real agent and real redis-server processes.

Tests marked "needs real repair" assert that a divergence is actually fixed on
the replica; the others only need the repair interface (agent/repair.h)."""
import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness import SLOW, Agent, Harness, Proc, free_port, http_get, wait_for
from test_detect import BIN_KEY, EXPECTED, tamper, write_keys

TOKEN = "s3cret-token-for-tests"


def api(agent, path, body=None, token=TOKEN, ctype="application/json", method=None,
        headers=None, timeout=15.0):
    """(status, headers, parsed JSON or raw bytes) of one API request."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        if ctype:
            hdrs["Content-Type"] = ctype
    st, hd, raw = http_get(agent.url + path, timeout=timeout, method=method or (
        "POST" if body is not None else "GET"), data=data, headers=hdrs)
    try:
        return st, hd, json.loads(raw)
    except ValueError:
        return st, hd, raw


def divergences(agent, **params):
    st, _, doc = api(agent, "/api/v1/divergences?" + urllib.parse.urlencode(params))
    assert st == 200, doc
    return doc["divergences"]


def start_topology(h, token=True, native=True, cache=True, extra=""):
    """A primary, a native replica r1 and a pubsub cache c1 (with its sync),
    both tampered with as test_detect does, and an agent finding them."""
    primary = h.redis("primary")
    reps = []
    servers = {}
    if native:
        servers["r1"] = h.replica("replica", primary)
        reps.append(("r1", servers["r1"], "native"))
    if cache:
        servers["c1"] = h.redis("cache")
        h.sync(primary, servers["c1"])
        reps.append(("c1", servers["c1"], "pubsub"))
    n = write_keys(primary)
    for s in servers.values():
        tamper(s, n)
    conf = "sample-modes scan replica-scan\n" + extra
    if token:
        conf += "http-token-file %s\n" % h.write_file("token", TOKEN + "\n")
    agent = Agent(h, primary, reps, extra=conf)
    want = 6 * len(servers)
    wait_for(lambda: agent.status()["detection"]["open_divergences"] >= want, timeout=30,
             what="%d divergences open" % want)
    wait_for(lambda: len(divergences(agent, state="confirmed")) >= want, timeout=10,
             what="divergences in SQLite")
    return primary, servers, agent


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    """One shared topology for the tests that only read, or repair keys that are
    not divergent (so a real repair changes nothing they look at)."""
    h = Harness(tmp_path_factory.mktemp("topo"))
    try:
        primary, servers, agent = start_topology(h)
        yield h, primary, servers, agent
    finally:
        h.cleanup()


# ------------------------------------------------------------------ auth, validation

def test_repair_auth_and_validation(topo):
    _, _, _, agent = topo
    for path in ("/api/v1/repair", "/api/v1/repair/resume"):
        body = {"keys": ["nope:1"]} if path == "/api/v1/repair" else {}
        st, hd, doc = api(agent, path, body, token=None)
        assert st == 401 and "Bearer" in hd.get("WWW-Authenticate", ""), (st, hd, doc)
        assert "Authorization" in doc["error"]
        st, _, doc = api(agent, path, body, token="wrong")
        assert st == 403 and doc["error"] == "wrong token"
        st, _, doc = api(agent, path, body, token=TOKEN[:-1])
        assert st == 403
        st, _, doc = api(agent, path, body, ctype="text/plain")
        assert st == 415 and "application/json" in doc["error"]
        st, _, doc = api(agent, path, method="GET")
        assert st == 405, (path, st, doc)

    bad = [
        (b"{not json", "not valid JSON"),
        (b"[]", "JSON object"),
        ({"keys": "k"}, "field 'keys' must be an array"),
        ({"keys": [1]}, "element 0 is not a string"),
        ({"keys_base64": ["***"]}, "not valid base64"),
        ({"keys": ["k"], "extra": 1}, "unknown field 'extra'"),
        ({"keys": []}, "field 'keys' is empty"),
        ({"keys": ["k%d" % i for i in range(1001)]}, "at most 1000"),
        ({"keys": ["k"], "replica": "nope"}, "no replica named 'nope'"),
        ({"keys": ["k"], "replica": 7}, "field 'replica'"),
        ({"all_open": "yes"}, "field 'all_open'"),
        ({"keys": ["k"], "all_open": True}, "not both"),
        ({}, "nothing to repair"),
    ]
    for body, reason in bad:
        st, _, doc = api(agent, "/api/v1/repair", body)
        assert st == 400 and reason in doc["error"], (body, st, doc)
    # 413 from the server's body cap (64kb by default), handler not called.
    st, _, doc = api(agent, "/api/v1/repair", b'{"keys":["' + b"x" * 70000 + b'"]}')
    assert st == 413 and "larger than" in doc["error"]
    st, _, doc = api(agent, "/api/v1/repair?wait_ms=99999", {"keys": ["k"]})
    assert st == 400 and "wait_ms" in doc["error"]


def test_get_endpoints_errors(topo):
    _, _, _, agent = topo
    for q, reason in [("state=nope", "'state'"), ("kind=nope", "'kind'"),
                      ("since=yesterday", "'since'"), ("limit=0", "'limit'"),
                      ("limit=x", "'limit'"), ("replica=nope", "no replica named 'nope'"),
                      ("key=bad%5Cescape", "'key'"), ("key_base64=***", "'key_base64'"),
                      ("bogus=1", "unknown parameter 'bogus'")]:
        st, _, doc = api(agent, "/api/v1/divergences?" + q)
        assert st == 400 and reason in doc["error"], (q, st, doc)
    st, _, doc = api(agent, "/api/v1/divergences", {"x": 1})
    assert st == 405
    st, _, doc = api(agent, "/api/v1/repairs/987654321")
    assert st == 404 and "no repair job" in doc["error"]
    st, _, doc = api(agent, "/api/v1/repairs/abc")
    assert st == 404
    st, _, doc = api(agent, "/api/v1/repairs/1?wait_ms=-1")
    assert st in (400, 404)
    st, _, doc = api(agent, "/api/v1/nothing-here")
    assert st == 404
    st, hd, _ = api(agent, "/", {"x": 1})
    assert st == 405 and "GET" in hd.get("Allow", "")


def test_no_token_loopback_only_and_no_history(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="history-db \"\"\nsample-modes scan\n")
    # No token configured: loopback clients need none...
    st, _, doc = api(agent, "/api/v1/repair", {"keys": ["nope"]}, token=None)
    assert st in (200, 202), (st, doc)
    # ...but a non-loopback Host (DNS rebinding) and a non-JSON body are refused.
    st, _, doc = api(agent, "/api/v1/repair", {"keys": ["nope"]}, token=None,
                     headers={"Host": "evil.example:80"})
    assert st == 403 and "loopback" in doc["error"]
    st, _, doc = api(agent, "/api/v1/repair", {"keys": ["nope"]}, token=None,
                     ctype="application/x-www-form-urlencoded")
    assert st == 415
    st, _, doc = api(agent, "/api/v1/divergences", token=None)
    assert st == 503 and "history-db" in doc["error"], doc
    assert agent.status()["repair"]["token_required"] is False


# ------------------------------------------------------------------ divergences

def test_divergences_filters(topo):
    _, _, _, agent = topo
    everything = divergences(agent, state="open")
    assert len(everything) == 12
    for d in everything:
        assert set(d) >= {"id", "replica", "key", "key_base64", "kind", "state", "first_seen",
                          "found_by"}, d
    for rep in ("r1", "c1"):
        got = {base64.b64decode(d["key_base64"]): d["kind"]
               for d in divergences(agent, replica=rep, state="open")}
        assert got == EXPECTED, (rep, got)
    assert len(divergences(agent, kind="missing")) == 2
    assert {d["replica"] for d in divergences(agent, kind="extra")} == {"r1", "c1"}
    assert len(divergences(agent, kind="value", replica="c1")) == 2
    assert len(divergences(agent, state="confirmed")) == 12
    assert divergences(agent, state="resolved") == []
    assert len(divergences(agent, since="1h")) == 12
    future = int(time.time() * 1000) + 3600 * 1000
    assert divergences(agent, since=str(future)) == []
    first = min(d["first_seen"] for d in everything)
    assert len(divergences(agent, since=str(first))) == 12
    assert len(divergences(agent, limit=3)) == 3
    assert [d["replica"] for d in divergences(agent, key="k:value", replica="r1")] == ["r1"]


def test_binary_keys_round_trip(topo):
    _, _, _, agent = topo
    rows = [d for d in divergences(agent) if base64.b64decode(d["key_base64"]) == BIN_KEY]
    assert len(rows) == 2
    text = rows[0]["key"]
    assert text == "bin\\x00key\\x0awith\\xffbytes \\xc3\\xa9", text
    by_text = divergences(agent, key=text)
    by_b64 = divergences(agent, key_base64=base64.b64encode(BIN_KEY).decode())
    assert sorted(d["id"] for d in by_text) == sorted(d["id"] for d in rows)
    assert sorted(d["id"] for d in by_b64) == sorted(d["id"] for d in rows)
    # And the same key given to repair as base64 comes back identical.
    st, _, job = api(agent, "/api/v1/repair",
                     {"keys_base64": [base64.b64encode(b"nope\x00\xff").decode()],
                      "replica": "c1"})
    assert st == 200, job
    assert [base64.b64decode(r["key_base64"]) for r in job["results"]] == [b"nope\x00\xff"]


# ------------------------------------------------------------------ repair jobs

def test_repair_job_polling_via_202(topo):
    _, _, _, agent = topo
    st, hd, doc = api(agent, "/api/v1/repair?wait_ms=0", {"keys": ["nope:a", "nope:b"],
                                                          "replica": "c1"})
    assert st == 202, (st, doc)
    assert doc["state"] in ("queued", "running") and doc["id"] > 0
    loc = hd["Location"]
    assert loc == "/api/v1/repairs/%d" % doc["id"]

    def done():
        s, _, j = api(agent, loc)
        assert s == 200, j
        return j if j["state"] == "done" else None
    job = wait_for(done, timeout=15, interval=0.1, what="job done")
    assert job["id"] == doc["id"] and job["trigger"] == "api"
    assert len(job["results"]) == 2
    # A bounded wait on the job endpoint answers at once for a finished job.
    t0 = time.monotonic()
    st, _, again = api(agent, loc + "?wait_ms=10000")
    assert st == 200 and again["state"] == "done" and time.monotonic() - t0 < 2 * SLOW


def test_concurrent_repair_requests(topo):
    _, _, _, agent = topo
    results = [None] * 10

    def one(i):
        try:
            results[i] = api(agent, "/api/v1/repair", {"keys": ["nope:%d" % i],
                                                       "replica": "r1"}, timeout=30)
        except Exception as e:  # noqa: BLE001 -- reported below
            results[i] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = set()
    for r in results:
        assert isinstance(r, tuple), r
        st, hd, doc = r
        assert st in (200, 202), (st, doc)
        assert isinstance(doc["id"], int)
        if st == 202:
            assert hd["Location"].endswith("/%d" % doc["id"])
        ids.add(doc["id"])
    assert len(ids) == 10


def test_resume_and_repair_status(topo):
    _, _, _, agent = topo
    rep = agent.status()["repair"]
    assert rep["policy"] == "manual" and rep["token_required"] is True
    assert isinstance(rep["paused"], bool)
    st, _, doc = api(agent, "/api/v1/repair/resume", {})
    assert st == 200 and doc == {"paused": False}
    rep = agent.status()["repair"]
    assert rep["paused"] is False and rep["paused_reason"] is None


def test_repair_off_is_refused(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    agent = Agent(h, primary, [("c1", cache, "pubsub")], extra="repair off\n")
    st, _, doc = api(agent, "/api/v1/repair", {"all_open": True}, token=None)
    assert st == 409 and "repair off" in doc["error"]


def same_everywhere(primary, server, key):
    return primary.client().dump(key) == server.client().dump(key)


def test_repair_by_key_and_all_open_real(h):
    """needs real repair"""
    primary, servers, agent = start_topology(h)
    st, _, job = api(agent, "/api/v1/repair", {"keys": ["k:value"], "replica": "c1"})
    assert st == 200, job
    assert [(r["replica"], r["key"], r["outcome"]) for r in job["results"]] == \
        [("c1", "k:value", "repaired")]
    assert servers["c1"].client().get("k:value") == b"primary"
    st, _, job = api(agent, "/api/v1/repair",
                     {"keys_base64": [base64.b64encode(BIN_KEY).decode()], "replica": "r1"})
    assert st == 200 and job["results"][0]["outcome"] == "repaired", job
    wait_for(lambda: same_everywhere(primary, servers["r1"], BIN_KEY), what="binary key fixed")

    st, hd, job = api(agent, "/api/v1/repair", {"all_open": True})
    if st == 202:
        job = wait_for(lambda: (lambda j: j if j["state"] == "done" else None)(
            api(agent, hd["Location"] + "?wait_ms=2000")[2]), timeout=30, what="all-open job")
    assert job["state"] == "done"
    assert job["results"] and all(r["outcome"] in ("repaired", "not-divergent")
                                  for r in job["results"]), job
    for name, server in servers.items():
        for key in (b"k:value", b"k:missing", b"k:type", BIN_KEY):
            wait_for(lambda: same_everywhere(primary, server, key),
                     what="%s %r repaired" % (name, key))
        wait_for(lambda: not server.client().exists("k:extra"), what="extra key dropped")
    wait_for(lambda: divergences(agent, state="open") == [], timeout=20,
             what="nothing open any more")


# ------------------------------------------------------------------ status page

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--disable-dev-shm-usage", "--hide-scrollbars"]
needs_chromium = pytest.mark.skipif(not CHROMIUM, reason="chromium is not installed "
                                    "(tests/deps.sh installs it)")


def test_status_page_headers(topo):
    _, _, _, agent = topo
    st, hd, body = http_get(agent.url + "/")
    assert st == 200
    assert hd["Content-Type"] == "text/html; charset=utf-8"
    csp = hd["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert len(nonce) == 32
    page = body.decode()
    assert '<script nonce="%s">' % nonce in page
    assert "http://" not in page and "https://" not in page  # no external assets
    # A fresh nonce on every response.
    assert http_get(agent.url + "/")[1]["Content-Security-Policy"] != csp


@needs_chromium
def test_status_page_renders_in_chromium(topo):
    h, _, _, agent = topo
    prof = os.path.join(h.tmp, "chrome-dom")
    p = subprocess.run([CHROMIUM] + CHROME_FLAGS + [
        "--user-data-dir=" + prof, "--virtual-time-budget=4000", "--dump-dom", agent.url + "/"],
        capture_output=True, timeout=120 * SLOW)
    dom = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    assert 'data-replica="r1"' in dom and 'data-replica="c1"' in dom
    assert "k:missing" in dom and "bin\\x00key" in dom
    assert dom.count('class="repair"') == 12, dom
    assert "primary 127.0.0.1:%d up" % topo[1].port in dom
    shot = os.path.join(h.tmp, "status-page.png")
    p = subprocess.run([CHROMIUM] + CHROME_FLAGS + [
        "--user-data-dir=" + prof, "--virtual-time-budget=4000", "--window-size=1280,900",
        "--screenshot=" + shot, agent.url + "/"], capture_output=True, timeout=120 * SLOW)
    assert p.returncode == 0 and os.path.getsize(shot) > 10000, p.stderr.decode()[-2000:]
    print("screenshot:", shot)


class CDP:
    """A minimal Chrome DevTools Protocol client over a stdlib websocket."""

    def __init__(self, ws_url):
        u = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n"
                           % (u.path, u.hostname, u.port, key)).encode())
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = self.sock.recv(4096)
            assert chunk, "websocket handshake: connection closed"
            resp += chunk
        assert resp.startswith(b"HTTP/1.1 101"), resp
        self.buf = resp.split(b"\r\n\r\n", 1)[1]
        self.next_id = 0

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            assert chunk, "websocket closed"
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            head = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self):
        msg = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7f
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)
            op = b0 & 0x0f
            if op in (0x1, 0x0):
                msg += payload
                if b0 & 0x80:
                    return json.loads(msg)
            elif op == 0x8:
                raise AssertionError("websocket closed by the browser")

    def call(self, method, **params):
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            m = self._recv()
            if m.get("id") == self.next_id:
                assert "error" not in m, m
                return m["result"]

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")


@needs_chromium
def test_status_page_repair_button(h):
    """needs real repair (the key on the cache is checked afterwards)"""
    primary, servers, agent = start_topology(h, native=False)
    port = free_port()
    proc = Proc([CHROMIUM] + CHROME_FLAGS + [
        "--user-data-dir=" + os.path.join(h.tmp, "chrome-cdp"),
        "--remote-debugging-port=%d" % port, "--remote-allow-origins=*",
        "--window-size=1280,900", "about:blank"], os.path.join(h.tmp, "chromium.log"))
    h.procs.append(proc)  # stopped with the test's other processes

    def page_ws():
        st, _, body = http_get("http://127.0.0.1:%d/json/list" % port, timeout=2)
        pages = [t for t in json.loads(body) if t["type"] == "page"]
        return pages[0]["webSocketDebuggerUrl"] if pages else None
    cdp = CDP(wait_for(page_ws, timeout=30, interval=0.2, what="chromium's debugging port"))
    cdp.call("Page.enable")
    cdp.call("Page.navigate", url=agent.url + "/")
    key_b64 = base64.b64encode(b"k:value").decode()
    row = 'tr[data-replica="c1"][data-key-b64="%s"]' % key_b64
    wait_for(lambda: cdp.js("!!document.querySelector('%s button.repair')" % row),
             timeout=20, interval=0.2, what="the divergence row on the page")
    assert cdp.js("document.querySelectorAll('#divergences tbody tr').length") == 6
    assert cdp.js("document.querySelector('#replicas tbody tr[data-replica=\"c1\"]')"
                  ".textContent").startswith("c1pubsub")

    # Without the token the page asks for it instead of sending.
    cdp.js("document.querySelector('%s button.repair').click()" % row)
    wait_for(lambda: "token" in cdp.js("document.getElementById('outcome').textContent"),
             what="the page asking for the token")
    cdp.js("document.getElementById('token').value = %s" % json.dumps(TOKEN))
    cdp.js("document.querySelector('%s button.repair').click()" % row)
    text = wait_for(lambda: (lambda t: t if "repaired" in t or "failed" in t else None)(
        cdp.js("document.getElementById('outcome').textContent")), timeout=20, interval=0.2,
        what="the outcome shown on the page")
    assert "c1  k:value  repaired" in text, text
    shot = cdp.call("Page.captureScreenshot", format="png")["data"]
    path = os.path.join(h.tmp, "status-page-repaired.png")
    with open(path, "wb") as f:
        f.write(base64.b64decode(shot))
    print("screenshot:", path)
    # The token lives only in the page's memory.
    assert cdp.js("window.localStorage.length + window.sessionStorage.length") == 0
    assert TOKEN not in cdp.js("document.cookie + location.href")
    assert servers["c1"].client().get("k:value") == b"primary"


# ------------------------------------------------------------------ webhook

class Receiver:
    """A local webhook endpoint: records each POST (or never answers when hang)."""

    def __init__(self, hang=False):
        self.posts = []
        self.connections = 0
        self.release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.connections += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if hang:
                    outer.release.wait(60)
                    return
                outer.posts.append((self.headers["Content-Type"], json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook" % self.srv.server_address[1]
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def events(self, kind):
        return [e for _, doc in self.posts for e in doc["events"] if e["kind"] == kind]

    def close(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


def test_webhook_replica_status(h):
    rcv = Receiver()
    try:
        primary = h.redis("primary")
        r1 = h.replica("replica", primary)
        agent = Agent(h, primary, [("r1", r1, "native")], extra="webhook-url %s\n" % rcv.url)
        wait_for(lambda: agent.replica_status("r1")["status"] == "ok", what="r1 ok")
        r1.kill()

        def down_event():
            return [e for e in rcv.events("replica_status") if e["data"]["to"] == "down"]
        ev = wait_for(down_event, timeout=15, what="replica_status event")[0]
        assert ev["data"]["replica"] == "r1" and ev["data"]["from"] in ("ok", "lagging")
        assert isinstance(ev["data"]["reason"], str) and ev["data"]["reason"]
        assert abs(ev["time_ms"] / 1000.0 - time.time()) < 30
        assert all(ct == "application/json" for ct, _ in rcv.posts)
        wait_for(lambda: (agent.metric("keydrift_webhook_events_total", outcome="sent")
                          or 0) >= 1, what="sent counted")
        # The CLI sees an unhealthy agent: exit 1.
        p = h.run_keydrift("status", "--agent", agent.url)
        assert p.returncode == 1, (p.stdout, p.stderr)
        assert b"down" in p.stdout
    finally:
        rcv.close()


def test_webhook_hanging_receiver_does_not_slow_the_agent(h):
    rcv = Receiver(hang=True)
    try:
        primary = h.redis("primary")
        r1 = h.replica("replica1", primary)
        r2 = h.replica("replica2", primary)
        agent = Agent(h, primary, [("r1", r1, "native"), ("r2", r2, "native")],
                      extra="webhook-url %s\n" % rcv.url)
        for name in ("r1", "r2"):
            wait_for(lambda: (lambda r: r["status"] == "ok" and r["lag_seconds"] is not None)(
                agent.replica_status(name)), what="%s measured and ok" % name)
        r1.kill()
        wait_for(lambda: rcv.connections >= 1, timeout=15, what="the webhook POST hanging")
        worst = 0.0
        t_end = time.monotonic() + 6
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            agent.metrics_text()
            worst = max(worst, time.monotonic() - t0)
            r2s = agent.replica_status("r2")
            assert r2s["lag_seconds"] is not None and r2s["lag_seconds"] < 1.0 * SLOW, r2s
            time.sleep(0.1)
        print("worst /metrics latency while the webhook hangs: %.3f s" % worst)
        assert worst < 0.5 * SLOW
        assert agent.replica_status("r1")["status"] == "down"
        wait_for(lambda: agent.replica_status("r2")["status"] == "ok", what="r2 ok")
        assert (agent.metric("keydrift_webhook_events_total", outcome="sent") or 0) == 0
        t0 = time.monotonic()
        agent.proc.stop()
        assert time.monotonic() - t0 < 8 * SLOW, "shutdown waited on the hung webhook"
    finally:
        rcv.close()


# ------------------------------------------------------------------ CLI clients

def test_cli_status_and_repair(topo):
    h, _, _, agent = topo
    tok = os.path.join(h.tmp, "token")
    p = h.run_keydrift("status", "--agent", agent.url)
    out = p.stdout.decode()
    assert p.returncode == 0, (out, p.stderr)
    assert "r1" in out and "c1" in out and "open divergences: 12" in out, out
    p = h.run_keydrift("status", "--json", env={"KEYDRIFT_AGENT": agent.url + "/"})
    assert p.returncode == 0 and json.loads(p.stdout)["replicas"][0]["name"] == "r1"

    p = h.run_keydrift("repair", "nope:cli", "--replica", "c1", "--agent", agent.url,
                       "--token-file", tok)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert b'"nope:cli"' in p.stdout and b"c1" in p.stdout
    p = h.run_keydrift("repair", "--base64", base64.b64encode(b"nope\x00").decode(),
                       "--agent", agent.url, "--token-file", tok, "--json")
    assert p.returncode == 0, p.stderr
    assert base64.b64decode(json.loads(p.stdout)["results"][0]["key_base64"]) == b"nope\x00"
    p = h.run_keydrift("repair", "--resume", "--agent", agent.url, "--token-file", tok)
    assert p.returncode == 0 and b"resumed" in p.stdout

    p = h.run_keydrift("repair", "k", "--agent", agent.url)
    assert p.returncode == 2 and b"the agent wants a token: --token-file" in p.stderr
    bad = h.write_file("badtoken", "nope\n")
    p = h.run_keydrift("repair", "k", "--agent", agent.url, "--token-file", bad)
    assert p.returncode == 2 and b"--token-file" in p.stderr and b"403" in p.stderr
    p = h.run_keydrift("repair", "k", "--replica", "zz", "--agent", agent.url,
                       "--token-file", tok)
    assert p.returncode == 2 and b"no replica named 'zz'" in p.stderr, p.stderr
    p = h.run_keydrift("repair", "--agent", agent.url)
    assert p.returncode == 2 and b"usage:" in p.stderr
    p = h.run_keydrift("repair", "k", "--all-open")
    assert p.returncode == 2
    p = h.run_keydrift("repair", "--help")
    assert p.returncode == 0 and b"Exit:" in p.stdout


def test_cli_without_agent(h):
    url = "http://127.0.0.1:%d" % free_port()
    for args in (("status",), ("repair", "k"), ("repair", "--all-open")):
        p = h.run_keydrift(*args, "--agent", url)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert b"no agent answering at " + url.encode() in p.stderr
        assert b"is keydrift run running?" in p.stderr
