"""Benchmark 2: detection delay of a lost pub/sub update in watch mode.

Primary + one pubsub cache served by `keydrift sync`; the agent runs with
`sample-modes watch` only. A writer process writes bg:<n> keys at a fixed
rate and PUBLISHes each one (the sync applies them). Meanwhile probe keys
lost:<rate>:<i> are SET on the primary and NOT published: each is a lost
update. Delay per probe = divergences.confirmed_at (SQLite, wall ms) minus
the wall time just before the probe's SET.
"""
import os
import sqlite3
import subprocess
import sys
import time

from common import Agent, Out, Topology, now_ms, pct, wait_for

RATES = [int(x) for x in os.environ.get("BENCH_DETECT_RATES", "1000 10000").split()]
PROBES = int(os.environ.get("BENCH_DETECT_PROBES", "50"))
PROBE_GAP = 0.12
BUDGET = 1000000


def writer(port, rate, seconds):
    """Child process: SET + PUBLISH bg keys at `rate` writes/s, in 10 ms ticks."""
    import redis
    c = redis.Redis(port=port)
    tick = 0.01
    per = rate * tick
    t0 = time.monotonic()
    n = 0
    owed = 0.0
    while time.monotonic() - t0 < seconds:
        owed += per
        k = int(owed)
        owed -= k
        pl = c.pipeline(transaction=False)
        for _ in range(k):
            key = "bg:%d" % (n % 20000)
            pl.set(key, "v%d" % n)
            pl.publish("cache_update", key)
            n += 1
        pl.execute()
        nxt = t0 + (n / rate if rate else tick)
        d = nxt - time.monotonic()
        if d > 0:
            time.sleep(d)
    print(n / (time.monotonic() - t0), flush=True)


def run_rate(h, rate):
    p = h.redis("primary-%d" % rate)
    cache = h.redis("cache-%d" % rate)
    h.sync(p, cache, name="sync-%d" % rate)
    agent = Agent(h, p, [("cache", cache, "pubsub")], name="agent-%d" % rate,
                  extra="sample-modes watch\nmax-commands-per-sec %d\nlog-level warning\n" % BUDGET)
    wait_for(lambda: agent.metric("keydrift_watch_enabled") == 1, timeout=10,
             what="watch mode on")
    wait_for(lambda: (agent.metric("keydrift_replica_lag_seconds", replica="cache") or 9) < 0.5,
             timeout=10, what="cache lag known")
    secs = 3 + PROBES * PROBE_GAP + 1.5
    w = subprocess.Popen([sys.executable, __file__, "--writer", str(p.port), str(rate), str(secs)],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(2)  # let the background traffic settle
    c = p.client()
    sent = {}
    for i in range(PROBES):
        key = "lost:%d:%d" % (rate, i)
        t = now_ms()
        c.set(key, "x")
        sent[key.encode()] = t
        time.sleep(PROBE_GAP)
    achieved = float(w.communicate(timeout=60)[0].strip() or 0)

    def rows():
        con = sqlite3.connect(agent.db, timeout=5)
        try:
            return con.execute("SELECT key, confirmed_at FROM divergences "
                               "WHERE confirmed_at IS NOT NULL").fetchall()
        finally:
            con.close()
    try:
        wait_for(lambda: sum(bytes(k) in sent for k, _ in rows()) >= PROBES, timeout=15,
                 what="all probes confirmed")
    except AssertionError:
        pass
    got = {bytes(k): at for k, at in rows()}
    delays = [(got[k] - t) / 1000.0 for k, t in sent.items() if k in got]
    false = sum(1 for k in got if k.startswith(b"bg:"))
    m = agent.metrics()
    q = m.get(("keydrift_watch_dropped_total", frozenset()), 0)
    return [rate, "%.0f" % achieved, "%d/%d" % (len(delays), PROBES),
            "%.3f" % pct(delays, 50), "%.3f" % pct(delays, 99), "%.3f" % max(delays or [0]),
            false, int(q)]


def main():
    out = Out("detect", "2. Detection delay (watch mode, lost publish -> confirmed)")
    with Topology() as h:
        rows = [run_rate(h, r) for r in RATES]
    out.add("Primary + 1 pubsub cache with `keydrift sync`; agent `sample-modes watch`, "
            "`max-commands-per-sec %d`, other options default (heartbeat 20ms, "
            "watch-grace 200ms). %d unpublished probe writes per rate, %.2f s apart; delay = "
            "SQLite `divergences.confirmed_at` - wall time before the SET." % (BUDGET, PROBES,
                                                                                 PROBE_GAP), "")
    out.table(["background writes/s (target)", "achieved/s", "probes confirmed",
               "p50 s", "p99 s", "max s", "false alarms (bg keys)", "watch drops"], rows)
    out.save()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    else:
        sys.exit(main())
