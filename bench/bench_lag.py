"""Benchmark 3: heartbeat lag accuracy under an injected stall.

Primary + native replica + pubsub cache with `keydrift sync`; the agent with
default lag settings (heartbeat-interval 20ms, lag-poll-interval 20ms). Each
stall SIGSTOPs the sync process and the replica's redis-server at the same
moment, waits T, scrapes /metrics, then SIGCONTs both. Error = the reported
keydrift_replica_lag_seconds - the time since SIGSTOP at the middle of the
scrape. Stalls are repeated and interleaved by length.

That error assumes both copies were current when stopped. Before each stall
a probe key is SET and PUBLISHed on the primary and both copies are read
directly until they show it; the stall starts right after, so a copy that
happened to be behind is not counted as the agent's error. (Before the probe,
a first 0.5 s native stall read +335 and +349 ms in two `make bench` runs.)
"""
import os
import random
import signal
import sys
import time

from common import Agent, Out, Topology, http_get, median, parse_metrics, wait_for

STALLS = [float(x) for x in os.environ.get("BENCH_LAG_STALLS", "0.5 2 5").split()]
REPS = int(os.environ.get("BENCH_LAG_REPS", "3"))
HB = os.environ.get("BENCH_LAG_HEARTBEAT", "")


def lag_of(m, name):
    return m.get(("keydrift_replica_lag_seconds", frozenset({("replica", name)})))


def main():
    hb_note = HB or "20ms (default)"
    out = Out("lag" + ("-" + HB if HB else ""),
              "3. Lag accuracy (injected stall), heartbeat-interval %s" % hb_note)
    res = {(k, t): [] for k in ("native", "pubsub") for t in STALLS}
    with Topology() as h:
        p = h.redis("primary")
        rep = h.replica("replica", p)
        cache = h.redis("cache")
        sync = h.sync(p, cache)
        extra = "sample-modes scan\nlog-level warning\n"
        if HB:
            extra += "heartbeat-interval %s\n" % HB
        agent = Agent(h, p, [("replica", rep, "native"), ("cache", cache, "pubsub")], extra=extra)

        def settled():
            m = agent.metrics()
            return all(v is not None and v < 0.15 for v in (lag_of(m, "replica"), lag_of(m, "cache")))
        wait_for(settled, timeout=10, what="lag settled")
        pc, rc, cc = p.client(), rep.client(), cache.client()
        probe = 0

        def caught_up():
            """Both copies show a write made now (read directly, not through the agent)."""
            nonlocal probe
            probe += 1
            pc.set("bench:probe", probe)
            pc.publish("cache_update", "bench:probe")
            want = str(probe).encode()
            wait_for(lambda: rc.get("bench:probe") == want and cc.get("bench:probe") == want,
                     timeout=10, interval=0.001, what="copies to show the probe")
        for _ in range(REPS):
            for t in STALLS:
                time.sleep(0.3 + random.uniform(0, 0.1))  # random phase against the heartbeat
                caught_up()
                t0 = time.monotonic()
                os.kill(sync.pid, signal.SIGSTOP)
                os.kill(rep.proc.pid, signal.SIGSTOP)
                t1 = time.monotonic()
                stop_at = (t0 + t1) / 2
                time.sleep(max(0, stop_at + t - time.monotonic()))
                a = time.monotonic()
                body = http_get(agent.url + "/metrics")[2].decode()
                b = time.monotonic()
                os.kill(rep.proc.pid, signal.SIGCONT)
                os.kill(sync.pid, signal.SIGCONT)
                m = parse_metrics(body)
                elapsed = (a + b) / 2 - stop_at
                res[("native", t)].append(lag_of(m, "replica") - elapsed)
                res[("pubsub", t)].append(lag_of(m, "cache") - elapsed)
                wait_for(settled, timeout=20, what="lag settled after the stall")
    rows = []
    for kind in ("native", "pubsub"):
        for t in STALLS:
            errs = [e * 1000 for e in res[(kind, t)]]
            rows.append([kind, t, len(errs), " ".join("%+.0f" % e for e in errs),
                         "%+.0f" % median(errs), "%.0f" % max(abs(e) for e in errs),
                         "yes" if max(abs(e) for e in errs) <= 50 else "no"])
    out.add("Agent defaults except `sample-modes scan`; heartbeat-interval %s, lag-poll-interval "
            "20ms. Error = reported lag - true time since SIGSTOP (ms)." % hb_note, "")
    out.table(["kind", "stall s", "n", "errors ms", "median ms", "max abs ms", "within +-50 ms"],
              rows)
    out.save()


if __name__ == "__main__":
    sys.exit(main())
