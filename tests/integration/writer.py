"""A load generator for the tests: mixed-type writes on the primary, each
followed by a PUBLISH of the key on the sync channel (unless dropped)."""
import random
import threading
import time

import redis

KEY_NAMES = [b"plain", b"with space", b"new\nline", b"nul\x00byte", "ütf-8 ключ".encode(),
             b"\xff\xfe raw", b"tab\tkey"]


class Writer:
    """Writes in pipelined batches from a thread; records what it dropped."""

    def __init__(self, primary, keys=2000, channel="cache_update", drop=None, batch=200,
                 types=("string", "hash", "list", "set", "zset", "stream"), ttl_share=0.3,
                 rate=None, prefix=b"w:"):
        self.r = primary.client(timeout=10)
        self.keys = [prefix + KEY_NAMES[i % len(KEY_NAMES)] + b":" + str(i).encode()
                     for i in range(keys)]
        self.channel = channel
        self.drop = drop            # callable(key) -> bool: skip the PUBLISH
        self.batch = batch
        self.types = types
        self.ttl_share = ttl_share
        self.rate = rate
        self.writes = 0
        self.dropped = []           # (key, wall time of the write)
        self.errors = []
        self._stop = threading.Event()
        self._thread = None
        self.elapsed = 0.0

    def _type_of(self, key):
        return self.types[hash(key) % len(self.types)]

    def _write(self, p, key, n):
        t = self._type_of(key)
        if t == "string":
            p.set(key, b"v%d-" % n + bytes(range(256))[:n % 64])
        elif t == "hash":
            p.hset(key, mapping={b"f%d" % (n % 7): b"v%d" % n, b"n": n})
        elif t == "list":
            p.rpush(key, b"e%d" % n)
            p.ltrim(key, -20, -1)
        elif t == "set":
            p.sadd(key, b"m%d" % (n % 50))
        elif t == "zset":
            p.zadd(key, {b"m%d" % (n % 30): n})
        elif t == "stream":
            p.xadd(key, {b"n": n}, maxlen=20, approximate=False)
        if random.random() < self.ttl_share:
            p.pexpire(key, 60000 + n % 1000)

    def run_for(self, seconds):
        start = time.monotonic()
        n = 0
        rng = random.Random(1)
        while time.monotonic() - start < seconds and not self._stop.is_set():
            p = self.r.pipeline(transaction=False)
            for _ in range(self.batch):
                key = self.keys[rng.randrange(len(self.keys))]
                self._write(p, key, n)
                n += 1
                if self.drop and self.drop(key):
                    self.dropped.append((key, time.time()))
                    continue
                p.publish(self.channel, key)
            try:
                p.execute()
            except redis.exceptions.RedisError as e:
                self.errors.append(e)
            self.writes = n
            if self.rate:
                ahead = n / self.rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
        self.elapsed = time.monotonic() - start
        return n

    def start(self, seconds):
        self._thread = threading.Thread(target=self.run_for, args=(seconds,), daemon=True)
        self._thread.start()

    def join(self):
        if self._thread:
            self._thread.join()

    def stop(self):
        self._stop.set()
        self.join()
