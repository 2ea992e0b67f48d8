"""keydrift run: lag by heartbeat and offset, replica status, metrics, HTTP."""
import json
import signal
import subprocess
import threading
import time

from harness import SLOW, Agent, SlowSubscriber, free_port, http_get, parse_metrics, wait_for


def lag(agent, name):
    return agent.metric("keydrift_replica_lag_seconds", replica=name)


def test_pubsub_lag_follows_a_stopped_subscriber(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    sync = h.sync(primary, cache)
    agent = Agent(h, primary, [("cache-a", cache, "pubsub")])
    wait_for(lambda: (lag(agent, "cache-a") or 1) < 0.05, what="cache lag under 50 ms")

    sync.signal(signal.SIGSTOP)
    t0 = time.monotonic()
    time.sleep(2.0)
    measured = lag(agent, "cache-a")
    stopped_for = time.monotonic() - t0
    sync.signal(signal.SIGCONT)
    assert abs(measured - stopped_for) <= 0.1 * SLOW, (measured, stopped_for)
    wait_for(lambda: lag(agent, "cache-a") < 0.05, timeout=5, what="lag back under 50 ms")


def test_pubsub_lag_shows_a_slow_subscribers_queue(h):
    """A key-format subscriber 0.5 s behind copies the newest heartbeat as soon
    as it handles any heartbeat message; the markers it has not handled yet
    show its real lag."""
    primary = h.redis("primary")
    cache = h.redis("cache")
    SlowSubscriber(h, primary, cache, 0.5)
    agent = Agent(h, primary, [("cache-a", cache, "pubsub")])
    wait_for(lambda: (lag(agent, "cache-a") or 0) > 0.3, what="the queue's lag shown")
    readings = []
    for _ in range(20):
        readings.append(lag(agent, "cache-a"))
        time.sleep(0.1)
    readings.sort()
    print("lag readings: %s" % readings)
    median = readings[len(readings) // 2]
    assert 0.3 <= median <= 0.5 + 0.3 * SLOW, readings


def test_native_lag_follows_a_stopped_replica_and_bytes_agree(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    agent = Agent(h, primary, [("replica-1", replica, "native")])
    wait_for(lambda: (lag(agent, "replica-1") or 1) < 0.05, what="replica lag under 50 ms")
    wait_for(lambda: agent.metric("keydrift_replica_lag_bytes", replica="replica-1") is not None,
             what="byte lag")

    replica_offset = replica.info("replication")["slave_repl_offset"]
    replica.pause()
    t0 = time.monotonic()
    try:
        primary.client().set("big", b"x" * 200000)
        time.sleep(2.0)
        measured = lag(agent, "replica-1")
        stopped_for = time.monotonic() - t0
        master_offset = primary.info("replication")["master_repl_offset"]
        lag_bytes = agent.metric("keydrift_replica_lag_bytes", replica="replica-1")
    finally:
        replica.resume()
    assert abs(measured - stopped_for) <= 0.1 * SLOW, (measured, stopped_for)
    expected = master_offset - replica_offset
    assert expected > 200000
    # Heartbeats keep flowing (about 60 bytes each); the agent reads the
    # primary's offset every 250 ms.
    assert abs(lag_bytes - expected) <= 2000, (lag_bytes, expected)
    wait_for(lambda: lag(agent, "replica-1") < 0.05, timeout=5, what="lag back under 50 ms")
    wait_for(lambda: agent.metric("keydrift_replica_lag_bytes", replica="replica-1") < 1000,
             timeout=5, what="byte lag back near 0")


def test_native_replication_state_and_heartbeat_age(h):
    """What INFO says of a native replica's link (seconds since it heard from
    the primary, a full sync in progress, replication-id changes) and the age
    of the last heartbeat written, each following what is done to them."""
    # The primary serialises its keys for a full sync 150 us apiece: 6 s.
    primary = h.redis("primary", args=["--rdb-key-save-delay", "150"])
    pipe = primary.client().pipeline(transaction=False)
    for i in range(40000):
        pipe.set("k:%d" % i, "v")
    pipe.execute()
    # Not h.replica(): that waits for the link.
    replica = h.redis("replica", args=["--replicaof", "127.0.0.1", str(primary.port)])
    agent = Agent(h, primary, [("r1", replica, "native")])

    def m(name):
        return agent.metric(name, replica="r1")

    wait_for(lambda: m("keydrift_replica_sync_in_progress") == 1, what="the full sync seen")
    wait_for(lambda: m("keydrift_replica_sync_in_progress") == 0, timeout=15 * SLOW,
             what="the full sync over")
    wait_for(lambda: (lag(agent, "r1") or 1) < 0.1, what="lag measured")
    assert m("keydrift_replica_last_io_seconds") <= 1
    resyncs = m("keydrift_replica_resyncs_total") or 0
    assert agent.metric("keydrift_heartbeat_age_seconds") < 0.5

    # The primary stopped: the replica hears nothing, no heartbeat is written.
    primary.pause()
    try:
        time.sleep(3.0)
        io, age = m("keydrift_replica_last_io_seconds"), agent.metric(
            "keydrift_heartbeat_age_seconds")
    finally:
        primary.resume()
    assert io >= 2, io
    assert age >= 2.5, age
    wait_for(lambda: agent.metric("keydrift_heartbeat_age_seconds") < 0.5, what="beats again")

    # A new replication id on the replica: it was promoted, then follows
    # the primary again.
    rc = replica.client()
    rc.replicaof("no", "one")
    rc.replicaof("127.0.0.1", primary.port)
    wait_for(lambda: (m("keydrift_replica_resyncs_total") or 0) > resyncs, timeout=15 * SLOW,
             what="the replication-id change counted")


def test_heartbeats_skipped_while_the_primary_is_not_a_master(h):
    """A configured primary that is a replica (demoted by a failover, say)
    is not written to: its beats are counted as skipped and their age grows,
    until it is a master again."""
    upstream = h.redis("upstream")
    node = h.replica("node", upstream)
    agent = Agent(h, node)

    def skipped():
        return agent.metric("keydrift_heartbeats_skipped_total") or 0

    wait_for(lambda: skipped() > 0, what="beats skipped")
    s0 = skipped()
    time.sleep(1.0)
    assert skipped() - s0 >= 20, (s0, skipped())  # one per 20 ms heartbeat-interval
    assert agent.metric("keydrift_heartbeat_age_seconds") >= 1.0
    assert not node.client().keys("keydrift:hb:*")
    node.client().replicaof("no", "one")
    wait_for(lambda: agent.metric("keydrift_heartbeat_age_seconds") < 0.5, timeout=10,
             what="beats written once it is a master")
    s1 = skipped()
    time.sleep(0.5)
    assert skipped() == s1
    assert node.client().keys("keydrift:hb:*")


def test_killed_replica_is_down_then_ok(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    agent = Agent(h, primary, [("replica-1", replica, "native")])
    wait_for(lambda: agent.replica_status("replica-1")["status"] == "ok", what="ok")

    replica.kill()
    t0 = time.monotonic()
    wait_for(lambda: agent.replica_status("replica-1")["status"] == "down", timeout=2,
             what="down within 2 s")
    assert time.monotonic() - t0 <= 2 * SLOW
    assert agent.metric("keydrift_replica_status", replica="replica-1", status="down") == 1
    assert agent.metric("keydrift_replica_status", replica="replica-1", status="ok") == 0
    assert agent.metric("keydrift_node_up", node="replica-1", role="replica") == 0
    assert agent.metric("keydrift_replica_link_up", replica="replica-1") == 0

    replica.start()
    wait_for(lambda: agent.replica_status("replica-1")["status"] == "ok", timeout=15,
             what="ok after restart")
    assert agent.metric("keydrift_node_up", node="replica-1", role="replica") == 1
    assert "status ok -> down" in agent.proc.output()


def test_cache_without_subscriber_is_down(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    agent = Agent(h, primary, [("cache-a", cache, "pubsub")])
    wait_for(lambda: agent.replica_status("cache-a")["status"] == "down", what="down")
    r = agent.replica_status("cache-a")
    assert "subscriber" in r["status_reason"]
    assert agent.metric("keydrift_channel_subscribers", channel="cache_update") == 0

    h.sync(primary, cache)
    wait_for(lambda: agent.replica_status("cache-a")["status"] == "ok", what="ok with a sync")
    assert agent.metric("keydrift_channel_subscribers", channel="cache_update") == 1


def test_second_cache_without_its_sync_is_down(h):
    primary = h.redis("primary")
    ca, cb = h.redis("cache-a"), h.redis("cache-b")
    h.sync(primary, ca)
    agent = Agent(h, primary, [("cache-a", ca, "pubsub"), ("cache-b", cb, "pubsub")])
    wait_for(lambda: agent.replica_status("cache-a")["status"] == "ok", what="a ok")
    wait_for(lambda: agent.replica_status("cache-b")["status"] == "down", what="b down")


def test_stalled_subscriber_is_stalled_then_lagging_status(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    sync = h.sync(primary, cache)
    agent = Agent(h, primary, [("cache-a", cache, "pubsub")])
    wait_for(lambda: agent.replica_status("cache-a")["status"] == "ok", what="ok")
    sync.signal(signal.SIGSTOP)
    try:
        wait_for(lambda: agent.replica_status("cache-a")["status"] == "stalled", timeout=5,
                 what="stalled")
    finally:
        sync.signal(signal.SIGCONT)
    wait_for(lambda: agent.replica_status("cache-a")["status"] == "ok", timeout=5, what="ok")


def test_metrics_pass_promtool_and_survive_concurrent_scrapes(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    cache = h.redis("cache")
    h.sync(primary, cache)
    agent = Agent(h, primary, [("replica-1", replica, "native"), ("cache-a", cache, "pubsub")])
    # Byte lag and the subscriber count come from one poll of the primary
    # (INFO, then PUBSUB NUMSUB): a scrape may fall between the two.
    wait_for(lambda: agent.metric("keydrift_replica_lag_bytes", replica="replica-1") is not None
             and agent.metric("keydrift_channel_subscribers", channel="cache_update") is not None,
             what="metrics populated")
    st, hdr, body = http_get(agent.url + "/metrics")
    assert st == 200
    assert hdr["Content-Type"].startswith("text/plain; version=0.0.4")
    p = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert p.returncode == 0, p.stdout + p.stderr
    m = parse_metrics(body.decode())
    for name in ["keydrift_build_info", "keydrift_node_up", "keydrift_replica_lag_seconds",
                 "keydrift_replica_lag_bytes", "keydrift_replica_link_up",
                 "keydrift_replica_status", "keydrift_channel_subscribers",
                 "keydrift_redis_commands_total", "process_resident_memory_bytes",
                 "process_cpu_seconds_total", "process_open_fds", "process_start_time_seconds"]:
        assert any(k[0] == name for k in m), name
    assert m[("keydrift_node_up", frozenset({("node", "primary"), ("role", "primary")}))] == 1

    results = []

    def scrape():
        try:
            st, hdr, body = http_get(agent.url + "/metrics", timeout=20)
            results.append(st == 200 and b"keydrift_replica_lag_seconds" in body)
        except OSError as e:
            results.append(e)

    threads = [threading.Thread(target=scrape) for _ in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 200, [r for r in results if r is not True][:5]
    assert agent.proc.alive()


def test_unreachable_primary_is_retried_and_reported(h):
    port = free_port()
    agent = Agent(h, "127.0.0.1:%d" % port)
    wait_for(lambda: agent.metric("keydrift_node_up", node="primary", role="primary") == 0,
             what="primary down")
    st, hdr, body = http_get(agent.url + "/readyz")
    assert st == 503
    assert json.loads(body)["primary"] == "down"
    assert agent.proc.alive()

    primary = h.redis("primary")
    assert primary.port != port
    primary.stop()
    primary.port = port
    primary.start()
    wait_for(lambda: http_get(agent.url + "/readyz")[0] == 200, timeout=10, what="ready")
    assert agent.metric("keydrift_node_up", node="primary", role="primary") == 1


def test_bad_http_requests_get_4xx(h):
    primary = h.redis("primary")
    agent = Agent(h, primary)
    st, hdr, body = http_get(agent.url + "/nope")
    assert st == 404 and "error" in json.loads(body)
    st, hdr, body = http_get(agent.url + "/metrics", method="POST", data=b"x")
    assert st == 405
    assert "GET" in hdr.get("Allow", "")
    st, hdr, body = http_get(agent.url + "/api/v1/../../etc/passwd")
    assert 400 <= st < 500
    assert http_get(agent.url + "/healthz")[0] == 200


def test_config_check_and_errors(h):
    good = h.write_file("good.conf", "primary 127.0.0.1:6379\nreplica c1 127.0.0.1:6380 pubsub\n")
    p = h.run_keydrift("run", "-t", good)
    assert p.returncode == 0, p.stderr
    bad = h.write_file("bad.conf", "primary 127.0.0.1:6379\n\nheartbeat-interval 5 parsecs\n")
    p = h.run_keydrift("run", "-t", bad)
    assert p.returncode == 2
    assert (bad + ":3: option 'heartbeat-interval'").encode() in p.stderr, p.stderr
    p = h.run_keydrift("run", "-t", good, "--lag-warn", "soon")
    assert p.returncode == 2 and b"option 'lag-warn'" in p.stderr
    p = h.run_keydrift("run", "-t", "--http-listen", "0.0.0.0:9643")
    assert p.returncode == 2 and b"http-token-file" in p.stderr


def test_sighup_reload_applies_valid_and_keeps_running_on_invalid(h):
    primary = h.redis("primary")
    r1 = h.replica("r1", primary)
    r2 = h.replica("r2", primary)
    agent = Agent(h, primary, [("replica-1", r1, "native")])
    wait_for(lambda: agent.metric("keydrift_replica_lag_seconds", replica="replica-1") is not None,
             what="first replica measured")
    with open(agent.conf, "a") as f:
        f.write("replica replica-2 %s native\n" % r2.addr)
    agent.proc.signal(signal.SIGHUP)
    wait_for(lambda: agent.metric("keydrift_replica_lag_seconds", replica="replica-2") is not None,
             what="second replica measured after reload")
    assert "config: replica changed" in agent.proc.output()
    assert agent.metric("keydrift_config_reloads_total") == 1

    with open(agent.conf, "a") as f:
        f.write("bogus-option 1\n")
    agent.proc.signal(signal.SIGHUP)
    wait_for(lambda: "keeping the running configuration" in agent.proc.output(), what="log")
    assert "unknown option 'bogus-option'" in agent.proc.output()
    assert agent.metric("keydrift_replica_lag_seconds", replica="replica-2") is not None
    assert agent.metric("keydrift_config_reloads_total") == 1  # not applied: not counted
    assert agent.proc.alive()


def test_sigterm_exits_cleanly(h):
    primary = h.redis("primary")
    agent = Agent(h, primary)
    agent.proc.signal(signal.SIGTERM)
    agent.proc.p.wait(timeout=10 * SLOW)
    assert agent.proc.p.returncode == 0, agent.proc.output()
    assert "shutting down" in agent.proc.output()
