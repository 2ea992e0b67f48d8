"""Faults and abuse: a subscriber down for 10 s during writes, odd keys, and
hostile HTTP clients. Nothing crashes, everything gets a 4xx or is cut, and
metrics keep being served."""
import socket
import threading
import time

from harness import SLOW, Agent, http_get, wait_for


def test_sync_down_10s_missed_keys_found_and_repaired(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    sync = h.sync(primary, cache)
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="repair auto\nrepair-max-share 100%\nmax-commands-per-sec 20000\n")
    p = primary.client()
    sync.kill()
    t0 = time.monotonic()
    n = 0
    while time.monotonic() - t0 < 10:
        pipe = p.pipeline(transaction=False)
        for _ in range(20):
            pipe.set("down:%d" % n, n)
            pipe.publish("cache_update", "down:%d" % n)
            n += 1
        pipe.execute()
        time.sleep(0.05)
    missed = n
    h.sync(primary, cache, name="sync-again")
    c = cache.client()
    # Count the test's own keys: the agent's heartbeat and markers are keys too.
    wait_for(lambda: sum(1 for _ in c.scan_iter(match="down:*", count=1000)) >= missed and all(
        c.get("down:%d" % i) == b"%d" % i for i in range(0, missed, 97)),
        timeout=60, what="every key missed while the subscriber was down repaired")
    for i in range(missed):
        assert c.get("down:%d" % i) == b"%d" % i, i
    repaired = sum(v for k, v in agent.metrics().items()
                   if k[0] == "keydrift_repairs_total" and ("outcome", "repaired") in k[1])
    assert repaired >= missed * 0.9, (repaired, missed)


def test_odd_keys_every_byte_empty_and_long(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    p = primary.client()
    keys = [bytes([b]) for b in range(256)] + [b"", b"L" * 70000, bytes(range(256)) * 3]
    for k in keys:
        p.set(k, b"v" + k[:10])
    wait_for(lambda: replica.client().dbsize() == p.dbsize(), what="replicated")
    r = replica.client()
    r.config_set("replica-read-only", "no")
    for k in (b"\x00", b"", b"L" * 70000, b"\xff"):
        r.set(k, "stale")
    conf = h.write_file("k.conf", "primary %s\nreplica r1 %s native\nhistory-db \"\"\n"
                        % (primary.addr, replica.addr))
    res = h.run_keydrift("check", conf, "--json")
    assert res.returncode == 1, res.stderr
    import base64
    import json
    doc = json.loads(res.stdout)
    got = {base64.b64decode(d["key_base64"]) for d in doc["divergences"]}
    assert got == {b"\x00", b"", b"L" * 70000, b"\xff"}, got


def raw(port, data, read=True, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return s
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                break
            out += chunk
        return out
    finally:
        if read:
            s.close()


def status_of(resp):
    return int(resp.split(b" ", 2)[1]) if resp.startswith(b"HTTP/") else None


def test_http_abuse(h):
    primary = h.redis("primary")
    agent = Agent(h, primary, extra="http-timeout 2s\nhttp-max-body 1kb\n")
    port = agent.port

    # Slowloris: connections that send half a request and stall are cut by
    # the timeout and do not block /metrics meanwhile.
    slow = [raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", read=False) for _ in range(50)]
    t0 = time.monotonic()
    assert http_get(agent.url + "/metrics", timeout=5)[0] == 200
    assert time.monotonic() - t0 < 1.0 * SLOW
    time.sleep(3)
    closed = 0
    for s in slow:
        s.settimeout(2)
        try:
            data = s.recv(100)
            closed += data == b"" or data.startswith(b"HTTP/1.1 408")
        except ConnectionResetError:
            closed += 1
        except socket.timeout:
            pass  # still open: the timeout did not cut it
        s.close()
    assert closed == len(slow), "%d of %d slow connections cut" % (closed, len(slow))

    # 1,000 concurrent connections.
    results = []

    def one():
        try:
            results.append(http_get(agent.url + "/healthz", timeout=30)[0])
        except OSError as e:
            results.append(repr(e))
    threads = [threading.Thread(target=one) for _ in range(1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(200) == 1000, [r for r in results if r != 200][:5]

    # Oversized headers and bodies, traversal, odd methods, malformed queries.
    big_header = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200000 + b"\r\n\r\n"
    st = status_of(raw(port, big_header))
    assert st is None or 400 <= st < 500, st
    body = b"x" * 5000
    st = status_of(raw(port, b"POST /api/v1/repair HTTP/1.1\r\nHost: x\r\nContent-Length: "
                   + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body))
    assert st in (401, 413), st
    for path in [b"/../../etc/passwd", b"/%2e%2e/%2e%2e/etc/passwd", b"/api/v1/%00",
                 b"/api/v1/divergences?limit=%zz", b"/api/v1/divergences?since=yesterday",
                 b"/api/v1/divergences?limit=-5", b"/api/v1/repairs/notanumber",
                 b"/metrics?%", b"/" + b"a" * 8000]:
        st = status_of(raw(port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close"
                           b"\r\n\r\n"))
        assert st is not None and 400 <= st < 500, (path[:60], st)
    for method in [b"DELETE", b"PATCH", b"TRACE", b"FOO"]:
        st = status_of(raw(port, method + b" /metrics HTTP/1.1\r\nHost: x\r\nConnection: close"
                           b"\r\n\r\n"))
        assert st is not None and 400 <= st < 500, (method, st)
    st = status_of(raw(port, b"\x00\x01\x02garbage\r\n\r\n"))
    assert st is None or 400 <= st < 500
    # Still serving, still alive.
    assert http_get(agent.url + "/metrics")[0] == 200
    assert agent.proc.alive()
