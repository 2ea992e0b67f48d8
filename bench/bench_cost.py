"""Benchmark 4: the agent's own cost on the primary.

Primary with 100k keys, one native replica, one pubsub cache (same keys, so
consistent) with `keydrift sync`. Phases of PHASE seconds: no agent (idle
reference, at the start and at the end), then the agent with the default
sample modes at max-commands-per-sec 1000, 5000 (default) and 20000. Per
phase, deltas on the primary of INFO commandstats (calls, our own two INFO
calls removed) and INFO cpu (used_cpu_sys + used_cpu_user).
"""
import os
import sys
import time

from common import Agent, Out, Topology, wait_for

PHASE = float(os.environ.get("BENCH_COST_SECONDS", "20"))
BUDGETS = [int(x) for x in os.environ.get("BENCH_COST_BUDGETS", "1000 5000 20000").split()]
KEYS = 100000


def snap(c):
    stats = c.info("commandstats")
    cpu = c.info("cpu")
    calls = {k[len("cmdstat_"):]: v["calls"] for k, v in stats.items()}
    return time.monotonic(), calls, cpu["used_cpu_sys"] + cpu["used_cpu_user"]


def measure(c, secs):
    t0, a, cpu0 = snap(c)
    time.sleep(secs)
    t1, b, cpu1 = snap(c)
    dt = t1 - t0
    delta = {k: b.get(k, 0) - a.get(k, 0) for k in b}
    delta["info"] = delta.get("info", 0) - 2
    total = sum(delta.values())
    top = sorted(((v, k) for k, v in delta.items() if v > 0), reverse=True)[:4]
    return total / dt, 100.0 * (cpu1 - cpu0) / dt, ", ".join("%s %.0f" % (k, v / dt)
                                                              for v, k in top)


def main():
    out = Out("cost", "4. The agent's own cost on the primary")
    rows = []
    with Topology() as h:
        p = h.redis("primary")
        rep = h.replica("replica", p)
        cache = h.redis("cache")
        # DEBUG POPULATE is not replicated: a script's SETs are.
        load = "for i=1,ARGV[1] do redis.call('SET', 'key:'..i, 'val'..i) end return 1"
        p.client(timeout=60).eval(load, 0, KEYS)
        cache.client(timeout=60).eval(load, 0, KEYS)
        wait_for(lambda: rep.client().dbsize() == KEYS, timeout=30, what="replica loaded")
        h.sync(p, cache)
        c = p.client()
        idle = []
        r = measure(c, PHASE)
        idle.append(r)
        rows.append(["none (idle, before)", "-", "%.0f" % r[0], "%.2f" % r[1], r[2]])
        for b in BUDGETS:
            agent = Agent(h, p, [("replica", rep, "native"), ("cache", cache, "pubsub")],
                          name="agent-%d" % b,
                          extra="max-commands-per-sec %d\nlog-level warning\n" % b)
            time.sleep(2)  # past start-up
            r = measure(c, PHASE)
            checked = sum(v for k, v in agent.metrics().items()
                          if k[0] == "keydrift_keys_checked_total")
            agent.proc.stop()
            rows.append(["keydrift run", "%d%s" % (b, " (default)" if b == 5000 else ""),
                         "%.0f" % r[0], "%.2f" % r[1], r[2] + "; keys checked %d" % checked])
            time.sleep(1)
        r = measure(c, PHASE)
        idle.append(r)
        rows.append(["none (idle, after)", "-", "%.0f" % r[0], "%.2f" % r[1], r[2]])
    out.add("Primary with %d keys + 1 native replica + 1 pubsub cache (`keydrift sync`); "
            "agent with default sample modes (scan replica-scan random watch); %.0f s per phase. "
            "CPU = primary's used_cpu_sys+user delta as %% of one core." % (KEYS, PHASE), "")
    out.table(["agent", "max-commands-per-sec", "primary cmds/s", "primary CPU %",
               "top commands/s"], rows)
    base = (idle[0][0] + idle[1][0]) / 2, (idle[0][1] + idle[1][1]) / 2
    out.add("Idle reference (mean of before/after): %.0f cmds/s, %.2f %% CPU; the agent's "
            "share is each row minus that." % base, "")
    out.save()


if __name__ == "__main__":
    sys.exit(main())
