"""keydrift demo: the README's main command starts a whole topology, finds the
writer's lost updates, and cleans everything up."""
import os
import re
import signal
import subprocess
import time

from harness import KEYDRIFT, SLOW, free_port, http_get, parse_metrics, wait_for


def test_demo_runs_finds_lost_updates_and_cleans_up(tmp_path):
    port = free_port()
    log = open(tmp_path / "demo.out", "wb")
    p = subprocess.Popen([KEYDRIFT, "demo", "--http-port", str(port), "--rate", "300",
                          "--drop-share", "0.05"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def out():
            return (tmp_path / "demo.out").read_text(errors="replace")
        wait_for(lambda: "metrics    http://127.0.0.1:%d/metrics" % port in out(),
                 timeout=30, what="the demo's URLs")
        demo_dir = re.search(r"keydrift demo in (\S+)", out()).group(1)
        assert os.path.isdir(demo_dir)

        def metrics():
            return parse_metrics(http_get("http://127.0.0.1:%d/metrics" % port)[2].decode())
        wait_for(lambda: len({dict(k[1])["replica"] for k in metrics()
                              if k[0] == "keydrift_replica_lag_seconds"}) == 4,
                 timeout=20, what="lag for all four replicas")
        # The writer drops 5 % of its publishes: the agent confirms and repairs them.
        wait_for(lambda: sum(v for k, v in metrics().items()
                             if k[0] == "keydrift_divergences_confirmed_total") > 0,
                 timeout=30, what="a lost update confirmed")
        wait_for(lambda: sum(v for k, v in metrics().items()
                             if k[0] == "keydrift_repairs_total"
                             and ("outcome", "repaired") in k[1]) > 0,
                 timeout=30, what="a lost update repaired")
        wait_for(lambda: "writes " in out() and "cache-a ok" in out(), timeout=20,
                 what="a status line")
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=30 * SLOW) == 0
        assert not os.path.exists(demo_dir), "the demo left its directory behind"
        time.sleep(0.2)
        assert http_get_fails(port)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()


def http_get_fails(port):
    try:
        http_get("http://127.0.0.1:%d/healthz" % port, timeout=1)
        return False
    except OSError:
        return True


def test_demo_help_and_bad_options():
    r = subprocess.run([KEYDRIFT, "demo", "--help"], capture_output=True)
    assert r.returncode == 0 and b"throwaway topology" in r.stdout
    r = subprocess.run([KEYDRIFT, "demo", "--rate", "lots"], capture_output=True)
    assert r.returncode == 2 and b"bad value 'lots' for --rate" in r.stderr
