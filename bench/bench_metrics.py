"""Benchmark 5: /metrics under 50 concurrent scrapers, keydrift vs
prometheus-redis-exporter.

Primary + native replica + pubsub cache (`keydrift sync`); the agent watches
all three; prometheus-redis-exporter points at the primary. wrk (2 threads,
50 connections, ROUND seconds) alternates between the two, ROUNDS times.
Latency percentiles come from `wrk --latency`; RSS from /proc after each
round (VmRSS) and the peak (VmHWM) at the end.
"""
import os
import re
import subprocess
import sys
import time

from common import Agent, Out, Topology, harness, http_get, median, rss_kb, wait_for

ROUNDS = int(os.environ.get("BENCH_METRICS_ROUNDS", "3"))
SECS = int(os.environ.get("BENCH_METRICS_SECONDS", "5"))


def to_ms(s):
    m = re.match(r"([\d.]+)(us|ms|s)$", s)
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v


def wrk(url):
    out = subprocess.run(["wrk", "-t2", "-c50", "-d%ds" % SECS, "--latency", "--timeout", "5s",
                          url], capture_output=True, text=True, timeout=SECS + 30).stdout
    p50 = to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))
    p99 = to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return p50, p99, rps, (int(errs.group(1)) if errs else 0), (sock.group(1) if sock else "")


def main():
    out = Out("metrics", "5. /metrics under 50 concurrent scrapers")
    with Topology() as h:
        p = h.redis("primary")
        rep = h.replica("replica", p)
        cache = h.redis("cache")
        h.sync(p, cache)
        p.client().eval("for i=1,10000 do redis.call('SET', 'key:'..i, 'v'..i) end return 1", 0)
        agent = Agent(h, p, [("replica", rep, "native"), ("cache", cache, "pubsub")],
                      extra="log-level warning\n")
        eport = harness.free_port()
        exp = harness.Proc(["prometheus-redis-exporter", "--redis.addr=redis://" + p.addr,
                            "--web.listen-address=127.0.0.1:%d" % eport],
                           os.path.join(h.tmp, "exporter.log"))
        h.procs.append(exp)
        eurl = "http://127.0.0.1:%d/metrics" % eport
        wait_for(lambda: http_get(eurl, timeout=2)[0] == 200, timeout=15, what="exporter")
        time.sleep(1)
        targets = [("keydrift", agent.url + "/metrics", agent.proc.pid),
                   ("redis_exporter", eurl, exp.pid)]
        sizes = {n: len(http_get(u)[2]) for n, u, _ in targets}
        res = {n: [] for n, _, _ in targets}
        for i in range(ROUNDS):
            order = targets if i % 2 == 0 else targets[::-1]
            for name, url, pid in order:
                r = wrk(url)
                res[name].append(r + (rss_kb(pid),))
        hwm = {n: rss_kb(pid, "VmHWM") for n, _, pid in targets}
    rows = []
    for name, _, _ in targets:
        v = res[name]
        rows.append([name, "%d B" % sizes[name], " ".join("%.2f" % x[0] for x in v),
                     "%.2f" % median([x[0] for x in v]), " ".join("%.2f" % x[1] for x in v),
                     "%.2f" % median([x[1] for x in v]), "%.0f" % median([x[2] for x in v]),
                     sum(x[3] for x in v), "%.1f" % (median([x[5] for x in v]) / 1024),
                     "%.1f" % (hwm[name] / 1024)])
    out.add("`wrk -t2 -c50 -d%ds --latency` per round, %d rounds alternating the target; "
            "same topology (primary + native replica + pubsub cache)." % (SECS, ROUNDS), "")
    out.table(["target", "body", "p50 ms per round", "p50 ms median", "p99 ms per round",
               "p99 ms median", "req/s median", "non-2xx", "RSS MB", "peak RSS MB"], rows)
    k, e = res["keydrift"], res["redis_exporter"]
    out.add("**ratios keydrift / redis_exporter: p50 %.3f, p99 %.3f, req/s %.1f, RSS %.2f**" % (
        median([x[0] for x in k]) / median([x[0] for x in e]),
        median([x[1] for x in k]) / median([x[1] for x in e]),
        median([x[2] for x in k]) / median([x[2] for x in e]),
        median([x[5] for x in k]) / median([x[5] for x in e])), "")
    out.save()


if __name__ == "__main__":
    sys.exit(main())
