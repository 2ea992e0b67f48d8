"""Benchmark 1: comparison throughput of `keydrift check` against the raw
pipelined DUMP rate of the same primary.

1M small string keys key:000000000000 .. key:000000999999 (the names
redis-benchmark's -r 1000000 __rand_int__ produces) on a primary with one
native replica. One unmeasured check first (a warm-up), then each round,
interleaved: redis-benchmark DUMP (1 connection,
pipeline 64, random keys of that set), then `keydrift check` with the budget
lifted, under /usr/bin/time -v for the peak RSS.

BENCH_KEYS (default 1000000) and BENCH_COMPARE_ROUNDS (5) change the size;
KEYDRIFT_BASELINE_BIN=/path/to/an/older/keydrift adds that binary's check to
every round (the two alternate which goes first), for a before/after on the
same data and the same noise.
"""
import csv
import io
import json
import os
import subprocess
import sys
import time

from common import ROOT, Out, Topology, median, wait_for

KEYS = int(os.environ.get("BENCH_KEYS", "1000000"))
ROUNDS = int(os.environ.get("BENCH_COMPARE_ROUNDS", "5"))
KEYDRIFT = os.environ["KEYDRIFT_BIN"]
BASELINE = os.environ.get("KEYDRIFT_BASELINE_BIN")
LOAD = ("for i=ARGV[1],ARGV[2] do redis.call('SET', string.format('key:%012d', i), 'val'..i) end "
        "return 1")


def dump_rate(port, n):
    out = subprocess.run(["redis-benchmark", "-p", str(port), "-n", str(n), "-c", "1", "-P", "64",
                          "-r", str(KEYS), "--csv", "DUMP", "key:__rand_int__"],
                         capture_output=True, text=True, timeout=120).stdout
    rows = list(csv.reader(io.StringIO(out)))
    return float(rows[1][1])


def cpu_s(server):
    c = server.client().info("cpu")
    return c["used_cpu_sys"] + c["used_cpu_user"]


def check(primary, replica, binary=KEYDRIFT):
    argv = ["/usr/bin/time", "-v", binary, "check", "--json",
            "--primary", primary.addr, "--replica", "r1", replica.addr, "native",
            "--max-commands-per-sec", "100000000", "--scan-count", "1000"]
    t0 = time.monotonic()
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    doc = json.loads(p.stdout)
    rss = next(int(line.split()[-1]) for line in p.stderr.splitlines()
               if "Maximum resident set size" in line)
    cpu = next(line.split()[-1] for line in p.stderr.splitlines() if "Percent of CPU" in line)
    assert p.returncode == 0 and doc["consistent"], (p.returncode, p.stdout[:500], p.stderr[-500:])
    return doc["keys_checked"], doc["duration_seconds"], wall, rss, cpu


def main():
    out = Out("compare", "1. Comparison throughput (`keydrift check` vs raw DUMP)")
    with Topology() as h:
        p = h.redis("primary", args=["--enable-debug-command", "yes"])
        r = h.replica("replica", p)
        c = p.client(timeout=60)
        step = 100000
        for a in range(0, KEYS, step):
            c.eval(LOAD, 0, a, min(a + step, KEYS) - 1)
        wait_for(lambda: r.client().dbsize() == KEYS, timeout=60, what="replica to load")
        dbsize = c.dbsize()
        mem = c.info("memory")["used_memory_human"]
        # One check before the rounds, not counted: in some runs the first
        # pass over freshly loaded servers ran up to 40 % slower, whichever
        # build went first, which is not the check's own speed.
        check(p, r)
        rows, ratios, rates, raws, rsss = [], [], [], [], []
        base_rates, base_ratios = [], []
        for i in range(ROUNDS):
            raw = dump_rate(p.port, KEYS)
            raws.append(raw)
            # With a baseline, the two alternate which runs first.
            order = [KEYDRIFT] + ([BASELINE] if BASELINE else [])
            for binary in order if i % 2 == 0 else order[::-1]:
                c0, r0 = cpu_s(p), cpu_s(r)
                t0 = time.monotonic()
                checked, secs, wall, rss, acpu = check(p, r, binary)
                dt = time.monotonic() - t0
                pc, rc = 100 * (cpu_s(p) - c0) / dt, 100 * (cpu_s(r) - r0) / dt
                rate = dbsize / secs
                label = str(i + 1)
                if binary == KEYDRIFT:
                    ratios.append(rate / raw)
                    rates.append(rate)
                    rsss.append(rss)
                else:
                    base_ratios.append(rate / raw)
                    base_rates.append(rate)
                    label += " (baseline)"
                rows.append([label, "%.0f" % raw, checked, "%.2f" % secs, "%.0f" % rate,
                             "%.1f %%" % (100 * rate / raw), "%.1f" % (rss / 1024), acpu,
                             "%.0f %%" % pc, "%.0f %%" % rc])
        out.add("%d keys (%s used on the primary), primary + 1 native replica; "
                "`keydrift check --max-commands-per-sec 100000000 --scan-count 1000`; "
                "raw = `redis-benchmark -c 1 -P 64 -r %d DUMP key:__rand_int__`." % (dbsize, mem, KEYS),
                "")
        out.table(["round", "raw DUMP/s", "keys_checked", "check s", "keys verified/s",
                   "ratio", "check peak RSS MB", "check CPU", "primary CPU", "replica CPU"], rows)
        out.add("**median: %.0f keys/s vs %.0f DUMP/s = %.1f %% (goal >= 50 %%); peak RSS max %.1f MB "
                "(goal <= 32 MB)**" % (median(rates), median(raws), 100 * median(ratios),
                                       max(rsss) / 1024), "")
        if BASELINE:
            out.add("baseline (%s): median %.0f keys/s = %.1f %%; current / baseline %.2fx" % (
                BASELINE, median(base_rates), 100 * median(base_ratios),
                median(rates) / median(base_rates)), "")
    out.save()


if __name__ == "__main__":
    sys.exit(main())
