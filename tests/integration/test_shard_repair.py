"""The repair API across engines: a Redis Cluster's shards (each key repaired
by the shard that owns its slot, all_open across every shard) and several
databases (the request's "db", and `keydrift repair --db`). Real
redis-server processes, a real agent; repairs are verified on the replicas."""
import json

import redis.cluster

from harness import Agent, http_get, wait_for
from test_topology import (UNREPLICATED_SET, cluster_shards, confirmed, key_in_shard,
                           node_name, slots_of, start_cluster)


def post(agent, path, body):
    """(status, headers, JSON) of a POST from loopback (no token configured)."""
    st, hd, raw = http_get(agent.url + path, method="POST", timeout=30,
                           data=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
    return st, hd, json.loads(raw)


def repair(agent, body):
    """Submits a repair and follows it until done; the finished job."""
    st, hd, job = post(agent, "/api/v1/repair", body)
    assert st in (200, 202), (st, job)
    if st == 202:
        def done():
            s, _, raw = http_get(agent.url + hd["Location"] + "?wait_ms=2000", timeout=30)
            assert s == 200, raw
            j = json.loads(raw)
            return j if j["state"] == "done" else None
        job = wait_for(done, timeout=60, what="repair job %s done" % job["id"])
    assert job["state"] == "done", job
    return job


def stale_on_replica(prim, rep, rc, key):
    """Makes key's replica stale: set (replicated), then changed on the primary only."""
    rc.set(key, "replicated")
    rcl = rep.client()
    rcl.execute_command("READONLY")
    wait_for(lambda: rcl.get(key) == b"replicated", what="%s on the shard's replica" % key)
    prim.client().eval(UNREPLICATED_SET, 1, key, "new")


def replica_value(rep, key):
    c = rep.client()
    c.execute_command("READONLY")
    return c.get(key)


def test_cluster_repair_across_shards(h):
    """Keys on two shards' replicas repaired by one request, each by its own
    shard's engine; all_open then repairs what is open on every shard."""
    nodes = start_cluster(h)
    shards = cluster_shards(nodes)
    assert len(shards) == 3
    rc = redis.cluster.RedisCluster(host="127.0.0.1", port=nodes[0].port)
    for i in range(100):
        rc.set("sr:%d" % i, "v%d" % i)
    # Two keys for the by-key request (shards 0 and 2), two for all_open (shards 1 and 2).
    plan = [("bykey0", 0), ("bykey2", 2), ("open1", 1), ("open2", 2)]
    keys = {}
    for prefix, idx in plan:
        prim, rep, _ = shards[idx]
        k = key_in_shard(prim.client(), slots_of(prim), prefix)
        stale_on_replica(prim, rep, rc, k)
        keys[prefix] = (k, idx)

    agent = Agent(h, nodes[0], extra="discovery cluster %s %s\nrepair manual\n"
                  % (nodes[0].addr, nodes[3].addr))
    for prefix, (k, idx) in keys.items():
        rep = node_name(shards[idx][1].addr)
        wait_for(lambda: confirmed(agent, replica=rep, kind="value") >=
                 sum(1 for _, i in keys.values() if i == idx), timeout=45,
                 what="divergences on shard %d confirmed" % idx)

    # One request, keys of two shards: each repaired where it lives.
    k0, k2 = keys["bykey0"][0], keys["bykey2"][0]
    job = repair(agent, {"keys": [k0, k2]})
    got = {(r["key"], r["shard"], r["db"], r["replica"], r["outcome"]) for r in job["results"]}
    assert got == {(k0, "0", 0, node_name(shards[0][1].addr), "repaired"),
                   (k2, "2", 0, node_name(shards[2][1].addr), "repaired")}, job
    for k, idx in (keys["bykey0"], keys["bykey2"]):
        wait_for(lambda: replica_value(shards[idx][1], k) == b"new",
                 what="%s repaired on shard %d's replica" % (k, idx))
    # The other shards' divergences were left alone.
    assert replica_value(shards[1][1], keys["open1"][0]) == b"replicated"
    assert replica_value(shards[2][1], keys["open2"][0]) == b"replicated"

    # all_open: every shard's engine, so both remaining divergences.
    job = repair(agent, {"all_open": True})
    repaired = {(r["key"], r["shard"]) for r in job["results"] if r["outcome"] == "repaired"}
    assert {(keys["open1"][0], "1"), (keys["open2"][0], "2")} <= repaired, job
    assert all(r["outcome"] in ("repaired", "not-divergent") for r in job["results"]), job
    for k, idx in (keys["open1"], keys["open2"]):
        wait_for(lambda: replica_value(shards[idx][1], k) == b"new",
                 what="%s repaired on shard %d's replica" % (k, idx))

    # A replica selects its shard; a key of another shard with it is refused.
    st, _, doc = post(agent, "/api/v1/repair",
                      {"keys": [k0], "replica": node_name(shards[2][1].addr)})
    assert st == 400 and "not on replica" in doc["error"], doc
    job = repair(agent, {"keys": [k2], "replica": node_name(shards[2][1].addr)})
    assert [(r["shard"], r["outcome"]) for r in job["results"]] == [("2", "not-divergent")], job
    # Resume reaches every engine; nothing is paused.
    st, _, doc = post(agent, "/api/v1/repair/resume", {})
    assert st == 200 and doc == {"paused": False}
    rp = agent.status()["repair"]
    assert rp["paused"] is False and rp["paused_reason"] is None


def test_several_dbs_repair(h):
    """With `db 0 3`: a db 3 divergence repaired through {"keys":[..],"db":3} and
    through `keydrift repair --db 3`; without "db" every db's engine answers."""
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    p0, p3 = primary.client(db=0), primary.client(db=3)
    for i in range(30):
        p0.set("zero:%d" % i, "v")
        p3.set("three:%d" % i, "v")
    r3 = replica.client(db=3)
    wait_for(lambda: r3.get("three:29") == b"v" and replica.client().get("zero:29") == b"v",
             what="both dbs replicated")
    replica.client().config_set("replica-read-only", "no")
    r3.set("three:5", "stale")
    r3.set("three:6", "stale")

    agent = Agent(h, primary, [("r1", replica, "native")], extra="db 0 3\nrepair manual\n")
    wait_for(lambda: confirmed(agent, replica="r1", kind="value") >= 2, timeout=45,
             what="both db 3 divergences confirmed")

    job = repair(agent, {"keys": ["three:5"], "db": 3})
    assert [(r["key"], r["shard"], r["db"], r["outcome"]) for r in job["results"]] == \
        [("three:5", "0", 3, "repaired")], job
    wait_for(lambda: r3.get("three:5") == b"v", what="three:5 repaired in db 3")
    assert r3.get("three:6") == b"stale"

    p = h.run_keydrift("repair", "--db", "3", "three:6", "--agent", agent.url, timeout=60)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert b"repaired" in p.stdout and b'"three:6"' in p.stdout, p.stdout
    wait_for(lambda: r3.get("three:6") == b"v", what="three:6 repaired in db 3")

    # Without "db", each configured db's engine takes the key.
    job = repair(agent, {"keys": ["zero:1"]})
    assert sorted((r["db"], r["outcome"]) for r in job["results"]) == \
        [(0, "not-divergent"), (3, "not-divergent")], job
    st, _, doc = post(agent, "/api/v1/repair", {"keys": ["zero:1"], "db": 5})
    assert st == 400 and "db 5 is not watched" in doc["error"], doc
    p = h.run_keydrift("repair", "--db", "x", "k", "--agent", agent.url)
    assert p.returncode == 2 and b"--db" in p.stderr
