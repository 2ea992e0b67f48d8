"""keydrift sync against real redis-server processes: convergence under a fast
mixed-type writer in both message formats, restarts of the subscriber, the cache
and the primary, malformed messages, and config errors."""
import base64
import json
import os
import random
import re
import signal
import time

from harness import SLOW, free_port, http_get, parse_metrics, wait_for

CHANNEL = "cache_update"
# TTL difference accepted between the primary and a cache: json TTLs start
# when the cache applies the message, so the subscriber's lag adds to them.
TTL_TOL_MS = 1500 * SLOW
MIN_RATE = 10000   # writes per second the writer must reach

TYPES = ["string", "hash", "list", "set", "zset", "stream"]
NAME_SHAPES = [b"%s:%d", b"%s: with spaces %d", b"%s:\nnew\nline:%d", b"%s:\x00nul\x00:%d",
               "%s:ütf-8 € 鍵:%d".encode()]


def keyname(kind, i):
    shape = NAME_SHAPES[i % len(NAME_SHAPES)]
    return shape.replace(b"%s", kind.encode()).replace(b"%d", str(i).encode())


# ----------------------------------------------------------------- snapshots

def snapshot(r):
    """{key: (type, value, pttl)} for every key, read without DUMP; values are
    normalised so that order-free types compare order-free."""
    keys = list(r.scan_iter(count=1000))
    p = r.pipeline(transaction=False)
    for k in keys:
        p.type(k)
        p.pttl(k)
    meta = p.execute()
    kinds = {}
    for i, k in enumerate(keys):
        t = meta[2 * i].decode()
        if t != "none":
            kinds[k] = (t, meta[2 * i + 1])
    p = r.pipeline(transaction=False)
    order = []
    for k, (t, _) in kinds.items():
        order.append(k)
        if t == "string":
            p.get(k)
        elif t == "hash":
            p.hgetall(k)
        elif t == "list":
            p.lrange(k, 0, -1)
        elif t == "set":
            p.smembers(k)
        elif t == "zset":
            p.zrange(k, 0, -1, withscores=True)
        elif t == "stream":
            p.xrange(k)
        else:
            raise AssertionError("unexpected type %s" % t)
    vals = p.execute()
    snap = {}
    for k, v in zip(order, vals):
        t, pttl = kinds[k]
        if not v and v != b"":  # expired between the two reads (no empty aggregates exist)
            continue
        if t == "zset":
            v = dict(v)
        elif t == "stream":
            v = [(i, dict(f)) for i, f in v]
        snap[k] = (t, v, pttl)
    return snap


def diff(primary, cache, tol=TTL_TOL_MS):
    """Differences between two snapshots: missing/extra keys (except keys about
    to expire), type, value, and TTL beyond tol ms."""
    out = []
    for k in set(primary) | set(cache):
        a, b = primary.get(k), cache.get(k)
        if a is None or b is None:
            t, _, pttl = a or b
            if 0 <= pttl <= tol:
                continue  # expiring: one side may already have dropped it
            out.append("%s only on the %s: %r" % (k, "primary" if a else "cache", a or b))
        elif a[0] != b[0]:
            out.append("%r type %s != %s" % (k, a[0], b[0]))
        elif a[1] != b[1]:
            out.append("%r value %r != %r" % (k, a[1], b[1]))
        elif (a[2] < 0) != (b[2] < 0) or abs(a[2] - b[2]) > tol:
            out.append("%r pttl %d != %d" % (k, a[2], b[2]))
    return sorted(out)


def wait_converged(primary, caches, bound, t0):
    """Waits until every cache equals the primary; fails after t0 + bound s."""
    deadline = t0 + bound
    while True:
        p = snapshot(primary.client())
        diffs = []
        for c in caches:
            diffs += ["%s: %s" % (c.name, d) for d in diff(p, snapshot(c.client()))]
        if not diffs:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise AssertionError("caches differ %.2f s after the writer stopped (%d diffs):\n%s"
                                 % (time.monotonic() - t0, len(diffs), "\n".join(diffs[:15])))
        time.sleep(0.05)


def summary(proc):
    """The counters of the exit summary line as a dict of ints."""
    m = re.search(r"sync summary: (.*)", proc.output())
    assert m, proc.output()[-3000:]
    return {k: float(v) if "." in v else int(v)
            for k, v in (kv.split("=") for kv in m.group(1).split())}


def fence(primary, caches, fmt="key"):
    """Publishes one more update and waits for it on every cache. Pub/sub
    delivers in order, so each subscriber has then received everything
    published before it: a cache can equal the primary while redundant
    messages still wait in its subscriber's socket. Counts as one write."""
    r = primary.client()
    r.set("fence", "1")
    r.publish(CHANNEL, "fence" if fmt == "key" else
              json.dumps({"op": "set", "key": "fence", "value": "1"}))
    for c in caches:
        cc = c.client()
        wait_for(lambda: cc.get("fence") == b"1", timeout=30, what="the fence on %s" % c.name)
    return 1


def stop_clean(proc):
    rc = proc.stop()
    assert rc == 0, "keydrift sync exited %r:\n%s" % (rc, proc.output()[-3000:])
    return summary(proc)


# ------------------------------------------------------------------- writers

def mixed_writer(r, duration, pool=400, seed=1):
    """Writes mixed types as fast as pipelining allows for duration seconds,
    publishing each key name after its write. Returns (writes, seconds)."""
    rnd = random.Random(seed)
    names = {t: [keyname(t, i) for i in range(pool)] for t in TYPES}
    writes = 0
    p = r.pipeline(transaction=False)
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        for _ in range(1000):
            t = TYPES[rnd.randrange(len(TYPES))]
            k = names[t][rnd.randrange(pool)]
            x = rnd.random()
            v = b"v%d\x00\xff" % rnd.randrange(1 << 20)
            if x < 0.08:
                p.delete(k)
            elif t == "string":
                if x < 0.25:
                    p.set(k, v, px=rnd.randint(200, 1500))  # expires during the run
                elif x < 0.45:
                    p.set(k, v, px=60000)
                else:
                    p.set(k, v)
            elif t == "hash":
                p.hset(k, b"f%d" % rnd.randrange(8), v)
            elif t == "list":
                p.rpush(k, v)
                p.ltrim(k, -10, -1)
            elif t == "set":
                p.sadd(k, b"m%d" % rnd.randrange(30))
            elif t == "zset":
                p.zadd(k, {b"m%d" % rnd.randrange(30): rnd.uniform(-1e6, 1e6)})
            else:
                p.xadd(k, {b"f": v}, maxlen=10, approximate=False)
            if t != "string" and 0.08 <= x < 0.2:
                p.pexpire(k, rnd.choice([rnd.randint(200, 1500), 60000]))
            p.publish(CHANNEL, k)
            writes += 1
        p.execute()
    return writes, time.monotonic() - t0


def json_writer(r, duration, pool=2000, seed=2):
    """Strings only: SET (some with PX) and DEL on the primary, each followed by
    the matching json message. Non-UTF-8 names travel as key_b64."""
    rnd = random.Random(seed)
    names = [keyname("json", i) for i in range(pool)] + \
            [b"bin:\xff\xfe:%d" % i for i in range(pool // 10)]
    writes = 0
    p = r.pipeline(transaction=False)
    t0 = time.monotonic()
    while time.monotonic() - t0 < duration:
        for _ in range(1000):
            k = names[rnd.randrange(len(names))]
            try:
                msg = {"key": k.decode()}
            except UnicodeDecodeError:
                msg = {"key_b64": base64.b64encode(k).decode()}
            x = rnd.random()
            if x < 0.1:
                p.delete(k)
                msg["op"] = "del"
            else:
                v = "val %d ü" % rnd.randrange(1 << 20)
                msg.update(op="set", value=v)
                if x < 0.3:
                    ttl = rnd.randint(200, 1500)
                elif x < 0.5:
                    ttl = 60000
                else:
                    ttl = None
                p.set(k, v.encode(), px=ttl)
                if ttl:
                    msg["ttl_ms"] = ttl
            p.publish(CHANNEL, json.dumps(msg))
            writes += 1
        p.execute()
    return writes, time.monotonic() - t0


# --------------------------------------------------------------------- tests

def test_key_format_two_caches_converge(h):
    primary = h.redis("primary")
    caches = [h.redis("cache-a"), h.redis("cache-b")]
    syncs = [h.sync(primary, c, name="sync-%s" % c.name) for c in caches]

    writes, secs = mixed_writer(primary.client(), duration=3.0)
    stopped = time.monotonic()
    rate = writes / secs
    print("key format: %d writes in %.2f s = %.0f writes/s" % (writes, secs, rate))
    assert rate >= MIN_RATE, "writer reached only %.0f writes/s" % rate

    took = wait_converged(primary, caches, 2.0 * SLOW, stopped)
    print("caches converged %.2f s after the writer stopped" % took)
    assert len(snapshot(primary.client())) > 100
    writes += fence(primary, caches)
    for s in syncs:
        st = stop_clean(s)
        assert st["received"] == writes, st
        assert st["applied"] == writes and st["malformed"] == 0 and st["failed"] == 0, st
        assert st["batches"] < writes, st  # bursts were batched


def test_json_format_converges(h):
    primary = h.redis("primary")
    caches = [h.redis("cache-a"), h.redis("cache-b")]
    syncs = [h.sync(primary, c, "--message-format", "json", name="sync-%s" % c.name)
             for c in caches]

    writes, secs = json_writer(primary.client(), duration=3.0)
    stopped = time.monotonic()
    rate = writes / secs
    print("json format: %d writes in %.2f s = %.0f writes/s" % (writes, secs, rate))
    assert rate >= MIN_RATE, "writer reached only %.0f writes/s" % rate

    wait_converged(primary, caches, 2.0 * SLOW, stopped)
    writes += fence(primary, caches, "json")
    for s in syncs:
        st = stop_clean(s)
        assert st["received"] == writes and st["applied"] == writes, st
        assert st["malformed"] == 0 and st["failed"] == 0, st


def publish_keys(primary, prefix, n):
    """Writes n string keys and publishes each; returns their names."""
    r = primary.client()
    p = r.pipeline(transaction=False)
    keys = [b"%s:%d" % (prefix, i) for i in range(n)]
    for k in keys:
        p.set(k, b"value of " + k)
        p.publish(CHANNEL, k)
    p.execute()
    return keys


def all_present(cache, keys):
    return all(v == b"value of " + k for k, v in zip(keys, cache.client().mget(keys)))


def test_subscriber_killed_and_restarted(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    s = h.sync(primary, cache)
    first = publish_keys(primary, b"before", 200)
    wait_for(lambda: all_present(cache, first), what="keys before the kill")

    s.kill()  # SIGKILL: no cleanup at all
    wait_for(lambda: primary.client().pubsub_numsub(CHANNEL)[0][1] == 0,
             what="the primary to drop the dead subscriber")
    publish_keys(primary, b"while-dead", 200)  # may stay stale: nobody listens

    s2 = h.sync(primary, cache, name="sync-again")
    later = publish_keys(primary, b"after", 200)
    wait_for(lambda: all_present(cache, later), what="keys published after the restart")
    st = stop_clean(s2)
    assert st["received"] == 200 and st["applied"] == 200, st


def test_cache_restarted(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    s = h.sync(primary, cache)
    first = publish_keys(primary, b"before", 100)
    wait_for(lambda: all_present(cache, first), what="keys before the cache restart")

    cache.stop()
    # Published while the cache is down: kept in the pending set, applied later.
    down = publish_keys(primary, b"while-down", 300)
    wait_for(lambda: "cache unreachable" in s.output() or "writing to the cache failed"
             in s.output(), what="sync to notice the cache is down")
    cache.start()
    later = publish_keys(primary, b"after", 100)
    wait_for(lambda: all_present(cache, later), timeout=20, what="keys after the cache restart")
    wait_for(lambda: all_present(cache, down), timeout=20, what="pending keys applied")
    st = stop_clean(s)
    assert st["failed"] == 0 and st["pending_keys"] == 0, st
    assert st["applied"] == st["received"] == 500, st


def sync_metrics(port):
    """The sync's /metrics as {name: value} (unlabelled series only)."""
    st, _, body = http_get("http://127.0.0.1:%d/metrics" % port)
    assert st == 200
    return {name: v for (name, labels), v in parse_metrics(body.decode()).items() if not labels}


def test_primary_restarted(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    port = free_port()
    s = h.sync(primary, cache, "--sync-metrics-listen", "127.0.0.1:%d" % port)
    first = publish_keys(primary, b"before", 50)
    wait_for(lambda: all_present(cache, first), what="keys before the primary restart")

    primary.stop()
    time.sleep(0.3)  # an outage the log must account for
    primary.start()
    wait_for(lambda: primary.client().pubsub_numsub(CHANNEL)[0][1] == 1, timeout=20,
             what="sync to re-subscribe")
    later = publish_keys(primary, b"after", 50)
    wait_for(lambda: all_present(cache, later), timeout=20, what="keys after the restart")
    m = re.search(r"warning: subscription to cache_update on 127\.0\.0\.1:%d was down for "
                  r"(\d+\.\d{3}) s; updates published in this window were missed"
                  % primary.port, s.output())
    assert m, s.output()
    assert float(m.group(1)) >= 0.3, m.group(0)
    met = sync_metrics(port)
    assert met["keydrift_sync_resubscribes_total"] == 1, met
    assert met["keydrift_sync_subscription_down_seconds_total"] >= 0.3, met
    assert met["keydrift_sync_batches_total"] >= 1, met
    st = stop_clean(s)
    assert st["resubscribes"] == 1 and st["sub_down_s"] >= 0.3, st


def test_json_malformed_messages_counted_and_skipped(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    cache.client().hset("holds-a-hash", "f", "v")
    s = h.sync(primary, cache, "--message-format", "json")
    r = primary.client()
    bad = [
        b"{not json",                                              # bad JSON
        b'{"op":"incr","key":"k"}',                                # unknown op
        b'{"op":"set","value":"v"}',                               # missing key
        b'{"op":"set","key":"k","value":42}',                      # non-string value
        b'{"op":"set","key":"k","value":"v","ttl_ms":-1}',         # bad ttl
        b"\x00\xff binary junk \n" * 20,                           # long, unprintable
    ]
    msgs = [b'{"op":"set","key":"good-1","value":"one"}'] + bad + [
        b'{"op":"set","key":"holds-a-hash","value":"string over a hash"}',
        b'{"op":"set","key":"good-2","value":"two","ttl_ms":60000}',
        b'{"op":"del","key":"good-1"}',
        b'{"op":"set","key":"good-3","value":"three"}',
    ]
    for m in msgs:
        r.publish(CHANNEL, m)
    c = cache.client()
    wait_for(lambda: c.get("good-3") == b"three", what="good messages after the bad ones")
    assert c.get("good-2") == b"two" and 0 < c.pttl("good-2") <= 60000
    assert c.exists("good-1") == 0
    assert c.type("holds-a-hash") == b"hash" and c.hgetall("holds-a-hash") == {b"f": b"v"}
    st = stop_clean(s)
    assert st["received"] == len(msgs), st
    assert st["malformed"] == len(bad), st
    assert st["failed"] == 1 and st["applied"] == 4, st
    out = s.output()
    for reason in ["bad JSON", "unknown op", "missing key", "value is not a string",
                   "ttl_ms is not a positive integer", "WRONGTYPE"]:
        assert reason in out, (reason, out)
    # The excerpt of the binary junk is escaped and bounded.
    line = [ln for ln in out.splitlines() if "\\x00\\xff binary junk" in ln][0]
    excerpt = line.split("): \"", 1)[1][:-1]
    assert len(excerpt) <= 80 and excerpt.endswith("..."), line


def test_key_format_malformed_rate_limited(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    s = h.sync(primary, cache)
    r = primary.client()
    p = r.pipeline(transaction=False)
    for _ in range(300):
        p.publish(CHANNEL, b"")  # the only malformed key message: empty
    p.set("after", "ok")
    p.publish(CHANNEL, "after")
    p.execute()
    wait_for(lambda: cache.client().get("after") == b"ok", what="the good message")
    st = stop_clean(s)
    assert st["malformed"] == 300 and st["applied"] == 1, st
    out = s.output()
    lines = [ln for ln in out.splitlines() if "malformed key message" in ln]
    assert 1 <= len(lines) <= 30, len(lines)
    assert re.search(r"suppressed \d+ more malformed-message warnings", out), out


def test_bad_config_file(h):
    path = h.write_file("x.conf", "primary 127.0.0.1:6379\nchannel updates\nno-such-option 1\n")
    res = h.run_keydrift("sync", path)
    assert res.returncode == 2, res
    assert ("%s:3" % path) in res.stderr.decode() and "no-such-option" in res.stderr.decode()
    assert res.stderr.decode().startswith("keydrift: ")

    res = h.run_keydrift("sync", "--message-format", "xml")
    assert res.returncode == 2 and b"message-format" in res.stderr, res
    res = h.run_keydrift("sync", "--primary", "127.0.0.1:7000", "--cache", "127.0.0.1:7000")
    assert res.returncode == 2 and b"primary" in res.stderr, res
    res = h.run_keydrift("sync", "--help")
    assert res.returncode == 0 and b"usage: keydrift sync" in res.stdout


def test_config_file_used(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    path = h.write_file("sync.conf", "primary %s\ncache %s\nchannel other_channel\n"
                        "message-format json\nsync-batch 4\n" % (primary.addr, cache.addr))
    p = h.keydrift("sync", path)
    wait_for(lambda: primary.client().pubsub_numsub("other_channel")[0][1] == 1,
             what="subscription on the configured channel")
    r = primary.client()
    for i in range(20):
        r.publish("other_channel", json.dumps({"op": "set", "key": "k%d" % i, "value": "v"}))
    wait_for(lambda: cache.client().get("k19") == b"v", what="messages applied")
    st = stop_clean(p)
    assert st["applied"] == 20 and st["batches"] >= 5, st  # at most 4 messages a batch


def test_sigint_exits_cleanly(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    s = h.sync(primary, cache)
    s.signal(signal.SIGINT)
    wait_for(lambda: not s.alive(), what="exit on SIGINT")
    assert s.p.returncode == 0, s.output()
    assert "sync summary: received=0" in s.output()
    assert os.path.exists(s.logpath)


def test_pending_set_bound_while_cache_down(h):
    primary, cache = h.redis("primary"), h.redis("cache")
    port = free_port()
    s = h.sync(primary, cache, "--sync-metrics-listen", "127.0.0.1:%d" % port)
    cache.stop()
    r = primary.client()
    n = 100000 + 100  # the pending set keeps 100000 keys
    p = r.pipeline(transaction=False)
    for i in range(n):
        p.publish(CHANNEL, b"absent:%d" % i)
        if i % 5000 == 4999:
            p.execute()
    p.execute()
    wait_for(lambda: "pending set full (100000 keys" in s.output(), timeout=30,
             what="the overflow warning")
    met = wait_for(lambda: (lambda m: m["keydrift_sync_pending_dropped_total"] == 100 and m)(
        sync_metrics(port)), what="the drops on /metrics")
    assert met["keydrift_sync_pending_keys"] == 100000, met
    cache.start()
    wait_for(lambda: "pending keys applied" in s.output(), timeout=30,
             what="the pending keys to be applied")
    wait_for(lambda: sync_metrics(port)["keydrift_sync_pending_keys"] == 0,
             what="the pending gauge back to 0")
    st = stop_clean(s)
    assert st["received"] == n and st["pending_dropped"] == 100, st
    assert st["applied"] == 100000 and st["failed"] == 100 and st["pending_keys"] == 0, st


def test_sync_metrics_endpoint_and_client_name(h):
    import subprocess
    primary = h.redis("primary")
    cache = h.redis("cache")
    port = free_port()
    h.sync(primary, cache, "--sync-metrics-listen", "127.0.0.1:%d" % port)
    p = primary.client()
    names = [c.get("name") for c in p.client_list(_type="pubsub")]
    assert "keydrift-sync:%s" % cache.addr in names, names
    for i in range(10):
        p.set("m:%d" % i, i)
        p.publish("cache_update", "m:%d" % i)
    p.publish("cache_update", "")  # malformed: empty key
    url = "http://127.0.0.1:%d/metrics" % port

    def scraped():
        # Both counted: the applied ones and the malformed one may be handled
        # in different batches, and a scrape can come between them.
        st, hdr, body = http_get(url)
        m = parse_metrics(body.decode())
        return m.get(("keydrift_sync_messages_total", frozenset({("outcome", "applied")}))) == 10 \
            and m.get(("keydrift_sync_messages_total",
                       frozenset({("outcome", "malformed")}))) == 1 and (body, m)
    body, m = wait_for(scraped, what="applied=10 and malformed=1 on /metrics")
    assert m[("keydrift_sync_messages_total", frozenset({("outcome", "received")}))] == 11
    assert m[("keydrift_sync_messages_total", frozenset({("outcome", "malformed")}))] == 1
    r = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert r.returncode == 0, r.stdout + r.stderr
    # 300 updates of one key in one pipeline: each batch applies the key
    # once; the other messages in it are counted as coalesced.
    b0, c0 = (m[("keydrift_sync_batches_total", frozenset())],
              m[("keydrift_sync_coalesced_total", frozenset())])
    pipe = p.pipeline(transaction=False)
    for i in range(300):
        pipe.set("co", i)
        pipe.publish("cache_update", "co")
    pipe.execute()
    wait_for(lambda: parse_metrics(http_get(url)[2].decode()).get(
        ("keydrift_sync_messages_total", frozenset({("outcome", "received")}))) == 311,
        what="the 300 received")
    wait_for(lambda: cache.client().get("co") == b"299", what="the last value applied")
    met = sync_metrics(port)
    batches = met["keydrift_sync_batches_total"] - b0
    coalesced = met["keydrift_sync_coalesced_total"] - c0
    assert batches + coalesced == 300 and coalesced > 0, (batches, coalesced)
