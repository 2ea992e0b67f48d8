"""make install lays out the binary, man page, systemd unit, example config and
dashboards; the example config names every option and is valid."""
import os
import re
import subprocess

from harness import KEYDRIFT, ROOT



def documented_options():
    with open(os.path.join(ROOT, "docs", "config.md")) as f:
        return re.findall(r"^### `([a-z0-9-]+)`$", f.read(), re.M)


def test_example_config_has_every_option_and_is_valid():
    with open(os.path.join(ROOT, "contrib", "keydrift.conf")) as f:
        text = f.read()
    options = documented_options()
    assert len(options) > 40
    for name in options:
        assert re.search(r"^#? ?%s\b" % re.escape(name), text, re.M), name
    r = subprocess.run([KEYDRIFT, "run", "-t", os.path.join(ROOT, "contrib", "keydrift.conf")],
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    # Uncommenting every "# name value" line that is a plain option still parses.
    lines = []
    for line in text.splitlines():
        m = re.match(r"^# ([a-z0-9-]+) (.*?)(\s+#.*)?$", line)
        if m and m.group(1) in options and m.group(1) not in ("replica", "discovery"):
            lines.append("%s %s" % (m.group(1), m.group(2)))
    r = subprocess.run([KEYDRIFT, "run", "-t", "/dev/stdin"], input="\n".join(lines).encode(),
                       capture_output=True)
    assert r.returncode == 0, (r.stderr, lines)


def test_make_install_lays_out_everything(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "DESTDIR=%s" % dest,
                        "PREFIX=/usr"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for path in ["usr/bin/keydrift", "usr/share/man/man1/keydrift.1",
                 "usr/lib/systemd/system/keydrift.service",
                 "usr/share/keydrift/keydrift.conf.example",
                 "usr/share/keydrift/grafana/keydrift-overview.json",
                 "usr/share/keydrift/prometheus/alerts.yml"]:
        assert (dest / path).exists(), path
    v = subprocess.run([str(dest / "usr/bin/keydrift"), "version"], capture_output=True,
                       text=True)
    assert v.returncode == 0 and v.stdout.startswith("keydrift ")
    unit = (dest / "usr/lib/systemd/system/keydrift.service").read_text()
    for directive in ["ExecStart=/usr/bin/keydrift run", "DynamicUser=yes",
                      "ProtectSystem=strict", "StateDirectory=keydrift", "NoNewPrivileges=yes",
                      "ExecReload=/bin/kill -HUP $MAINPID"]:
        assert directive in unit, directive
    man = subprocess.run(["man", "-l", str(dest / "usr/share/man/man1/keydrift.1")],
                         capture_output=True, text=True, env=dict(os.environ, MANPAGER="cat",
                                                                  PAGER="cat"))
    if man.returncode == 0:
        assert "replication-lag monitoring" in man.stdout
