"""Test harness: real redis-server processes and keydrift processes on private
ports in temp dirs. Every process started through a Harness is stopped when the
test ends, whether it passed or not. Waits are on conditions, not fixed sleeps.
"""
import os
import signal
import socket
import subprocess
import time

import redis

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
KEYDRIFT = os.environ.get("KEYDRIFT_BIN") or os.path.join(ROOT, "keydrift")
KEYDRIFT = os.path.abspath(KEYDRIFT)
SANITIZED = bool(os.environ.get("KEYDRIFT_SANITIZED"))
# Sanitizer builds run slower; timing bounds scale by this factor.
SLOW = 3.0 if SANITIZED else 1.0


def free_port():
    """A port nothing listens on now (the kernel's choice, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout=10.0, interval=0.02, what="condition"):
    """Polls cond() until it returns a truthy value, which is returned."""
    deadline = time.monotonic() + timeout * SLOW
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except (redis.exceptions.RedisError, OSError) as e:
            last_exc = e
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s (last error: %r)"
                         % (timeout * SLOW, what, last_exc))


class Proc:
    """A child process with its log in the test's temp dir."""

    def __init__(self, argv, logpath, env=None, cwd=None):
        self.argv = argv
        self.logpath = logpath
        self.log = open(logpath, "ab")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.p = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=full_env, cwd=cwd)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def stop(self, timeout=10):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGCONT)
                self.p.terminate()
                self.p.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                self.p.kill()
                self.p.wait()
        self.log.close()
        return self.p.returncode

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def output(self):
        with open(self.logpath, "rb") as f:
            return f.read().decode("utf-8", "replace")


class RedisServer:
    """One redis-server on a private port in its own directory."""

    def __init__(self, h, name, port=None, args=()):
        self.h = h
        self.name = name
        self.port = port or free_port()
        self.dir = os.path.join(h.tmp, name)
        os.makedirs(self.dir, exist_ok=True)
        self.args = list(args)
        self.proc = None
        self.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", self.dir, "--save", "", "--appendonly", "no",
                "--protected-mode", "no", "--daemonize", "no",
                "--logfile", "", "--repl-diskless-sync", "yes",
                "--repl-diskless-sync-delay", "0"] + self.args
        self.proc = Proc(argv, os.path.join(self.dir, "redis.log"))
        wait_for(self.ping, timeout=10, what="redis %s to answer PING" % self.name)

    def ping(self):
        try:
            return self.client(timeout=0.5).ping()
        except redis.exceptions.RedisError:
            return False

    def client(self, timeout=5.0, db=0):
        return redis.Redis(host="127.0.0.1", port=self.port, db=db,
                           socket_timeout=timeout, socket_connect_timeout=timeout)

    def stop(self):
        if self.proc:
            self.proc.stop()

    def kill(self):
        if self.proc:
            self.proc.kill()

    def pause(self):
        self.proc.signal(signal.SIGSTOP)

    def resume(self):
        self.proc.signal(signal.SIGCONT)

    def info(self, section=None):
        return self.client().info(section) if section else self.client().info()


class Harness:
    """Owns every process a test starts; cleanup() stops them all."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.procs = []
        self.servers = []

    def redis(self, name, args=()):
        s = RedisServer(self, name, args=args)
        self.servers.append(s)
        return s

    def replica(self, name, primary, args=()):
        s = self.redis(name, args=list(args) + ["--replicaof", "127.0.0.1", str(primary.port)])
        wait_for(lambda: s.info("replication").get("master_link_status") == "up",
                 timeout=15, what="replica %s link up" % name)
        return s

    def keydrift(self, *args, name="keydrift", env=None):
        p = Proc([KEYDRIFT] + [str(a) for a in args],
                 os.path.join(self.tmp, "%s-%d.log" % (name, len(self.procs))), env=env)
        self.procs.append(p)
        return p

    def run_keydrift(self, *args, timeout=60, env=None, input=None):
        """Runs keydrift to completion; returns CompletedProcess (text)."""
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        return subprocess.run([KEYDRIFT] + [str(a) for a in args], capture_output=True,
                              timeout=timeout * SLOW, env=full_env, input=input)

    def sync(self, primary, cache, *extra, name="sync"):
        """Starts `keydrift sync` serving cache from primary; waits until subscribed."""
        channel = "cache_update"
        ex = [str(e) for e in extra]
        if "--channel" in ex:
            channel = ex[ex.index("--channel") + 1]
        before = primary.client().pubsub_numsub(channel)[0][1]
        p = self.keydrift("sync", "--primary", primary.addr, "--cache", cache.addr, *ex,
                          name=name)
        wait_for(lambda: primary.client().pubsub_numsub(channel)[0][1] > before or not p.alive(),
                 timeout=10, what="keydrift sync to subscribe")
        assert p.alive(), p.output()
        return p

    def write_file(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def cleanup(self):
        for p in reversed(self.procs):
            p.stop()
        for s in reversed(self.servers):
            s.stop()

    def sanitizer_reports(self):
        """AddressSanitizer/UBSan/LeakSanitizer reports in any keydrift log."""
        reports = []
        for p in self.procs:
            out = p.output()
            for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                           "runtime error:"):
                if marker in out:
                    i = out.index(marker)
                    reports.append("%s: %s" % (p.logpath, out[max(0, i - 200):i + 1500]))
        return reports


class SlowSubscriber:
    """A key-format subscriber that applies each message `delay` seconds after
    it arrived: a cache whose queue is always `delay` behind. Applying copies
    the key's current state from the primary, as `keydrift sync` does. Keys
    for which skip(key) is true are never applied."""

    def __init__(self, h, primary, cache, delay, channel="cache_update", skip=None):
        import collections
        import threading
        self.delay = delay
        self.skip = skip
        self.logpath = os.path.join(h.tmp, "slow-subscriber.log")
        self.applied = 0
        self.error = None
        self._queue = collections.deque()
        self._src = primary.client()
        self._dst = cache.client()
        self._ps = primary.client().pubsub(ignore_subscribe_messages=True)
        self._ps.subscribe(channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        h.procs.append(self)

    def _apply(self, key):
        if self.skip and self.skip(key):
            return
        p = self._src.pipeline(transaction=True)
        p.dump(key)
        p.pttl(key)
        payload, pttl = p.execute()
        if payload is None:
            self._dst.delete(key)
        else:
            self._dst.restore(key, max(pttl, 0), payload, replace=True)
        self.applied += 1

    def _run(self):
        try:
            while not self._stop.is_set():
                m = self._ps.get_message(timeout=0.005)
                while m:
                    self._queue.append((time.monotonic() + self.delay, m["data"]))
                    m = self._ps.get_message(timeout=0)
                while self._queue and self._queue[0][0] <= time.monotonic():
                    self._apply(self._queue.popleft()[1])
        except (redis.exceptions.RedisError, OSError) as e:
            if not self._stop.is_set():
                self.error = e

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self._ps.close()

    def output(self):
        return ""


def http_get(url, timeout=5.0, method="GET", data=None, headers=None):
    """(status, headers, body bytes) of one request; HTTP errors are returned, not raised."""
    import urllib.error
    import urllib.request
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def parse_metrics(text):
    """{(name, frozenset(labels.items())): value} from Prometheus text format."""
    import re
    out = {}
    line_re = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$')
    label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        assert m, "unparsable metrics line: %r" % line
        labels = frozenset(label_re.findall(m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


class Agent:
    """A running `keydrift run` with its config file and HTTP port."""

    def __init__(self, h, primary, replicas=(), extra="", name="agent", env=None, port=None):
        self.h = h
        self.port = port or free_port()
        self.db = os.path.join(h.tmp, "%s.db" % name)
        lines = ["primary %s" % (primary if isinstance(primary, str) else primary.addr),
                 "http-listen 127.0.0.1:%d" % self.port,
                 "history-db %s" % self.db,
                 "agent-id test-%s" % name]
        for rname, server, kind in replicas:
            lines.append("replica %s %s %s" % (rname, server if isinstance(server, str)
                                               else server.addr, kind))
        self.conf = h.write_file("%s.conf" % name, "\n".join(lines) + "\n" + extra)
        self.proc = h.keydrift("run", self.conf, name=name, env=env)
        self.url = "http://127.0.0.1:%d" % self.port
        wait_for(lambda: self._answers() or not self.proc.alive(), timeout=10,
                 what="agent HTTP server")
        assert self.proc.alive(), self.proc.output()

    def _answers(self):
        try:
            return http_get(self.url + "/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def metrics_text(self):
        st, hdr, body = http_get(self.url + "/metrics")
        assert st == 200, (st, body)
        return body.decode()

    def metrics(self):
        return parse_metrics(self.metrics_text())

    def metric(self, name, **labels):
        """The value of one series, or None when absent."""
        key = (name, frozenset((k, str(v)) for k, v in labels.items()))
        return self.metrics().get(key)

    def status(self):
        import json
        st, hdr, body = http_get(self.url + "/api/v1/status")
        assert st == 200, (st, body)
        return json.loads(body)

    def replica_status(self, name):
        for r in self.status()["replicas"]:
            if r["name"] == name:
                return r
        raise KeyError(name)
