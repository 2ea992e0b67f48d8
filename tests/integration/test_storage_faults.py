"""The history database failing under the agent: read-only, full, locked,
deleted, the agent killed mid-write. Monitoring and metrics go on, the error
is visible, and history resumes when the disk does."""
import json
import os
import signal
import sqlite3
import subprocess

import pytest

from harness import SLOW, Agent, http_get, wait_for


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", path],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.decode().strip())
    return path


@pytest.fixture
def tmpfs(tmp_path):
    mounts = []

    def make(name, size="16m"):
        mounts.append(mount_tmpfs(str(tmp_path / name), size))
        return mounts[-1]
    yield make
    for m in reversed(mounts):
        subprocess.run(["umount", "-l", m], capture_output=True)


def storage(agent):
    m = agent.metrics()
    return (m.get(("keydrift_storage_errors_total", frozenset())),
            m.get(("keydrift_storage_writable", frozenset())))


def event_rows(db):
    """Events in the database; 0 while it does not exist (never creates it)."""
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    except sqlite3.Error:
        return 0
    try:
        return con.execute("SELECT count(*) FROM events").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def still_monitoring(agent, replica_name):
    """Lag is measured and metrics are served."""
    lag = agent.metric("keydrift_replica_lag_seconds", replica=replica_name)
    return lag is not None and lag < 1


def test_read_only_disk(h, tmpfs):
    d = tmpfs("ro")
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    extra = "history-db %s/h.db\n" % d
    first = Agent(h, primary, [("r1", replica, "native")], name="first", extra=extra)
    wait_for(lambda: event_rows(d + "/h.db") > 0, what="a history to start from")
    first.proc.stop()
    # The disk turns read-only (nothing has it open now), then the agent starts.
    subprocess.run(["mount", "-o", "remount,ro", d], check=True)
    agent = Agent(h, primary, [("r1", replica, "native")], name="second", extra=extra)
    replica.kill()  # status events to write
    wait_for(lambda: (storage(agent)[0] or 0) > 0 and storage(agent)[1] == 0, timeout=20,
             what="storage errors counted")
    st, hdr, body = http_get(agent.url + "/readyz")
    assert st == 503 and json.loads(body)["storage"] != "ok", body
    assert agent.proc.alive()
    assert "history database" in agent.proc.output()
    replica.start()
    wait_for(lambda: still_monitoring(agent, "r1"), what="lag still measured")

    subprocess.run(["mount", "-o", "remount,rw", d], check=True)
    wait_for(lambda: storage(agent)[1] == 1, timeout=30, what="storage writable again")
    wait_for(lambda: http_get(agent.url + "/readyz")[0] == 200, what="ready again")
    before = event_rows(d + "/h.db")
    replica.kill()
    wait_for(lambda: agent.replica_status("r1")["status"] == "down", what="replica down")
    replica.start()
    wait_for(lambda: event_rows(d + "/h.db") > before, timeout=30, what="history resumes")


def test_full_disk(h, tmpfs):
    d = tmpfs("full", size="300k")
    primary = h.redis("primary")
    cache = h.redis("cache")
    p = primary.client()
    pipe = p.pipeline(transaction=False)
    for i in range(5000):
        pipe.set(b"full:%d:" % i + b"x" * 200, i)  # never published: all missing
    pipe.execute()
    agent = Agent(h, primary, [("c1", cache, "pubsub")], name="agentfull",
                  extra="history-db %s/h.db\nrepair off\nsample-modes scan\n"
                        "max-commands-per-sec 100000\n" % d)
    h.sync(primary, cache)
    wait_for(lambda: (storage(agent)[0] or 0) > 0, timeout=60, what="the disk filled up")
    assert storage(agent)[1] == 0
    assert "full" in agent.proc.output()
    # Monitoring goes on: divergences are still counted and lag measured.
    wait_for(lambda: (agent.metric("keydrift_divergent_keys", replica="c1", kind="missing")
                      or 0) >= 4000, timeout=60, what="detection goes on")
    assert still_monitoring(agent, "c1")
    assert http_get(agent.url + "/readyz")[0] == 503
    assert agent.proc.alive()


def test_locked_database(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    agent = Agent(h, primary, [("r1", replica, "native")])
    wait_for(lambda: storage(agent)[1] == 1 and event_rows(agent.db) > 0, what="writable")
    con = sqlite3.connect(agent.db, timeout=1, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        replica.kill()
        wait_for(lambda: (storage(agent)[0] or 0) > 0, timeout=20 * SLOW,
                 what="a locked database counted as an error")
        assert still_monitoring(agent, "r1") or agent.replica_status("r1")["status"] == "down"
    finally:
        con.execute("ROLLBACK")
        con.close()
    before = event_rows(agent.db)
    replica.start()
    wait_for(lambda: storage(agent)[1] == 1 and event_rows(agent.db) > before, timeout=30,
             what="history written again after the lock")


def test_locked_database_queue_is_bounded_and_every_drop_counted(h):
    """While another writer holds the database, history writes wait up to the
    queue's bound (10,000, plus the batch being retried), the rest are dropped
    and counted, and the queue drains once the lock is gone: at length 0,
    every record is written or counted."""
    primary = h.redis("primary")
    cache = h.redis("cache")
    n = 12000
    pipe = primary.client().pipeline(transaction=False)
    for i in range(n):
        pipe.set("lost:%d" % i, i)  # never published: each one a missing key
    pipe.execute()
    h.sync(primary, cache)
    agent = Agent(h, primary, [("c1", cache, "pubsub")], name="agentq",
                  extra="repair off\nsample-modes scan\nmax-commands-per-sec 100000\n"
                        "scan-count 1000\n")
    wait_for(lambda: storage(agent)[1] == 1 and event_rows(agent.db) > 0, what="writable")
    con = sqlite3.connect(agent.db, timeout=1, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        wait_for(lambda: (agent.metric("keydrift_divergences_confirmed_total", replica="c1",
                                       kind="missing") or 0) >= n, timeout=60 * SLOW,
                 what="every key confirmed missing")
        m = agent.metrics()
        queued = m[("keydrift_storage_queue_length", frozenset())]
        dropped = m[("keydrift_storage_dropped_total", frozenset())]
        print("locked: queued %d, dropped %d" % (queued, dropped))
        # The queue's bound plus the one batch (at most 1,000) the writer
        # holds and retries; every other record was dropped and counted.
        assert 10000 < queued <= 11000, queued
        assert dropped >= n - queued, (queued, dropped)
    finally:
        con.execute("ROLLBACK")
        con.close()
    wait_for(lambda: agent.metric("keydrift_storage_queue_length") == 0, timeout=30 * SLOW,
             what="the queue drained")
    dropped = agent.metric("keydrift_storage_dropped_total")
    con = sqlite3.connect(agent.db)
    rows = con.execute("SELECT count(*) FROM divergences WHERE kind='missing'").fetchone()[0]
    con.close()
    print("after: %d divergences written, %d writes dropped" % (rows, dropped))
    assert rows >= 1000 and rows + dropped >= n, (rows, dropped)


def test_database_deleted_under_the_agent(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    agent = Agent(h, primary, [("r1", replica, "native")])
    wait_for(lambda: event_rows(agent.db) > 0, what="history written")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(agent.db + suffix):
            os.unlink(agent.db + suffix)
    replica.kill()
    wait_for(lambda: os.path.exists(agent.db) and event_rows(agent.db) > 0, timeout=20,
             what="the database recreated with new history")
    assert agent.proc.alive()


def test_kill_9_mid_write_keeps_the_database_intact(h):
    primary = h.redis("primary")
    cache = h.redis("cache")
    p = primary.client()
    pipe = p.pipeline(transaction=False)
    for i in range(20000):
        pipe.set("k9:%d" % i, i)
    pipe.execute()
    agent = Agent(h, primary, [("c1", cache, "pubsub")],
                  extra="repair off\nsample-modes scan\nmax-commands-per-sec 200000\n")
    h.sync(primary, cache)
    wait_for(lambda: (agent.metric("keydrift_divergent_keys", replica="c1", kind="missing")
                      or 0) > 2000, timeout=60, what="many divergences being written")
    agent.proc.signal(signal.SIGKILL)
    agent.proc.p.wait()
    con = sqlite3.connect(agent.db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    n = con.execute("SELECT count(*) FROM divergences").fetchone()[0]
    con.close()
    # History continues after a restart on the same file.
    again = Agent(h, primary, [("c1", cache, "pubsub")], name="agent",
                  extra="repair off\nsample-modes scan\nmax-commands-per-sec 200000\n")
    assert again.db == agent.db
    wait_for(lambda: sqlite3.connect(agent.db).execute(
        "SELECT count(*) FROM events WHERE type='start'").fetchone()[0] >= 2,
        what="the restarted agent writes history")
    con = sqlite3.connect(agent.db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM divergences").fetchone()[0] >= n
    con.close()
