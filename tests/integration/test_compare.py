"""Key comparison (agent/compare.c) against real servers, through cmp-driver.

Two independent redis-servers stand in for a primary and a replica, so each
test can hold them in any state: equal values, differing ones, different
encodings of one value, large values, binary key names.
"""
import os
import socket
import socketserver
import subprocess
import threading

import pytest

from harness import SLOW

DRIVER = os.environ.get("KEYDRIFT_CMP_DRIVER")
pytestmark = pytest.mark.skipif(not DRIVER,
                                reason="KEYDRIFT_CMP_DRIVER not set (make integration sets it)")

MB = 1000 * 1000


def run(primary, replica, keys, max_bytes=MB, tol=1000, opts=()):
    """{key: (kind, pdigest, rdigest)} from the driver, plus its stderr."""
    addr = [s if isinstance(s, str) else s.addr for s in (primary, replica)]
    argv = [DRIVER] + list(opts) + addr + [str(max_bytes), str(tol)]
    argv += [k.hex() or "-" for k in keys]
    r = subprocess.run(argv, capture_output=True, timeout=120 * SLOW)
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.decode().splitlines():
        hk, kind, pd, rd = line.split()
        out[b"" if hk == "-" else bytes.fromhex(hk)] = (kind, pd, rd)
    assert set(out) == set(keys), (out, keys)
    return out, r.stderr.decode()


def kinds(primary, replica, keys, **kw):
    return {k: v[0] for k, v in run(primary, replica, keys, **kw)[0].items()}


# One key of every type; `variant` changes one element (same length).
TYPES = [b"str", b"hash", b"set", b"zset", b"list", b"stream"]


def fill(c, variant=0, n=20):
    v = str(variant)
    c.set("str", "hello world " + v)
    c.hset("hash", mapping={("f%d" % i): ("v%d" % i if i != 7 else "v" + v) for i in range(n)})
    c.sadd("set", *(["m%d" % i for i in range(n - 1)] + ["x" + v]))
    c.zadd("zset", {("m%d" % i): (i + 0.5 if i != 3 else 100 + variant) for i in range(n)})
    c.rpush("list", *(["e%d" % i if i != 11 else "e" + v for i in range(n)]))
    for i in range(n):
        c.xadd("stream", {"f": "v%d" % i if i != 5 else "v" + v}, id="1-%d" % (i + 1))


def body(c, key):
    """A DUMP payload without its 10-byte trailer."""
    return c.dump(key)[:-10]


def net_out(server):
    return server.info("stats")["total_net_output_bytes"]


@pytest.fixture
def pair(h):
    return h.redis("primary"), h.redis("replica")


def test_identical_values_of_every_type_are_equal(pair):
    p, r = pair
    fill(p.client())
    fill(r.client())
    res, _ = run(p, r, TYPES)
    for k in TYPES:
        kind, pd, rd = res[k]
        assert kind == "equal", (k, res[k])
        assert pd == rd and int(pd, 16) != 0, (k, res[k])


def test_a_differing_value_of_every_type_is_value(pair):
    p, r = pair
    fill(p.client(), 0)
    fill(r.client(), 1)
    res, _ = run(p, r, TYPES)
    for k in TYPES:
        kind, pd, rd = res[k]
        assert kind == "value", (k, res[k])
        assert pd != rd, (k, res[k])


def test_different_types_are_type(pair):
    p, r = pair
    pc, rc = p.client(), r.client()
    pc.set("a", "1")
    rc.sadd("a", "1")
    pc.hset("b", "f", "v")
    rc.zadd("b", {"f": 1})
    pc.rpush("c", "x")
    rc.xadd("c", {"x": "y"})
    res, _ = run(p, r, [b"a", b"b", b"c"])
    for k, (kind, pd, rd) in res.items():
        assert kind == "type" and pd != rd, (k, kind)


def test_missing_extra_gone(pair):
    p, r = pair
    pc, rc = p.client(), r.client()
    pc.set("only-primary", "v")
    rc.set("only-replica", "v")
    pc.set("expiring", "v", px=300 * 1000)
    pc.set("about-to-expire", "v", px=3000)
    keys = [b"only-primary", b"only-replica", b"nowhere", b"expiring", b"about-to-expire"]
    assert kinds(p, r, keys, tol=10000) == {
        b"only-primary": "missing", b"only-replica": "extra", b"nowhere": "gone",
        b"expiring": "missing",
        # Below the TTL tolerance on the primary: not reported missing.
        b"about-to-expire": "equal"}
    # missing-is-divergence no: a miss is harmless, an extra key is not.
    got = kinds(p, r, keys, tol=10000, opts=["-m"])
    assert got[b"only-primary"] == "equal" and got[b"expiring"] == "equal"
    assert got[b"only-replica"] == "extra"


def test_ttl_beyond_tolerance_and_lag(pair):
    p, r = pair
    pc, rc = p.client(), r.client()
    for c in (pc, rc):
        for k in ("no-ttl-on-replica", "far", "near", "lagged", "no-ttl-on-primary"):
            c.set(k, "same")
    pc.pexpire("no-ttl-on-replica", 600 * 1000)
    rc.pexpire("no-ttl-on-primary", 600 * 1000)
    pc.pexpire("far", 600 * 1000)
    rc.pexpire("far", 300 * 1000)
    pc.pexpire("near", 600 * 1000)
    rc.pexpire("near", 600 * 1000 - 400)
    pc.pexpire("lagged", 600 * 1000)
    rc.pexpire("lagged", 600 * 1000 - 5000)
    keys = [b"no-ttl-on-replica", b"no-ttl-on-primary", b"far", b"near", b"lagged"]
    assert kinds(p, r, keys, tol=2000) == {
        b"no-ttl-on-replica": "ttl", b"no-ttl-on-primary": "ttl", b"far": "ttl",
        b"near": "equal", b"lagged": "ttl"}
    # 5 s apart is within 2 s of tolerance plus 4 s of replica lag.
    assert kinds(p, r, [b"lagged"], tol=2000, opts=["-l", "4000"])[b"lagged"] == "equal"


ENCODING_ARGS = ["--hash-max-listpack-entries", "0", "--set-max-intset-entries", "0",
                 "--zset-max-listpack-entries", "0", "--list-max-listpack-size", "1",
                 "--list-compress-depth", "1", "--stream-node-max-entries", "3"]


def test_same_value_in_another_encoding_is_equal(h):
    p = h.redis("primary")
    r = h.redis("replica", args=ENCODING_ARGS)
    pc, rc = p.client(), r.client()
    fill(pc)
    fill(rc)
    pc.sadd("intset", *range(50))
    rc.sadd("intset", *range(50))
    enc = {k: (pc.object("encoding", k), rc.object("encoding", k))
           for k in ("hash", "intset", "zset")}
    assert enc == {"hash": (b"listpack", b"hashtable"), "intset": (b"intset", b"hashtable"),
                   "zset": (b"listpack", b"skiplist")}, enc
    keys = [b"hash", b"intset", b"zset", b"list", b"stream", b"str"]
    # The payloads really differ (all but the string), so only the deep
    # comparison can call them equal.
    for k in keys[:-1]:
        assert body(pc, k) != body(rc, k), k
    res, err = run(p, r, keys)
    for k in keys:
        kind, pd, rd = res[k]
        assert kind == "equal" and pd == rd, (k, res[k], err)

    # A real difference is still found across encodings.
    rc.hset("hash", "f3", "changed")
    rc.srem("intset", 7)
    rc.sadd("intset", 1000)
    rc.zincrby("zset", 0.25, "m2")
    rc.lset("list", 4, "changed")
    assert kinds(p, r, keys[:4]) == {k: "value" for k in keys[:4]}


DEEP_READS = ("hgetall", "smembers", "lrange", "xrange", "zrange", "type")


def test_servers_digests_answer_for_values_in_another_encoding(h):
    """Where both servers allow DEBUG DIGEST-VALUE, values whose payloads
    differ only by encoding are called equal from the servers' own digests,
    with none of their elements fetched. A sorted set whose digest follows its
    encoding and a real difference are still compared element by element,
    and a server that refuses DEBUG gets the comparison without it."""
    p = h.redis("primary", args=["--enable-debug-command", "yes"])
    r = h.redis("replica", args=ENCODING_ARGS + ["--enable-debug-command", "yes"])
    r2 = h.redis("replica2", args=ENCODING_ARGS)  # DEBUG refused (redis 7's default)
    for c in (p.client(), r.client(), r2.client()):
        fill(c)
        c.zadd("zneg", {"a": 0.1, "b": "-0"})  # -0: 0 in a listpack, -0 in a skiplist
    keys = [b"hash", b"set", b"list", b"stream", b"zset", b"zneg"]
    for k in keys:
        assert body(p.client(), k) != body(r.client(), k), k

    def reads(server):
        return {c: calls(server, c) for c in ("debug",) + DEEP_READS}

    before = {s.name: reads(s) for s in (p, r)}
    res, err = run(p, r, keys)
    assert all(v[0] == "equal" and v[1] == v[2] for v in res.values()), (res, err)
    for s in (p, r):
        d = {c: n - before[s.name][c] for c, n in reads(s).items()}
        # One digest per key. Only the sorted set with a score its two
        # encodings hold differently was then read (its TYPE, then its
        # members, then its TYPE again: still there); the others not at all.
        assert d == {"debug": 6, "hgetall": 0, "smembers": 0, "lrange": 0, "xrange": 0,
                     "zrange": 1, "type": 2}, (s.name, d)

    # A real difference: the digests differ and the values say how.
    rc = r.client()
    rc.hset("hash", "f3", "changed")
    rc.lset("list", 4, "changed")
    assert kinds(p, r, [b"hash", b"list", b"set"]) == \
        {b"hash": "value", b"list": "value", b"set": "equal"}

    # DEBUG refused by the replica: the same verdicts, from the values.
    before = reads(r2)
    assert kinds(p, r2, keys) == {k: "equal" for k in keys}
    d = {c: n - before[c] for c, n in reads(r2).items()}
    assert d["debug"] == 0 and d["hgetall"] == 1 and d["smembers"] == 1, d


def test_score_formatting_does_not_matter(pair):
    p, r = pair
    # The same doubles written differently: equal, whatever the text.
    p.client().zadd("z", {"a": "0.1", "b": "1e3", "c": "-0"})
    r.client().zadd("z", {"a": "0.10000000000000000555", "b": "1000", "c": "0"})
    assert kinds(p, r, [b"z"]) == {b"z": "equal"}


def test_large_string_is_sampled_not_fetched(pair):
    p, r = pair
    pc, rc = p.client(timeout=30), r.client(timeout=30)
    big = b"x" * (50 * MB)
    pc.set("big", big)
    rc.set("big", big)
    before = (net_out(p), net_out(r))
    res, _ = run(p, r, [b"big"])
    sent = (net_out(p) - before[0], net_out(r) - before[1])
    assert res[b"big"][0] == "equal", res
    # INFO itself is a few KB; a whole value would be 50 MB.
    assert max(sent) < 200 * 1000, sent

    # Another length: found at once. The same length, a byte changed at
    # either end: the first and last ranges are always in the sample.
    rc.append("big", "y")
    assert kinds(p, r, [b"big"])[b"big"] == "value"
    rc.set("big", big)
    rc.setrange("big", 50 * MB - 1, "z")
    assert kinds(p, r, [b"big"])[b"big"] == "value"
    rc.set("big", big)
    rc.setrange("big", 0, "z")
    before = (net_out(p), net_out(r))
    assert kinds(p, r, [b"big"])[b"big"] == "value"
    assert max(net_out(p) - before[0], net_out(r) - before[1]) < 200 * 1000


def fill_large(c, n, extra=0):
    pipe = c.pipeline(transaction=False)
    for start in range(0, n + extra, 1000):
        rng = range(start, min(start + 1000, n + extra))
        pipe.hset("lhash", mapping={"field:%d" % i: "value:%d" % i for i in rng})
        pipe.sadd("lset", *("member:%d" % i for i in rng))
        pipe.zadd("lzset", {"member:%d" % i: i for i in rng})
        pipe.rpush("llist", *("element:%d" % i for i in rng))
    pipe.execute()


LARGE = [b"lhash", b"lset", b"lzset", b"llist"]


def test_large_aggregates_are_sampled_not_fetched(h):
    p = h.redis("primary")
    r = h.redis("replica", args=ENCODING_ARGS)
    fill_large(p.client(), 100000)
    fill_large(r.client(), 100000)
    for k in LARGE:
        assert p.client().memory_usage(k) > 1 * MB, k
    before = (net_out(p), net_out(r))
    res, err = run(p, r, LARGE, max_bytes=100 * 1000)
    sent = (net_out(p) - before[0], net_out(r) - before[1])
    for k in LARGE:
        assert res[k][0] == "equal" and res[k][1] == res[k][2], (k, res[k], err)
    assert max(sent) < 100 * 1000, sent

    # One more element on the replica: the lengths differ.
    r.client().flushall()
    fill_large(r.client(), 100000, extra=1)
    assert kinds(p, r, LARGE, max_bytes=100 * 1000) == {k: "value" for k in LARGE}
    # A list's ends are always sampled.
    r.client().delete("llist")
    fill_large(r.client(), 100000)
    r.client().lset("llist", -1, "changed")
    assert kinds(p, r, [b"llist"], max_bytes=100 * 1000)[b"llist"] == "value"


def test_large_hash_samples_the_same_fields_at_every_look(pair):
    # Every value differs at the same length: each look finds it, and two
    # looks sample the same fields (one HSCAN page, read by a script that
    # keeps the values in the server), so their digests agree and a
    # confirmation can tell the hash did not change.
    p, r = pair
    for s, fmt in ((p, "value:%06d"), (r, "VALUE:%06d")):
        pipe = s.client().pipeline(transaction=False)
        for start in range(0, 20000, 1000):
            pipe.hset("lhash", mapping={"field:%d" % i: fmt % i
                                        for i in range(start, start + 1000)})
        pipe.execute()
        s.client().config_resetstat()
    looks = [run(p, r, [b"lhash"], max_bytes=100 * 1000)[0][b"lhash"] for _ in range(2)]
    assert looks[0][0] == "value" and looks[0] == looks[1], looks
    assert calls(p, "hscan") == 2 and calls(p, "hrandfield") == 0
    # HSCAN denied (an ACL from before it was needed): random fields, still
    # found, and the other keys still read by the fetch script.
    for s in pair:
        s.client().execute_command("ACL", "SETUSER", "default", "-hscan")
        s.client().set("small", "v")
    e0 = calls(p, "eval")
    assert kinds(p, r, [b"lhash", b"small"], max_bytes=100 * 1000) == \
        {b"lhash": "value", b"small": "equal"}
    assert calls(p, "hrandfield") == 1 and calls(p, "eval") > e0
    # Scripting denied: random fields instead; still found.
    for s in pair:
        s.client().execute_command("ACL", "SETUSER", "default", "-@scripting")
    assert kinds(p, r, [b"lhash"], max_bytes=100 * 1000)[b"lhash"] == "value"
    assert calls(p, "hscan") == 2 and calls(p, "hrandfield") == 2


def test_large_stream_compares_length_and_ends(pair):
    p, r = pair
    for s in pair:
        pipe = s.client().pipeline(transaction=False)
        for i in range(20000):
            pipe.xadd("lstream", {"n": str(i), "pad": "p" * 20}, id="1-%d" % (i + 1))
        pipe.execute()
    assert kinds(p, r, [b"lstream"], max_bytes=100 * 1000)[b"lstream"] == "equal"
    r.client().xadd("lstream", {"n": "x"}, id="2-1")
    assert kinds(p, r, [b"lstream"], max_bytes=100 * 1000)[b"lstream"] == "value"


BINARY_KEYS = [b"nul\x00in\x00it", b"line\nbreak\r\n", b"\xff\xfe\x80", "ключ-鍵".encode(),
               b"", b" ", b"*3\r\n$3\r\nSET"]


def test_binary_keys(h):
    p = h.redis("primary")
    r = h.redis("replica", args=ENCODING_ARGS)
    pc, rc = p.client(), r.client()
    for i, k in enumerate(BINARY_KEYS):
        pc.set(k, b"v\x00%d" % i)
        rc.set(k, b"v\x00%d" % i)
        # A hash goes through the deep comparison (the encodings differ).
        pc.hset(k + b"\x00h", mapping={b"f\x00": b"\xff", b"g": b"1"})
        rc.hset(k + b"\x00h", mapping={b"f\x00": b"\xff", b"g": b"1"})
    hashes = [k + b"\x00h" for k in BINARY_KEYS]
    assert kinds(p, r, BINARY_KEYS + hashes) == {k: "equal" for k in BINARY_KEYS + hashes}
    for k in BINARY_KEYS:
        rc.set(k, b"other")
        rc.hset(k + b"\x00h", b"f\x00", b"\xfe")
    assert kinds(p, r, BINARY_KEYS + hashes) == {k: "value" for k in BINARY_KEYS + hashes}
    rc.delete(*BINARY_KEYS)
    assert kinds(p, r, BINARY_KEYS) == {k: "missing" for k in BINARY_KEYS}


def test_memory_and_dump_denied_still_compare(h):
    # MEMORY USAGE and DUMP unavailable (as with a restrictive ACL): sizes
    # unknown, payloads unknown; the deep comparison still decides.
    p = h.redis("primary", args=["--rename-command", "MEMORY", ""])
    r = h.redis("replica", args=["--rename-command", "DUMP", ""] + ENCODING_ARGS)
    fill(p.client())
    fill(r.client())
    res, err = run(p, r, TYPES)
    assert {k: v[0] for k, v in res.items()} == {k: "equal" for k in TYPES}, err
    r.client().flushall()
    fill(r.client(), 1)
    assert kinds(p, r, TYPES) == {k: "value" for k in TYPES}
    # A large hash with sizes unknown is judged from its length: sampled.
    fill_large(p.client(), 20000)
    fill_large(r.client(), 20000)
    res, err = run(p, r, LARGE, max_bytes=100 * 1000)
    assert {k: v[0] for k, v in res.items()} == {k: "equal" for k in LARGE}, err


def calls(server, cmd):
    return server.client().info("commandstats").get("cmdstat_" + cmd, {}).get("calls", 0)


def fill_small(pc, rc, keys):
    for c in (pc, rc):
        pipe = c.pipeline(transaction=False)
        for i, k in enumerate(keys):
            pipe.set(k, b"v%d" % i)
        pipe.expire(keys[1], 1000)
        pipe.execute()


def test_fetch_runs_one_script_per_chunk_with_the_commands_verdicts(pair):
    # PTTL, MEMORY USAGE and DUMP run in one script per chunk of 256 keys; the
    # same keys read with the commands (scripting denied to the user, so the
    # fetch falls back) get the same verdicts and digests.
    p, r = pair
    pc, rc = p.client(), r.client()
    keys = [b"k%d" % i for i in range(600)] + [b"", b"bin\x00\xff"]
    fill_small(pc, rc, keys)
    rc.set(b"k5", b"other")
    rc.delete(b"k7")
    pc.delete(b"k9")
    pc.delete(b"k11")
    pc.hset(b"k11", mapping={b"a": b"1"})  # hashes of other lengths
    rc.delete(b"k11")
    rc.hset(b"k11", mapping={b"a": b"1", b"b": b"2"})
    pc.pexpire(b"k13", 100 * 1000)
    rc.pexpire(b"k13", 900 * 1000)
    with_script, _ = run(p, r, keys)
    assert calls(p, "eval") == 3 and calls(r, "eval") == 3
    assert calls(p, "pttl") == len(keys) and calls(r, "pttl") == len(keys)
    kinds_seen = {k: v[0] for k, v in with_script.items()}
    assert {k: v for k, v in kinds_seen.items() if v != "equal"} == {
        b"k5": "value", b"k7": "missing", b"k9": "extra", b"k11": "value", b"k13": "ttl"}
    for s in (p, r):
        s.client().execute_command("ACL", "SETUSER", "default", "-@scripting")
        s.client().config_resetstat()
    with_commands, err = run(p, r, keys)
    assert calls(p, "eval") == 0 and calls(p, "pttl") == len(keys)
    assert with_commands == with_script, err


def test_script_reply_is_bounded_and_resumed(pair):
    # A script call stops once its DUMP payloads reach a few MB; the fetch
    # asks again for the rest, so every key is still read once.
    p, r = pair
    pc, rc = p.client(timeout=30), r.client(timeout=30)
    keys = [b"big%d" % i for i in range(12)]
    vals = [os.urandom(600 * 1000) for _ in keys]  # random: DUMP compresses repeats
    for c in (pc, rc):
        for i, k in enumerate(keys):
            c.set(k, vals[i])
    res, err = run(p, r, keys)
    assert {k: v[0] for k, v in res.items()} == {k: "equal" for k in keys}, err
    assert all(v[1] == v[2] for v in res.values())
    assert (calls(p, "eval"), calls(p, "dump")) == (2, len(keys))
    rc.setrange(b"big11", 0, b"z")
    assert kinds(p, r, keys)[b"big11"] == "value"


def test_unreachable_node_is_error(pair):
    p, _ = pair
    p.client().set("k", "v")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % s.getsockname()[1]
        res, err = run(p, dead, [b"k", b"other"])
    assert {k: v[0] for k, v in res.items()} == {b"k": "error", b"other": "error"}
    assert "replica" in err


class FakeRedis(socketserver.StreamRequestHandler):
    """A fake server: reads each command and writes what answer(argv)
    returns, until the client hangs up. It answers a fetch (no script) for a
    key without expiry of `size` bytes, whose DUMP payload starts with
    head(key) and names the server's port, so two servers' payloads differ."""
    size = 100

    def handle(self):
        while True:
            line = self.rfile.readline()
            if not line:
                return
            argv = []
            for _ in range(int(line[1:])):
                n = int(self.rfile.readline()[1:])
                argv.append(self.rfile.read(n + 2)[:-2])
            self.wfile.write(self.answer(argv))

    def head(self, key):
        return b"\x00"

    def answer(self, argv):
        cmd, key = argv[0].upper(), argv[-1]
        if cmd == b"PTTL":
            return b":-1\r\n"
        if cmd == b"MEMORY":
            return b":%d\r\n" % self.size
        if cmd == b"DUMP":
            port = str(self.server.server_address[1]).encode()
            return bulk(self.head(key) + port + b"\x0a\x00" + b"C" * 8)
        return b"-ERR unexpected " + argv[0] + b"\r\n"


def bulk(payload):
    return b"$%d\r\n%s\r\n" % (len(payload), payload)


class FakeModuleRedis(FakeRedis):
    """Answers like a server holding a module-type key (TYPE says so), whose
    module gives every value the same DEBUG DIGEST-VALUE."""
    digests_asked = 0

    def head(self, key):
        return b"\x07module-"

    def answer(self, argv):
        cmd = argv[0].upper()
        if cmd == b"TYPE":
            return b"+MBbloom--\r\n"
        if cmd == b"DEBUG":
            FakeModuleRedis.digests_asked += 1
            return b"*1\r\n+%s\r\n" % (b"ab" * 20)
        return super().answer(argv)


class DyingRedis(FakeModuleRedis):
    """Like FakeModuleRedis, but drops the connection when asked for TYPE."""

    def handle(self):
        self.rfile = _CloseOnType(self.rfile)
        try:
            super().handle()
        except ConnectionAbortedError:
            pass


class _CloseOnType:
    def __init__(self, f):
        self.f = f

    def readline(self):
        return self.f.readline()

    def read(self, n):
        data = self.f.read(n)
        if data[:4].upper() == b"TYPE":
            raise ConnectionAbortedError()
        return data


class VanishingRedis(FakeRedis):
    """Answers like a server whose keys are deleted on both nodes right after
    their first TYPE: the string "s" and the hash "h" then read as nil and
    as an empty hash. Their payloads differ from node to node, so they get
    the deep comparison. No scripts, no DEBUG."""
    size = 60

    def head(self, key):
        return b"\x00" if key == b"s" else b"\x04"

    def answer(self, argv):
        cmd, key = argv[0].upper(), argv[-1]
        if cmd == b"TYPE":
            types = self.server.__dict__.setdefault("types", {})
            seen = types.get(key, 0)
            types[key] = seen + 1
            return b"+%s\r\n" % ((b"string" if key == b"s" else b"hash") if not seen else b"none")
        if cmd in (b"STRLEN", b"HLEN"):
            return b":2\r\n"
        if cmd == b"GET":
            return b"$-1\r\n"
        if cmd == b"HGETALL":
            return b"*0\r\n"
        return super().answer(argv)


class StayingRedis(VanishingRedis):
    """Like VanishingRedis, but its keys stay: TYPE always names them."""

    def answer(self, argv):
        cmd, key = argv[0].upper(), argv[-1]
        if cmd == b"TYPE":
            return b"+%s\r\n" % (b"string" if key == b"s" else b"hash")
        if cmd == b"GET":
            return bulk(b"xx")
        if cmd == b"HGETALL":
            return b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
        return super().answer(argv)


def test_key_deleted_from_one_node_during_deep_comparison_is_no_verdict():
    # Deleted from one node only while it was read: it changed under the
    # comparison, which says nothing (error, the next look decides) rather
    # than gone, which would resolve a confirmed divergence as deleted.
    servers, addrs = fake_servers(VanishingRedis, StayingRedis)
    try:
        res, err = run(addrs[0], addrs[1], [b"s", b"h"])
        assert {k: v[0] for k, v in res.items()} == {b"s": "error", b"h": "error"}, (res, err)
        assert "changed during the comparison" in err
    finally:
        stop(servers)


def test_key_deleted_during_deep_comparison_is_gone():
    # Deleted on both nodes between its TYPE and its value, a key reads as
    # nil (or empty) on both, which compare equal: it is gone, not equal
    # (a confirmed divergence would otherwise be resolved as self-healed).
    servers, addrs = fake_servers(VanishingRedis, VanishingRedis)
    try:
        res, err = run(addrs[0], addrs[1], [b"s", b"h"])
        assert {k: v[0] for k, v in res.items()} == {b"s": "gone", b"h": "gone"}, (res, err)
    finally:
        stop(servers)


class GoneRedis(VanishingRedis):
    """Like VanishingRedis, but its keys are gone already at their first
    TYPE: deleted between the fetch and the deep comparison."""

    def answer(self, argv):
        if argv[0].upper() == b"TYPE":
            return b"+none\r\n"
        return super().answer(argv)


def test_key_deleted_between_fetch_and_deep_comparison():
    # From both nodes: gone. From one: no verdict, as above (gone would
    # resolve a confirmed divergence as deleted while the primary holds it).
    for handlers, want in (((GoneRedis, GoneRedis), "gone"), ((GoneRedis, StayingRedis), "error"),
                           ((StayingRedis, GoneRedis), "error")):
        servers, addrs = fake_servers(*handlers)
        try:
            res, err = run(addrs[0], addrs[1], [b"s", b"h"])
            assert {k: v[0] for k, v in res.items()} == {b"s": want, b"h": want}, (handlers, res, err)
        finally:
            stop(servers)


def fake_servers(*handlers):
    servers = []
    for handler in handlers:
        s = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
    return servers, ["127.0.0.1:%d" % s.server_address[1] for s in servers]


def stop(servers):
    for s in servers:
        s.shutdown()
        s.server_close()


def test_module_type_is_skipped():
    # Never called equal from the servers' digests either: a module's value
    # is digested by the module, if at all.
    servers, addrs = fake_servers(FakeModuleRedis, FakeModuleRedis)
    try:
        res, err = run(addrs[0], addrs[1], [b"bloom"])
        assert res[b"bloom"][0] == "skipped", (res, err)
        assert "unsupported type MBbloom--" in err
        assert FakeModuleRedis.digests_asked == 0
    finally:
        stop(servers)


def test_connection_lost_during_deep_comparison_is_error():
    # The payloads differ, then the primary hangs up on TYPE: an error, with
    # the replica's pending reply read and freed (the ASan build checks).
    for handlers in ((DyingRedis, FakeModuleRedis), (FakeModuleRedis, DyingRedis)):
        servers, addrs = fake_servers(*handlers)
        try:
            res, err = run(addrs[0], addrs[1], [b"k"])
            assert res[b"k"][0] == "error", (res, err)
        finally:
            stop(servers)
