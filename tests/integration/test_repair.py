"""Repair: each strategy fixes each kind it applies to, verified on the replica
and in SQLite; never an older value over a newer one; the mass-repair guard."""
import random
import sqlite3
import threading
import time

from harness import SLOW, Agent, SlowSubscriber, wait_for
from test_detect import BIN_KEY, tamper, write_keys

KINDS = {b"k:value": "value", b"k:missing": "missing", b"k:type": "type", b"k:ttl": "ttl",
         b"k:extra": "extra", BIN_KEY: "value"}


def rows(db, sql, *args):
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def same(primary, replica, key):
    p, r = primary.client(), replica.client()
    if p.exists(key) != r.exists(key):
        return False
    if not p.exists(key):
        return True
    ttl_p, ttl_r = p.pttl(key), r.pttl(key)
    if (ttl_p < 0) != (ttl_r < 0) or abs(ttl_p - ttl_r) > 2000:
        return False
    t = p.type(key)
    if t != r.type(key):
        return False
    if t == b"string":
        return p.get(key) == r.get(key)
    if t == b"hash":
        return p.hgetall(key) == r.hgetall(key)
    return True


def repaired_all(agent, replica_name, strategy):
    got = rows(agent.db, "SELECT d.key, d.kind, r.strategy, r.outcome, r.trigger FROM divergences d "
               "JOIN repairs r ON r.divergence_id = d.id WHERE d.replica = ? AND "
               "d.state = 'resolved' AND d.resolution = 'repaired' AND r.outcome = 'repaired'",
               replica_name)
    found = {bytes(k): (kind, s, t) for k, kind, s, o, t in got}
    return found if set(found) >= set(KINDS) else None


def run_repair(h, kind, strategy_conf=""):
    primary = h.redis("primary")
    if kind == "native":
        replica = h.replica("replica", primary)
    else:
        replica = h.redis("cache")
        h.sync(primary, replica)
    tamper(replica, write_keys(primary))
    agent = Agent(h, primary, [("r1", replica, kind)],
                  extra="repair auto\nrepair-max-share 100%\n" + strategy_conf)
    found = wait_for(lambda: repaired_all(agent, "r1", None), timeout=30,
                     what="every divergence repaired and recorded")
    for k, kind_name in KINDS.items():
        assert found[k][0] == kind_name, (k, found[k])
        assert found[k][2] == "auto"
        assert same(primary, replica, k), k
    assert agent.metric("keydrift_divergent_keys", replica="r1", kind="value") == 0
    return agent, found


def test_rewrite_repairs_every_kind_on_a_native_replica(h):
    agent, found = run_repair(h, "native")
    assert {v[1] for v in found.values()} == {"rewrite"}
    assert agent.metric("keydrift_repairs_total", replica="r1", strategy="rewrite",
                        outcome="repaired") >= len(KINDS)


def test_publish_repairs_every_kind_on_a_pubsub_cache(h):
    agent, found = run_repair(h, "pubsub")
    assert {v[1] for v in found.values()} == {"publish"}


def test_write_repairs_every_kind_on_a_pubsub_cache(h):
    agent, found = run_repair(h, "pubsub", "repair-pubsub-strategy write\n")
    assert {v[1] for v in found.values()} == {"write"}


def test_publish_with_json_format_repairs_strings(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    h.sync(primary, cache, "--message-format", "json")
    p, c = primary.client(), cache.client()
    p.set("j:value", "new")
    p.set("j:missing", "here")
    c.set("j:value", "old")
    c.set("j:extra", "only on the cache")
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="repair auto\nmessage-format json\nrepair-max-share 100%\n")
    wait_for(lambda: c.get("j:value") == b"new" and c.get("j:missing") == b"here"
             and not c.exists("j:extra"), timeout=20, what="json repairs applied")
    wait_for(lambda: len(rows(agent.db, "SELECT 1 FROM repairs WHERE outcome='repaired' AND "
                              "strategy='publish'")) >= 3, what="repairs recorded")


def test_dry_run_changes_nothing(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    h.sync(primary, cache)
    primary.client().set("d:key", "primary")
    primary.client().publish("cache_update", "d:key")
    wait_for(lambda: cache.client().get("d:key") == b"primary", what="synced")
    cache.client().set("d:key", "stale")
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="repair auto\nrepair-dry-run yes\n")
    wait_for(lambda: rows(agent.db, "SELECT 1 FROM repairs WHERE outcome='dry-run'"),
             timeout=20, what="a dry-run repair recorded")
    time.sleep(0.5)
    assert cache.client().get("d:key") == b"stale"
    assert "repair (dry run): would publish" in agent.proc.output()


def test_write_strategy_never_writes_to_a_native_replica(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    replica.client().config_set("replica-read-only", "no")
    primary.client().set("n:key", "primary")
    wait_for(lambda: replica.client().get("n:key") == b"primary", what="replicated")
    replica.client().set("n:key", "stale")
    # Misconfigured on purpose: a native replica declared as a pubsub cache.
    agent = Agent(h, primary, [("c1", replica, "pubsub")],
                  extra="repair auto\nrepair-pubsub-strategy write\nrepair-max-share 100%\n")
    wait_for(lambda: rows(agent.db, "SELECT error FROM repairs WHERE outcome='failed'"),
             timeout=20, what="the repair refused")
    err = rows(agent.db, "SELECT error FROM repairs WHERE outcome='failed'")[0][0]
    assert "not a master" in err, err
    assert replica.client().get("n:key") == b"stale"


def test_never_older_over_newer_under_concurrent_writes(h):
    """Versioned values, lossy sync, auto-repair: no replica ever goes back."""
    primary = h.redis("primary")
    native = h.replica("replica", primary)
    caches = [h.redis("cache-a"), h.redis("cache-b")]
    syncs = [h.sync(primary, c, name="sync-%d" % i) for i, c in enumerate(caches)]
    agent = Agent(h, primary, [("r1", native, "native"), ("ca", caches[0], "pubsub"),
                               ("cb", caches[1], "pubsub")],
                  extra="repair auto\nrepair-max-share 100%\nmax-commands-per-sec 50000\n"
                        "repair-max-per-sec 1000\n")
    keys = [b"ver:%d" % i for i in range(100)]
    stop = threading.Event()
    violations = []
    seen = {}

    def writer(my_keys, seed):
        r = primary.client()
        rng = random.Random(seed)
        version = {k: 0 for k in my_keys}
        while not stop.is_set():
            p = r.pipeline(transaction=False)
            for _ in range(20):
                k = rng.choice(my_keys)
                version[k] += 1
                p.set(k, b"%d" % version[k])
                if rng.random() > 0.05:  # the writer also loses 5 % of its publishes
                    p.publish("cache_update", k)
            p.execute()
            time.sleep(0.005)

    def checker():
        clients = [(name, s.client()) for name, s in [("r1", native), ("ca", caches[0]),
                                                      ("cb", caches[1])]]
        while not stop.is_set():
            for name, c in clients:
                for k, v in zip(keys, c.mget(keys)):
                    if v is None:
                        continue
                    n = int(v)
                    last = seen.get((name, k), 0)
                    if n < last:
                        violations.append((name, k, last, n))
                    seen[(name, k)] = max(last, n)
            time.sleep(0.01)

    threads = [threading.Thread(target=writer, args=(keys[i::2], i)) for i in range(2)]
    threads.append(threading.Thread(target=checker))
    for t in threads:
        t.start()
    try:
        # The subscribers are killed and restarted: their messages are lost.
        deadline = time.monotonic() + 12
        i = 0
        while time.monotonic() < deadline:
            time.sleep(1.5)
            s = syncs[i % 2]
            s.kill()
            time.sleep(0.5)
            syncs[i % 2] = h.sync(primary, caches[i % 2], name="sync-%d-%d" % (i % 2, i))
            i += 1
    finally:
        stop.set()
        for t in threads[:2]:
            t.join()
    stopped = time.monotonic()

    def all_equal():
        pv = primary.client().mget(keys)
        return all(s.client().mget(keys) == pv for s in [native] + caches)
    wait_for(all_equal, timeout=5, what="every replica equals the primary within 5 s")
    took = time.monotonic() - stopped
    threads[2].join()
    print("converged %.2f s after the writers stopped; repairs: %s" % (took, {
        k: v for k, v in agent.metrics().items() if k[0] == "keydrift_repairs_total"}))
    assert violations == [], violations[:10]
    repaired = sum(v for k, v in agent.metrics().items()
                   if k[0] == "keydrift_repairs_total" and ("outcome", "repaired") in k[1])
    assert repaired > 0


def test_primary_restarted_empty_pauses_auto_repair(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    h.sync(primary, cache)
    p = primary.client()
    for i in range(300):
        p.set("keep:%d" % i, i)
        p.publish("cache_update", "keep:%d" % i)
    wait_for(lambda: cache.client().dbsize() >= 300, what="cache filled")
    agent = Agent(h, primary, [("c1", cache, "pubsub")], extra="repair auto\n")
    wait_for(lambda: agent.metric("keydrift_keys_checked_total", replica="c1", mode="scan"),
             what="scanning")
    primary.kill()  # no persistence: it comes back empty
    primary.start()
    wait_for(lambda: agent.metric("keydrift_repair_paused") == 1, timeout=10,
             what="auto-repair paused")
    assert "auto-repair paused" in agent.proc.output()
    time.sleep(3)
    assert cache.client().dbsize() >= 300, "the caches were wiped"
    assert not rows(agent.db, "SELECT 1 FROM repairs WHERE outcome='repaired'")


def test_mass_divergence_pauses_auto_repair(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    p = primary.client()
    for i in range(400):
        p.set("m:%d" % i, i)  # never published: the whole cache is missing them
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="repair auto\nrepair-max-share 5%\nsample-modes scan\n")
    h.sync(primary, cache)
    wait_for(lambda: agent.metric("keydrift_repair_paused") == 1, timeout=20,
             what="auto-repair paused by the share guard")
    assert "were confirmed divergent" in agent.proc.output()
    repaired = rows(agent.db, "SELECT count(*) FROM repairs WHERE outcome='repaired'")[0][0]
    assert repaired < 400 * 0.5, repaired


def test_primary_restarted_with_persistence_holds_repairs_until_resumed(h):
    from harness import http_get
    import json as _json
    primary = h.redis("primary", args=["--appendonly", "yes", "--appendfsync", "always"])
    cache = h.redis("cache")
    h.sync(primary, cache)
    p = primary.client()
    for i in range(50):
        p.set("aof:%d" % i, i)
        p.publish("cache_update", "aof:%d" % i)
    wait_for(lambda: cache.client().dbsize() >= 50, what="cache filled")
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="repair auto\nrepair-max-share 100%\n")
    wait_for(lambda: agent.metric("keydrift_keys_checked_total", replica="c1", mode="scan"),
             what="scanning")
    primary.stop()
    primary.start()  # same data (AOF), new run_id
    assert primary.client().dbsize() >= 50
    cache.client().set("aof:7", "stale")  # a real divergence after the restart
    wait_for(lambda: agent.metric("keydrift_repair_paused") == 1, timeout=15,
             what="auto-repair held after the restart")
    wait_for(lambda: agent.metric("keydrift_divergent_keys", replica="c1", kind="value") == 1,
             timeout=20, what="the divergence confirmed")
    time.sleep(1)
    assert cache.client().get("aof:7") == b"stale", "repaired while held"
    st, hdr, body = http_get(agent.url + "/api/v1/status")
    assert "restarted" in _json.loads(body)["repair"]["paused_reason"]
    r = h.run_keydrift("repair", "--resume", "--agent", agent.url)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: cache.client().get("aof:7") == b"7", timeout=20,
             what="repaired once an operator resumed")


def test_failed_repairs_back_off(h):
    """A cache whose subscriber never applies one key: every auto-repair of it
    fails its verification, and the next try comes 1, 2, then 4 s later (not
    at once, not after a flat 30 s)."""
    primary = h.redis("primary")
    cache = h.redis("cache")
    SlowSubscriber(h, primary, cache, 0, skip=lambda k: k == b"stuck")
    primary.client().set("stuck", "never on the cache")
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="sample-modes scan\nrepair auto\nrepair-verify-timeout 300ms\n"
                        "repair-max-share 100%\n")
    db = agent.db

    def tries():
        return [r[0] / 1000.0 for r in rows(db, "SELECT requested FROM repairs WHERE "
                                                "key = CAST('stuck' AS BLOB) ORDER BY id")]
    got = wait_for(lambda: len(tries()) >= 4 and tries(), timeout=20,
                   what="four repair attempts")
    gaps = [b - a for a, b in zip(got, got[1:])]
    print("repair attempts, seconds apart: %s" % gaps)
    assert 1.0 <= gaps[0] < 2.0 + 1.0 * SLOW, gaps
    assert 2.0 <= gaps[1] < 3.0 + 1.0 * SLOW, gaps
    assert 4.0 <= gaps[2] < 5.0 + 1.0 * SLOW, gaps
    assert all(r[0] == "failed" for r in rows(db, "SELECT outcome FROM repairs WHERE "
                                                  "key = CAST('stuck' AS BLOB) AND finished "
                                                  "IS NOT NULL")), rows(db, "SELECT * FROM repairs")
