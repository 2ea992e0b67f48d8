"""Real deployments: Sentinel failover, Redis Cluster shards (and shard-index
splitting), ACL users, TLS through stunnel, several databases. Every process is
real: redis-server, redis-server --sentinel, redis-cli --cluster, stunnel,
openssl."""
import json
import os
import sqlite3
import subprocess
import threading
import time

import redis
import redis.cluster

from harness import KEYDRIFT, ROOT, SLOW, Agent, Proc, free_port, wait_for

# Writes that replicate nowhere: a script that turns its own replication off.
# Cluster replicas redirect every write (MOVED) whatever replica-read-only
# says, so this is how a test makes a cluster replica miss one write.
UNREPLICATED_SET = ("redis.set_repl(redis.REPL_NONE); "
                    "return redis.call('SET', KEYS[1], ARGV[1])")


def node_name(addr):
    """keydrift's label for a discovered node: "ip-port"."""
    return addr.replace(":", "-")


def confirmed(agent, **labels):
    """Sum of keydrift_divergences_confirmed_total over the series matching labels."""
    total = 0.0
    for (name, lbls), v in agent.metrics().items():
        if name == "keydrift_divergences_confirmed_total" and \
                all((k, str(x)) in lbls for k, x in labels.items()):
            total += v
    return total


def confirmed_rows(db_path):
    """Divergences the agent ever confirmed, from its history database."""
    if not os.path.exists(db_path):
        return []
    con = sqlite3.connect(db_path)
    try:
        return con.execute("SELECT replica, kind, state FROM divergences "
                           "WHERE confirmed_at IS NOT NULL").fetchall()
    finally:
        con.close()


class LoadWriter:
    """About `rate` writes a second to whatever `target()` returns, from a thread;
    connection errors (the primary being killed) are retried on the next tick."""

    def __init__(self, target, rate=200, keys=500):
        self.target = target
        self.rate = rate
        self.keys = keys
        self.writes = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        i = 0
        client = None
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if client is None:
                    client = self.target()
                p = client.pipeline(transaction=False)
                for _ in range(self.rate // 20):
                    p.set("load:%d" % (i % self.keys), "v%d" % i)
                    i += 1
                p.execute()
                self.writes += self.rate // 20
            except (redis.exceptions.RedisError, OSError):
                client = None
            time.sleep(max(0.0, 0.05 - (time.monotonic() - t0)))

    def stop(self):
        self._stop.set()
        self._t.join(timeout=5)


# ------------------------------------------------------------------ Sentinel

# 1 s made Sentinel, on a loaded machine, sometimes judge the master it had
# just promoted down before its first PING answer and fail over again.
SENTINEL_DOWN_AFTER_MS = 2000


def sentinel(h, name, conf):
    """Starts a Sentinel in a directory of its own, from conf (plus bind,
    protected-mode and dir lines)."""
    d = os.path.join(h.tmp, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "sentinel.conf")
    with open(path, "w") as f:
        f.write("bind 127.0.0.1\nprotected-mode no\ndir %s\n%s" % (d, conf))
    h.procs.append(Proc(["redis-server", path, "--sentinel"], os.path.join(d, "sentinel.log")))


def start_sentinels(h, primary, n=3):
    sentinels = []
    for k in range(n):
        port = free_port()
        sentinel(h, "sentinel%d" % k,
                 "port %d\nsentinel monitor mymaster 127.0.0.1 %d 2\n"
                 "sentinel down-after-milliseconds mymaster %d\n"
                 "sentinel failover-timeout mymaster 5000\n"
                 "sentinel parallel-syncs mymaster 1\n"
                 % (port, primary.port, SENTINEL_DOWN_AFTER_MS))
        c = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)
        sentinels.append((port, c))
    for port, c in sentinels:
        wait_for(lambda: len(c.execute_command("SENTINEL", "replicas", "mymaster")) == 2
                 and len(c.execute_command("SENTINEL", "sentinels", "mymaster")) == n - 1,
                 timeout=30, what="sentinel %d to know the replicas and its peers" % port)
    return sentinels


def sentinel_master(sentinels, i=0):
    """The master's address as Sentinel number i reports it."""
    ip, port = sentinels[i][1].execute_command("SENTINEL", "get-master-addr-by-name",
                                               "mymaster")
    return "%s:%s" % (ip, port)


def test_sentinel_failover(h):
    """The agent follows a Sentinel failover within 2 s of Sentinel's own
    switch, keeps measuring the surviving replica, reports no divergence
    through the switch, and still finds one injected afterwards."""
    primary = h.redis("primary")
    r1 = h.replica("r1", primary)
    r2 = h.replica("r2", primary)
    sentinels = start_sentinels(h, primary)
    addrs = " ".join("127.0.0.1:%d" % p for p, _ in sentinels)
    agent = Agent(h, primary, extra="discovery sentinel mymaster %s\n"
                                    "discovery-interval 2s\nconfirm-timeout 3s\n" % addrs)

    wait_for(lambda: agent.status()["primary"]["address"] == primary.addr
             and len(agent.status()["replicas"]) == 2
             and all(r["lag_seconds"] is not None for r in agent.status()["replicas"]),
             timeout=10, what="agent to watch the Sentinel topology")
    names = {r["name"] for r in agent.status()["replicas"]}
    assert names == {node_name(r1.addr), node_name(r2.addr)}
    assert agent.metric("keydrift_shard_info", shard="0", primary=primary.addr) == 1

    def current_master():
        ip, port = sentinels[1][1].execute_command("SENTINEL", "get-master-addr-by-name",
                                                   "mymaster")
        return redis.Redis(host=ip, port=int(port), socket_timeout=1)

    load = LoadWriter(current_master, rate=200)
    try:
        wait_for(lambda: load.writes > 400, timeout=10, what="write load")
        primary.kill()
        killed = time.monotonic()
        # Sentinel's own switch first, then the agent's, timed separately.
        wait_for(lambda: sentinel_master(sentinels) != primary.addr, timeout=20,
                 interval=0.05, what="sentinel failover")
        switched = time.monotonic()
        new_addr = sentinel_master(sentinels)
        wait_for(lambda: agent.status()["primary"]["address"] == new_addr, timeout=2.0,
                 interval=0.05, what="agent to follow the failover")
        followed = time.monotonic()
        assert followed - switched <= 2.0 * SLOW
        # down-after + failover-timeout + 2 s
        assert followed - killed <= (SENTINEL_DOWN_AFTER_MS / 1000 + 5 + 2) * SLOW

        # Sentinel can still fail over once more, between the two replicas, if
        # it judges the new master down: go on with the master it settles on
        # (the same for longer than down-after, on every Sentinel).
        def settled():
            seen = set()
            for _ in range(3):
                seen |= {sentinel_master(sentinels, i) for i in range(len(sentinels))}
                time.sleep(SENTINEL_DOWN_AFTER_MS / 1000 * 0.75)
            return seen.pop() if len(seen) == 1 and primary.addr not in seen else None
        new_addr = wait_for(settled, timeout=40, what="Sentinel to settle on a master")
        wait_for(lambda: agent.status()["primary"]["address"] == new_addr, timeout=10,
                 what="agent to follow the settled master")
        survivor = r1 if new_addr == r2.addr else r2
        new_primary = r2 if survivor is r1 else r1
        sname = node_name(survivor.addr)
        # Sentinel lists the survivor under the new master only once it has read
        # the new master's INFO (every 10 s outside a failover), so allow for it.
        wait_for(lambda: [r["name"] for r in agent.status()["replicas"]] == [sname],
                 timeout=30, what="the surviving replica to be the only one watched")
        def repointed():
            info = survivor.info("replication")
            return (info.get("master_port") == new_primary.port
                    and info.get("master_link_status") == "up")
        try:
            wait_for(repointed, timeout=20, what="sentinel to repoint the surviving replica")
        except AssertionError:
            # Sentinel sometimes leaves the other replica to its periodic
            # config check (slow on a loaded machine). That is Sentinel's
            # business, not the agent's: repoint it as an operator would; what
            # this test asserts is the agent's behaviour once it is repointed.
            survivor.client().execute_command("REPLICAOF", "127.0.0.1", new_primary.port)
            wait_for(repointed, timeout=20, what="the surviving replica repointed")
        def survivor_measured():
            rs = [r for r in agent.status()["replicas"] if r["name"] == sname]
            return (rs and rs[0]["status"] == "ok" and rs[0]["lag_seconds"] is not None
                    and 0 <= rs[0]["lag_seconds"] < 1.0)
        wait_for(survivor_measured, timeout=15,
                 what="heartbeat lag measured on the surviving replica")
        assert agent.metric("keydrift_replica_lag_seconds", replica=sname) is not None
        # Several seconds of load on the new topology: still no divergence.
        time.sleep(4 * SLOW)
    finally:
        load.stop()
    assert confirmed(agent) == 0, agent.metrics_text()
    assert confirmed_rows(agent.db) == []
    log = agent.proc.output()
    assert "failover" in log, log
    assert agent.metric("keydrift_topology_changes_total", reason="failover") >= 1
    assert agent.metric("keydrift_discovery_up") == 1

    # A divergence after the failover is still found.
    np_ = new_primary.client()
    np_.set("after:failover", "good")
    sc = survivor.client()
    wait_for(lambda: sc.get("after:failover") == b"good", what="key replicated")
    sc.config_set("replica-read-only", "no")
    sc.set("after:failover", "stale")
    wait_for(lambda: confirmed(agent, replica=sname, kind="value") >= 1, timeout=30,
             what="divergence after failover confirmed")
    con = sqlite3.connect(agent.db)
    try:
        events = con.execute("SELECT type FROM events WHERE type = 'failover'").fetchall()
    finally:
        con.close()
    assert events, "no failover event recorded"


# ------------------------------------------------------------------ Cluster

def cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    import socket
    while True:
        p = free_port()
        if p > 55535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10000))
                return p
            except OSError:
                continue


def start_cluster(h, n=6):
    from harness import RedisServer
    nodes = []
    for i in range(n):
        s = RedisServer(h, "c%d" % i, port=cluster_port(),
                        args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                              "--cluster-node-timeout", "2000"])
        h.servers.append(s)
        nodes.append(s)
    p = subprocess.run(["redis-cli", "--cluster", "create"] + [s.addr for s in nodes] +
                       ["--cluster-replicas", "1", "--cluster-yes"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    for s in nodes:
        wait_for(lambda: s.info("cluster").get("cluster_enabled") == 1 and
                 s.client().execute_command("CLUSTER", "INFO").decode().find(
                     "cluster_state:ok") >= 0, timeout=30, what="cluster state ok on %s" % s.name)
    def full_view(s):
        shards = [dict(zip(x[::2], x[1::2]))
                  for x in s.client().execute_command("CLUSTER", "SHARDS")]
        return sum(1 for x in shards if x[b"slots"] and len(x[b"nodes"]) == 2) == n // 2
    for s in nodes:
        wait_for(lambda: full_view(s), timeout=30, what="%s to see every shard" % s.name)
    for s in nodes:
        if s.info("replication")["role"] == "slave":
            wait_for(lambda: s.info("replication").get("master_link_status") == "up",
                     timeout=30, what="cluster replica %s in sync" % s.name)
    return nodes


def cluster_shards(nodes):
    """[(primary server, replica server, first slot)] sorted by first slot: keydrift's shard order."""
    by_port = {s.port: s for s in nodes}
    out = []
    for sh in nodes[0].client().execute_command("CLUSTER", "SHARDS"):
        sh = dict(zip(sh[::2], sh[1::2]))
        if not sh[b"slots"]:
            continue
        prim = rep = None
        for nd in sh[b"nodes"]:
            nd = dict(zip(nd[::2], nd[1::2]))
            if nd[b"role"] == b"master":
                prim = by_port[int(nd[b"port"])]
            else:
                rep = by_port[int(nd[b"port"])]
        out.append((prim, rep, min(sh[b"slots"][::2])))
    out.sort(key=lambda x: x[2])
    return out


def key_in_shard(client, shard_slots, prefix):
    """A key name whose slot is in the given [(lo, hi)] ranges."""
    for i in range(100000):
        k = "%s:%d" % (prefix, i)
        slot = client.execute_command("CLUSTER", "KEYSLOT", k)
        if any(lo <= slot <= hi for lo, hi in shard_slots):
            return k
    raise AssertionError("no key for the shard")


def slots_of(primary):
    for sh in primary.client().execute_command("CLUSTER", "SHARDS"):
        sh = dict(zip(sh[::2], sh[1::2]))
        for nd in sh[b"nodes"]:
            nd = dict(zip(nd[::2], nd[1::2]))
            if nd[b"role"] == b"master" and int(nd[b"port"]) == primary.port:
                s = sh[b"slots"]
                return list(zip(s[::2], s[1::2]))
    raise AssertionError("not a primary")


def test_cluster_shards(h):
    """Divergences on the replicas of two shards are found, each with its shard,
    by `keydrift check` and by the daemon; with shard-index 1/2 and 2/2 two
    checks cover every shard exactly once."""
    nodes = start_cluster(h)
    shards = cluster_shards(nodes)
    assert len(shards) == 3
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    for i in range(300):
        rc.set("ck:%d" % i, "v%d" % i)
    injected = {}
    for idx in (0, 2):
        prim, rep, _ = shards[idx]
        k = key_in_shard(prim.client(), slots_of(prim), "div%d" % idx)
        rc.set(k, "replicated")
        rcl = rep.client()
        rcl.execute_command("READONLY")
        wait_for(lambda: rcl.get(k) == b"replicated", what="key on the shard's replica")
        # The primary changes the key without replicating it: the replica is now stale.
        prim.client().eval(UNREPLICATED_SET, 1, k, "new")
        injected[k] = (str(idx), node_name(rep.addr))
    for prim, rep, _ in shards:
        wait_for(lambda: rep.info("replication")["slave_repl_offset"] >=
                 prim.info("replication")["master_repl_offset"], what="replicas caught up")

    conf = h.write_file("cluster.conf", "discovery cluster %s\nagent-id test-cluster\n"
                        % nodes[1].addr)

    def check(*extra):
        p = h.run_keydrift("check", conf, "--json", *extra, timeout=120)
        assert p.returncode in (0, 1), p.stderr.decode()
        return json.loads(p.stdout)

    doc = check()
    assert sorted(s["shard"] for s in doc["shards"]) == ["0", "1", "2"]
    for s in doc["shards"]:
        assert s["primary"] == shards[int(s["shard"])][0].addr
        assert s["replicas"] == [node_name(shards[int(s["shard"])][1].addr)]
        assert s["keys_checked"] >= shards[int(s["shard"])][0].client().dbsize() - 1
    found = {d["key"]: (d["shard"], d["replica"], d["kind"]) for d in doc["divergences"]}
    assert found == {k: (sh, rep, "value") for k, (sh, rep) in injected.items()}, doc

    # Two agents splitting the cluster: every shard exactly once, with its keys.
    procs = [subprocess.Popen([KEYDRIFT, "check", conf,
                               "--json", "--shard-index", "%d/2" % i, "--agent-id",
                               "split-%d" % i], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in (1, 2)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=120 * SLOW)
        assert p.returncode in (0, 1), err.decode()
        docs.append(json.loads(out))
    covered = [s["shard"] for d in docs for s in d["shards"]]
    assert sorted(covered) == ["0", "1", "2"], covered
    assert [s["shard"] for s in docs[0]["shards"]] == ["0", "2"]
    assert [s["shard"] for s in docs[1]["shards"]] == ["1"]
    for d in docs:
        for s in d["shards"]:
            assert s["keys_checked"] >= shards[int(s["shard"])][0].client().dbsize() - 2
    split_found = {x["key"]: x["shard"] for d in docs for x in d["divergences"]}
    assert split_found == {k: sh for k, (sh, _) in injected.items()}

    # The daemon: one lag monitor and engine per shard, shard_info for each.
    agent = Agent(h, nodes[0], extra="discovery cluster %s %s\n" % (nodes[0].addr,
                                                                     nodes[3].addr))
    for idx, (prim, rep, _) in enumerate(shards):
        wait_for(lambda: agent.metric("keydrift_shard_info", shard=str(idx),
                                      primary=prim.addr) == 1, what="shard_info %d" % idx)
        wait_for(lambda: agent.metric("keydrift_replica_lag_seconds",
                                      replica=node_name(rep.addr)) is not None,
                 what="lag of shard %d's replica" % idx)
    for k, (sh, rep) in injected.items():
        wait_for(lambda: confirmed(agent, replica=rep, kind="value") >= 1, timeout=30,
                 what="daemon to confirm %s" % k)
    assert confirmed(agent, replica=node_name(shards[1][1].addr)) == 0
    st = agent.status()
    assert sorted(s["shard"] for s in st["shards"]) == ["0", "1", "2"]
    # Each shard's heartbeat key lives on that shard (its hash tag maps there).
    for prim, _, _ in shards:
        hb = [k for k in prim.client().scan_iter(match="keydrift:hb:*")]
        assert any(b"test-agent" in k for k in hb), (prim.name, hb)


# ------------------------------------------------------------------ ACL

# The agent's minimal ACL rule, as docs/deployment.md gives it (with repairs).
def documented_acl():
    """The minimal rule docs/deployment.md gives, with the tests' password."""
    with open(os.path.join(ROOT, "docs", "deployment.md")) as f:
        doc = f.read()
    block = doc.split("ACL SETUSER keydrift ", 1)[1].split("```", 1)[0]
    return block.replace(">PASSWORD", ">s3cret")


AGENT_ACL = documented_acl()


def acl_user(server, rule=AGENT_ACL):
    server.client().execute_command("ACL", "SETUSER", "keydrift", *rule.split())


def acl_denials(server):
    out = []
    for e in server.client().execute_command("ACL", "LOG"):
        e = dict(zip(e[::2], e[1::2]))
        if e[b"username"] == b"keydrift":
            out.append((e[b"reason"], e[b"object"]))
    return out


def test_acl_wrong_password(h):
    """A wrong password: a clear error in the log, node_up 0, the agent alive."""
    primary = h.redis("primary")
    acl_user(primary)
    pw = h.write_file("pw", "wrong\n")
    agent = Agent(h, primary, extra="redis-user keydrift\nredis-password-file %s\n" % pw)
    wait_for(lambda: agent.metric("keydrift_node_up", node="primary", role="primary") == 0,
             what="node_up 0")
    wait_for(lambda: "WRONGPASS" in agent.proc.output(), what="the error in the log")
    time.sleep(1.0)
    log = agent.proc.output()
    assert "check redis-user and redis-password-file" in log, log
    # Logged once per outage, not once per retry.
    assert log.count("WRONGPASS") <= 2, log
    assert agent.proc.alive()
    assert agent.metric("keydrift_node_up", node="primary", role="primary") == 0


def test_acl_minimal_user(h):
    """The documented minimal ACL user measures lag, finds and repairs a divergence,
    and the servers log no denied command."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    for s in (primary, replica):
        acl_user(s)
        s.client().execute_command("ACL", "LOG", "RESET")
    pw = h.write_file("pw", "s3cret\n")
    p = primary.client()
    for i in range(50):
        p.set("acl:%d" % i, "v")
    p.hset("acl:hash", mapping={"a": 1})
    rc = replica.client()
    wait_for(lambda: rc.get("acl:49") == b"v", what="replicated")
    agent = Agent(h, primary, [("r1", replica, "native")],
                  extra="redis-user keydrift\nredis-password-file %s\nrepair auto\n" % pw)
    wait_for(lambda: agent.replica_status("r1")["status"] == "ok"
             and agent.replica_status("r1")["lag_seconds"] is not None, what="lag measured")
    rc.config_set("replica-read-only", "no")
    rc.set("acl:7", "stale")
    wait_for(lambda: confirmed(agent, replica="r1", kind="value") >= 1, timeout=30,
             what="divergence confirmed")
    wait_for(lambda: rc.get("acl:7") == b"v", timeout=30, what="divergence repaired")
    assert agent.metric("keydrift_watch_enabled") == 1
    # A check under the same user, with values of every type above
    # max-value-bytes: their sampled comparison is allowed too.
    p.set("acl:big:string", "x" * 20000)
    p.rpush("acl:big:list", *("element:%d" % i for i in range(2000)))
    p.hset("acl:big:hash", mapping={"f%d" % i: i for i in range(2000)})
    p.sadd("acl:big:set", *range(2000))
    p.zadd("acl:big:zset", {"m%d" % i: i for i in range(2000)})
    for i in range(1000):
        p.xadd("acl:big:stream", {"f": i})
    wait_for(lambda: rc.xlen("acl:big:stream") == 1000, what="replicated")
    for k in p.scan_iter(match="acl:big:*"):
        assert p.memory_usage(k) > 10 << 10, k
    conf = h.write_file("acl.conf", "primary %s\nreplica r1 %s native\nredis-user keydrift\n"
                        "redis-password-file %s\nmax-value-bytes 10kb\nhistory-db \"\"\n"
                        % (primary.addr, replica.addr, pw))
    chk = h.run_keydrift("check", conf, "--json", timeout=60)
    doc = json.loads(chk.stdout)
    assert chk.returncode == 0 and doc["keys_checked"] >= 56, (chk.stdout, chk.stderr)
    denied = acl_denials(primary) + acl_denials(replica)
    assert denied == [], denied
    assert "NOPERM" not in agent.proc.output()


def test_watch_is_on_only_where_notifications_are_received(h):
    """With `db 0 3` and a user allowed only db 0's notification channel (as
    the documented rule is), db 3's subscription is refused: the agent says
    so, and keydrift_watch_enabled is 0 (watch is not on everywhere). Once
    the channel is allowed, it comes on."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    for s in (primary, replica):
        acl_user(s)
    pw = h.write_file("pw", "s3cret\n")
    agent = Agent(h, primary, [("r1", replica, "native")],
                  extra="redis-user keydrift\nredis-password-file %s\ndb 0 3\n" % pw)
    wait_for(lambda: "PSUBSCRIBE __keyevent@3__:* refused" in agent.proc.output(),
             what="the refusal logged")
    time.sleep(0.5)
    assert agent.metric("keydrift_watch_enabled") == 0
    assert agent.status()["detection"]["watch_enabled"] in (0, False)
    primary.client().execute_command("ACL", "SETUSER", "keydrift", "&__keyevent@3__:*")
    wait_for(lambda: agent.metric("keydrift_watch_enabled") == 1, timeout=15,
             what="watch on in both dbs")
    assert "PSUBSCRIBE __keyevent@3__:* accepted" in agent.proc.output()
    # db 3's writes are now verified as they happen.
    before = agent.metric("keydrift_keys_checked_total", replica="r1", mode="watch") or 0
    primary.client(db=3).set("w", "v")
    wait_for(lambda: (agent.metric("keydrift_keys_checked_total", replica="r1", mode="watch")
                      or 0) > before, what="the write in db 3 verified")


def test_watch_without_config_set_warns_once_and_follows_the_operator(h):
    """A user without CONFIG SET cannot turn keyspace notifications on: the
    agent says what to set, once (not at every retry), and watch is off;
    once an operator sets them, watch comes on by itself."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    for s in (primary, replica):
        acl_user(s, AGENT_ACL.replace("+config|set", ""))
    pw = h.write_file("pw", "s3cret\n")
    agent = Agent(h, primary, [("r1", replica, "native")],
                  extra="redis-user keydrift\nredis-password-file %s\n" % pw)
    warning = "cannot enable keyspace notifications"
    wait_for(lambda: warning in agent.proc.output(), what="the warning")
    assert 'set notify-keyspace-events "EA" on the primary' in agent.proc.output()
    assert agent.metric("keydrift_watch_enabled") == 0
    time.sleep(11)  # two retries
    assert agent.proc.output().count(warning) == 1, agent.proc.output()
    assert agent.metric("keydrift_watch_enabled") == 0
    primary.client().config_set("notify-keyspace-events", "EA")
    wait_for(lambda: agent.metric("keydrift_watch_enabled") == 1, timeout=15,
             what="watch on once the operator enabled notifications")
    assert "keyspace notifications are on" in agent.proc.output()


# ------------------------------------------------------------------ TLS through stunnel

def make_certs(d):
    def run(*a):
        subprocess.run(a, check=True, capture_output=True, cwd=d, timeout=60)
    run("openssl", "req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "ca.key",
        "-out", "ca.crt", "-days", "2", "-subj", "/CN=keydrift-test-ca")
    run("openssl", "req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "server.key",
        "-out", "server.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.ext")
    return {k: os.path.join(d, k) for k in ("ca.crt", "server.crt", "server.key")}


def tls_redis(h, name, certs, extra=(), port=None):
    d = os.path.join(h.tmp, name)
    os.makedirs(d, exist_ok=True)
    port = port or free_port()
    p = Proc(["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
              "--tls-cert-file", certs["server.crt"], "--tls-key-file", certs["server.key"],
              "--tls-ca-cert-file", certs["ca.crt"], "--tls-auth-clients", "no",
              "--dir", d, "--save", "", "--appendonly", "no", "--protected-mode", "no",
              "--repl-diskless-sync", "yes", "--repl-diskless-sync-delay", "0"] + list(extra),
             os.path.join(d, "redis.log"))
    h.procs.append(p)
    return port


def stunnel(h, name, tls_port, certs):
    """A local stunnel client: plain TCP on a loopback port, TLS (verified) to tls_port."""
    local = free_port()
    conf = h.write_file("%s-stunnel.conf" % name,
                        "foreground = yes\npid =\n[%s]\nclient = yes\n"
                        "accept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\n"
                        "CAfile = %s\nverifyChain = yes\ncheckIP = 127.0.0.1\n"
                        % (name, local, tls_port, certs["ca.crt"]))
    h.procs.append(Proc(["stunnel4", conf], os.path.join(h.tmp, "%s-stunnel.log" % name)))
    c = redis.Redis(host="127.0.0.1", port=local, socket_timeout=2)
    wait_for(lambda: c.ping(), timeout=15, what="redis through stunnel %s" % name)
    return local, c


def tls_pair(h, certs):
    """A TLS-only primary and a replica replicating over TLS, each behind a
    stunnel client, holding tls:0..29: ((TLS port, stunnel port, client)
    of the primary, the same of the replica)."""
    pport = tls_redis(h, "tls-primary", certs)
    plocal, pc = stunnel(h, "primary", pport, certs)
    rport = tls_redis(h, "tls-replica", certs, ["--tls-replication", "yes",
                                                "--replicaof", "127.0.0.1", str(pport)])
    rlocal, rc = stunnel(h, "replica", rport, certs)
    wait_for(lambda: rc.info("replication").get("master_link_status") == "up", timeout=20,
             what="TLS replication up")
    for i in range(30):
        pc.set("tls:%d" % i, "v")
    wait_for(lambda: rc.get("tls:29") == b"v", what="replicated over TLS")
    return (pport, plocal, pc), (rport, rlocal, rc)


def test_tls_through_stunnel(h):
    """TLS-only servers (the replica replicates over TLS too), reached through
    local stunnel clients: lag is measured and a divergence found."""
    (_, plocal, _), (_, rlocal, rc) = tls_pair(h, make_certs(h.tmp))
    agent = Agent(h, "127.0.0.1:%d" % plocal, [("r1", "127.0.0.1:%d" % rlocal, "native")])
    wait_for(lambda: agent.replica_status("r1")["status"] == "ok"
             and agent.replica_status("r1")["lag_seconds"] is not None
             and agent.replica_status("r1").get("lag_bytes") is not None,
             what="lag through stunnel")
    rc.config_set("replica-read-only", "no")
    rc.set("tls:3", "stale")
    wait_for(lambda: confirmed(agent, replica="r1", kind="value") >= 1, timeout=30,
             what="divergence through stunnel")


def test_tls_sentinel_through_stunnel_with_an_address_map(h):
    """Sentinel discovery over TLS: Sentinel reports the nodes' own (TLS)
    addresses, which a plain-TCP agent cannot use; address-map sends each to
    its local stunnel client. Lag is measured and a divergence found on the
    discovered replica, named by its own address."""
    certs = make_certs(h.tmp)
    (pport, plocal, _), (rport, rlocal, rc) = tls_pair(h, certs)
    sport = free_port()
    sentinel(h, "tls-sentinel",
             "port 0\ntls-port %d\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\n"
             "tls-auth-clients no\ntls-replication yes\n"
             "sentinel monitor mymaster 127.0.0.1 %d 1\n"
             % (sport, certs["server.crt"], certs["server.key"], certs["ca.crt"], pport))
    slocal, sc = stunnel(h, "sentinel", sport, certs)
    def replica_flags():
        reps = sc.execute_command("SENTINEL", "replicas", "mymaster")
        return [dict(zip(r[::2], r[1::2]))[b"flags"] for r in reps]
    wait_for(lambda: replica_flags() == [b"slave"], timeout=30,
             what="sentinel to reach the replica over TLS")
    agent = Agent(h, "127.0.0.1:1", extra="discovery sentinel mymaster 127.0.0.1:%d\n"
                  "address-map 127.0.0.1:%d 127.0.0.1:%d\naddress-map 127.0.0.1:%d 127.0.0.1:%d\n"
                  % (slocal, pport, plocal, rport, rlocal))
    name = "127.0.0.1-%d" % rport
    wait_for(lambda: agent.status()["primary"]["address"] == "127.0.0.1:%d" % plocal,
             what="the primary reached through its stunnel")
    def measured():
        rs = [r for r in agent.status()["replicas"] if r["name"] == name]
        return rs and rs[0]["status"] == "ok" and rs[0]["lag_seconds"] is not None
    wait_for(measured, what="lag of the discovered replica through its stunnel")
    rc.config_set("replica-read-only", "no")
    rc.set("tls:3", "stale")
    wait_for(lambda: confirmed(agent, replica=name, kind="value") >= 1, timeout=30,
             what="divergence on the discovered replica")


def test_tls_cluster_through_stunnel_with_an_address_map(h):
    """A TLS-only cluster (its nodes report only a tls-port), every node behind
    a stunnel client: `keydrift check` discovers it through one node's
    stunnel, reaches each node through the map, and finds a divergence on a
    shard's replica."""
    certs = make_certs(h.tmp)
    ports = []
    while len(ports) < 6:
        p = cluster_port()
        if p not in ports:
            ports.append(p)
    local = {}
    for i, port in enumerate(ports):
        tls_redis(h, "tc%d" % i, certs, ["--cluster-enabled", "yes", "--cluster-config-file",
                                         "nodes.conf", "--cluster-node-timeout", "2000",
                                         "--tls-cluster", "yes", "--tls-replication", "yes"],
                  port=port)
        local[port] = stunnel(h, "tc%d" % i, port, certs)
    p = subprocess.run(["redis-cli", "--tls", "--cacert", certs["ca.crt"], "--cluster", "create"]
                       + ["127.0.0.1:%d" % x for x in ports]
                       + ["--cluster-replicas", "1", "--cluster-yes"],
                       capture_output=True, timeout=60)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    for port in ports:
        c = local[port][1]
        wait_for(lambda: b"cluster_state:ok" in c.execute_command("CLUSTER", "INFO"),
                 timeout=30, what="cluster state ok on %d" % port)

    def shards():
        """{primary TLS port: (replica TLS port, slot ranges)} once every shard has both."""
        out = {}
        for sh in local[ports[0]][1].execute_command("CLUSTER", "SHARDS"):
            sh = dict(zip(sh[::2], sh[1::2]))
            nodes = [dict(zip(n[::2], n[1::2])) for n in sh[b"nodes"]]
            assert all(b"port" not in n for n in nodes)  # TLS only: tls-port alone
            prim = [int(n[b"tls-port"]) for n in nodes if n[b"role"] == b"master"]
            rep = [int(n[b"tls-port"]) for n in nodes if n[b"role"] != b"master"]
            if sh[b"slots"] and prim and rep:
                s = sh[b"slots"]
                out[prim[0]] = (rep[0], list(zip(s[::2], s[1::2])))
        return len(out) == 3 and out
    view = wait_for(shards, timeout=30, what="three shards of a primary and a replica")
    for prim, (rep, _) in view.items():
        rcl = local[rep][1]
        wait_for(lambda: rcl.info("replication").get("master_link_status") == "up",
                 timeout=30, what="replica %d in sync" % rep)
    prim, (rep, slots) = sorted(view.items())[0]
    pc, rcl = local[prim][1], local[rep][1]
    k = key_in_shard(pc, slots, "tlsdiv")
    pc.set(k, "replicated")
    rcl.execute_command("READONLY")
    wait_for(lambda: rcl.get(k) == b"replicated", what="key on the shard's replica")
    pc.eval(UNREPLICATED_SET, 1, k, "new")
    conf = h.write_file("tls-cluster.conf", "discovery cluster 127.0.0.1:%d\n%s"
                        % (local[ports[0]][0],
                           "".join("address-map 127.0.0.1:%d 127.0.0.1:%d\n" % (x, local[x][0])
                                   for x in ports)))
    r = h.run_keydrift("check", conf, "--json", timeout=120)
    assert r.returncode == 1, r.stderr.decode()
    doc = json.loads(r.stdout)
    assert sorted(s["primary"] for s in doc["shards"]) == \
        sorted("127.0.0.1:%d" % local[x][0] for x in view)
    assert [(d["key"], d["replica"], d["kind"]) for d in doc["divergences"]] == \
        [(k, node_name("127.0.0.1:%d" % rep), "value")], doc


# ------------------------------------------------------------------ several dbs

def test_several_dbs(h):
    """With `db 0 3`, a divergence in db 3 is found (daemon and check), and db 0's
    keys are checked too."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    p0, p3 = primary.client(db=0), primary.client(db=3)
    for i in range(40):
        p0.set("zero:%d" % i, "v")
        p3.set("three:%d" % i, "v")
    r3 = replica.client(db=3)
    wait_for(lambda: r3.get("three:39") == b"v" and replica.client().get("zero:39") == b"v",
             what="both dbs replicated")
    replica.client().config_set("replica-read-only", "no")
    r3.set("three:5", "stale")

    conf = h.write_file("dbs.conf", "primary %s\nreplica r1 %s native\ndb 0 3\n"
                        "agent-id test-dbs\n" % (primary.addr, replica.addr))
    p = h.run_keydrift("check", conf, "--json", timeout=60)
    assert p.returncode == 1, p.stderr.decode()
    doc = json.loads(p.stdout)
    assert [(d["key"], d["db"], d["kind"]) for d in doc["divergences"]] == \
        [("three:5", 3, "value")]
    assert doc["keys_checked"] >= 80

    replica.client().set("zero:7", "stale")
    agent = Agent(h, primary, [("r1", replica, "native")], extra="db 0 3\n")
    wait_for(lambda: confirmed(agent, replica="r1", kind="value") >= 2, timeout=30,
             what="the db 0 and db 3 divergences confirmed")
    wait_for(lambda: agent.metric("keydrift_shard_keys_checked_total", shard="0", db="0")
             and agent.metric("keydrift_shard_keys_checked_total", shard="0", db="3"),
             what="both engines checking")
    for db in ("0", "3"):  # each engine's own cycle
        assert 0 <= agent.metric("keydrift_shard_scan_progress_ratio", shard="0", db=db) <= 1
    # Both engines' open divergences count, in the replica's one series and
    # in the status's detection summary.
    assert agent.metric("keydrift_divergent_keys", replica="r1", kind="value") == 2
    # (each engine publishes its progress once per turn of its loop)
    det = wait_for(lambda: (lambda d: d["open_divergences"] == 2 and d)(
        agent.status()["detection"]), what="both divergences in the status")
    assert det["keys_checked"] >= 80, det


def test_several_dbs_divergence_ratio_counts_every_db(h):
    """The random sampler's divergent share speaks for all dbs: db 0's keys
    all equal, db 3's all divergent (and confirmed, so later samples of them
    count as divergent too): about half, over both windows' samples."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    for db in (0, 3):
        pipe = primary.client(db=db).pipeline(transaction=False)
        for i in range(100):
            pipe.set("k:%d" % i, "v")
        pipe.execute()
    r3 = replica.client(db=3)
    wait_for(lambda: r3.dbsize() >= 100 and replica.client().dbsize() >= 100,
             what="both dbs replicated")
    replica.client().config_set("replica-read-only", "no")
    for i in range(100):
        r3.set("k:%d" % i, "stale")
    agent = Agent(h, primary, [("r1", replica, "native")],
                  extra="db 0 3\nsample-modes random\nrandom-sample-window 200\n")

    def ratio():
        return {b: agent.metric("keydrift_divergence_ratio", replica="r1", bound=b)
                for b in ("estimate", "lower", "upper")}

    wait_for(lambda: confirmed(agent, replica="r1", kind="value") >= 100, timeout=60 * SLOW,
             what="db 3's divergences confirmed")
    # Both windows full: 200 of 400 samples divergent. (One engine's share
    # alone reads 0 or 1; a sample of a known divergence that did not count
    # left db 3's window at its 100 first confirmations: 1/3.)
    r = wait_for(lambda: (lambda r: r["estimate"] is not None
                          and 0.45 <= r["estimate"] <= 0.55 and r)(ratio()),
                 timeout=30 * SLOW, what="the share over both dbs")
    assert r["lower"] < r["estimate"] < r["upper"], r
    assert r["upper"] - r["lower"] < 0.12, r  # 400 samples' interval, not 200's


def test_several_dbs_engine_gauges_speak_for_all(h):
    """With `db 0 3` on one budget: db 3's engine, asking for a few keys'
    worth at a time, does not starve db 0's, asking for full batches (it
    stopped at ~1,100 keys); and the unlabelled cycle-time gauge is the
    longest last cycle, not overwritten by db 3's cycles of a few keys."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    pipe = primary.client(db=0).pipeline(transaction=False)
    for i in range(10000):
        pipe.set("zero:%d" % i, "v")
    pipe.execute()
    for i in range(20):
        primary.client(db=3).set("three:%d" % i, "v")
    wait_for(lambda: replica.client(db=3).dbsize() >= 20 and replica.client().dbsize() >= 10000,
             what="both dbs replicated")
    agent = Agent(h, primary, [("r1", replica, "native")],
                  extra="db 0 3\nsample-modes scan\nmax-commands-per-sec 20000\n")

    def cycle():
        return agent.metric("keydrift_scan_cycle_duration_seconds") or 0

    wait_for(lambda: cycle() >= 0.5, timeout=30 * SLOW, what="db 0's cycle in the gauge")
    seen, db0 = [], []
    for _ in range(10):
        seen.append(cycle())
        db0.append(agent.metric("keydrift_shard_scan_progress_ratio", shard="0", db="0"))
        time.sleep(0.2)
    assert min(seen) >= 0.5, seen
    # db 0's own progress moves through its cycles of 10,000 keys.
    assert any(0.05 < x < 0.95 for x in db0) and len(set(db0)) > 3, db0
    assert agent.metric("keydrift_watch_enabled") == 0  # not in sample-modes
