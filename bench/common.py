"""Shared helpers for the benchmarks: the integration-test harness (real
redis-server and keydrift processes on free loopback ports, all stopped at the
end), statistics, /proc readings and result rows.
"""
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("KEYDRIFT_BIN", os.path.join(ROOT, "keydrift"))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import harness  # noqa: E402,F401  (re-exported)
from harness import Agent, Harness, http_get, parse_metrics, wait_for  # noqa: E402,F401

RESULTS = os.path.join(ROOT, "bench", "results")


class Topology:
    """A Harness in a fresh temp dir; use as a context manager."""

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="kdbench-")
        self.h = Harness(self.tmp)
        return self.h

    def __exit__(self, *exc):
        self.h.cleanup()
        import shutil
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def pct(xs, p):
    """p-th percentile (nearest rank) of xs."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def rss_kb(pid, field="VmRSS"):
    """VmRSS (or VmHWM, the peak) of a process in kB, from /proc."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def now_ms():
    return int(time.time() * 1000)


class Out:
    """Collects a benchmark's markdown lines; prints them and writes
    bench/results/<name>.md."""

    def __init__(self, name, title):
        self.name = name
        self.lines = ["## " + title, ""]

    def add(self, *lines):
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)

    def table(self, header, rows):
        self.add("| " + " | ".join(header) + " |",
                 "|" + "|".join("---" for _ in header) + "|")
        for r in rows:
            self.add("| " + " | ".join(str(c) for c in r) + " |")
        self.add("")

    def save(self):
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, self.name + ".md"), "w") as f:
            f.write("\n".join(self.lines) + "\n")
