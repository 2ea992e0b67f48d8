"""dashboards/: the Grafana dashboard, the Prometheus alert rules and
docs/metrics.md, checked against promtool and against a real Prometheus and
Pushgateway watching a real topology."""
import json
import os
import re
import signal
import subprocess
import time
import urllib.parse

import pytest
import yaml

from harness import (ROOT, Agent, Harness, Proc, free_port, http_get, parse_metrics,
                     wait_for)

# Metrics the dashboard and alerts use that the agent does not export yet
# (repair and webhooks are being written). Nothing else may be missing.
PENDING_METRICS = []

DASHBOARD = os.path.join(ROOT, "dashboards", "grafana", "keydrift-overview.json")
PROM_DIR = os.path.join(ROOT, "dashboards", "prometheus")
ALERTS = os.path.join(PROM_DIR, "alerts.yml")
METRICS_DOC = os.path.join(ROOT, "docs", "metrics.md")

ALERT_NAMES = {"KeydriftReplicaLagHigh", "KeydriftReplicaDown", "KeydriftReplicaStalled",
               "KeydriftHeartbeatStalled", "KeydriftDivergenceConfirmed",
               "KeydriftRepairsFailing", "KeydriftRepairPaused", "KeydriftAgentDown",
               "KeydriftStorageFailing", "KeydriftWatchDisabled"}

# Series Prometheus makes itself, not the agent.
SYNTHETIC = {"up"}

# Grafana's variables, as the test evaluates them: every instance and replica,
# and windows that fit the test's short history at a 1 s scrape interval.
VARIABLES = {"instance": ".+", "replica": ".+", "__rate_interval": "20s",
             "__interval": "2s", "__range": "1m"}

PROMQL_WORDS = {
    # operators and modifiers
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
    # aggregations (also written without parentheses right after them: sum by (x) (...))
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group",
}


# ------------------------------------------------------------ helpers

def load_dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def load_rules():
    with open(ALERTS) as f:
        return yaml.safe_load(f)


def all_panels(dash):
    """Every panel, those inside (collapsed) rows included."""
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_exprs(dash):
    """(panel title, expr) of every query in the dashboard."""
    return [(p["title"], t["expr"]) for p in all_panels(dash) if p.get("type") != "row"
            for t in p.get("targets", [])]


def alert_rules(rules=None):
    rules = rules or load_rules()
    return [r for g in rules["groups"] for r in g["rules"] if "alert" in r]


def substitute(expr):
    """The expression with Grafana's $variables replaced (an unknown one fails)."""
    def rep(m):
        name = m.group(1) or m.group(2)
        assert name in VARIABLES, "unknown dashboard variable $%s in %s" % (name, expr)
        return VARIABLES[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", rep, expr)


def metric_names(expr):
    """The metric names an expression selects (functions, keywords, labels left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # strings
    e = re.sub(r"\{[^}]*\}", " ", e)                        # label matchers
    e = re.sub(r"\[[^\]]*\]", " ", e)                       # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def family(name, histograms):
    """A series name's metric family (a histogram's _bucket/_sum/_count -> its name)."""
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name[:-len(suffix)] in histograms:
            return name[:-len(suffix)]
    return name


def families(text):
    """{family name: type} from the # TYPE lines of a scrape."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def documented_metrics():
    with open(METRICS_DOC) as f:
        doc = f.read()
    # The first column of the tables: one row per metric.
    return set(re.findall(r"^\| `([a-z_:][a-z0-9_:]*)` \|", doc, re.M)), doc


def strip_comparisons(expr):
    """An alert expression without its thresholds and exclusions (`unless ...`):
    the series it compares."""
    e = re.sub(r"\s*(==|!=|>=|<=|>|<)\s*(bool\s+)?[-+]?[0-9.]+(e[-+]?[0-9]+)?\b", "", expr)
    return re.split(r"\bunless\b", e)[0].strip()


def references_pending(expr):
    return bool(metric_names(expr) & (set(PENDING_METRICS) | {
        m + s for m in PENDING_METRICS for s in ("_bucket", "_sum", "_count")}))


# ------------------------------------------------------------ static checks

def test_alert_rules_pass_promtool_check_and_unit_tests():
    p = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=PROM_DIR,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS: %d rules found" % len(ALERT_NAMES) in p.stdout, p.stdout
    p = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=PROM_DIR,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout, p.stdout
    p = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=PROM_DIR,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_alert_rules_have_the_required_shape():
    rules = alert_rules()
    assert {r["alert"] for r in rules} == ALERT_NAMES
    with open(os.path.join(PROM_DIR, "alerts_test.yml")) as f:
        tests = yaml.safe_load(f)
    tested = {}
    for t in tests["tests"]:
        for a in t.get("alert_rule_test", []):
            tested.setdefault(a["alertname"], set()).add(bool(a["exp_alerts"]))
    for r in rules:
        name = r["alert"]
        assert re.fullmatch(r"\d+[smh]", str(r.get("for", ""))), name
        assert r["labels"]["severity"] in ("critical", "warning", "info"), name
        assert r["annotations"]["summary"], name
        d = r["annotations"]["description"]
        assert "$value" in d and "$labels." in d, name
        # Each alert is unit-tested both firing and not firing.
        assert tested.get(name) == {True, False}, (name, tested.get(name))


def test_dashboard_has_the_required_structure():
    dash = load_dashboard()
    assert "__inputs" not in dash and "__requires" not in dash
    assert dash["uid"] == "keydrift-overview"
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    for name in ("instance", "replica"):
        v = variables[name]
        assert v["type"] == "query"
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        assert q.startswith("label_values(") and q.endswith(", %s)" % name), q
        assert v["datasource"]["uid"] == "${datasource}"
    ids = set()
    panels = [p for p in all_panels(dash) if p.get("type") != "row"]
    for p in panels:
        assert p["id"] not in ids, p["title"]
        ids.add(p["id"])
        assert p["fieldConfig"]["defaults"].get("unit"), "no unit on panel %r" % p["title"]
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]
            assert t["expr"].strip(), p["title"]
    timeline = [p for p in panels if p["type"] == "state-timeline"]
    assert timeline and all("keydrift_replica_status" in t["expr"] and "== 1" in t["expr"]
                            for p in timeline for t in p["targets"])
    used = set()
    for _, e in dashboard_exprs(dash):
        used |= metric_names(e)
    for m in ["keydrift_replica_lag_seconds", "keydrift_replica_lag_bytes",
              "keydrift_replica_status", "keydrift_replica_link_up", "keydrift_node_up",
              "keydrift_channel_subscribers", "keydrift_divergences_confirmed_total",
              "keydrift_divergent_keys", "keydrift_divergence_ratio",
              "keydrift_divergences_suspected_total", "keydrift_repairs_total",
              "keydrift_repair_duration_seconds_bucket",
              "keydrift_detection_delay_seconds_bucket", "keydrift_scan_progress_ratio",
              "keydrift_scan_cycle_duration_seconds", "keydrift_keys_checked_total",
              "keydrift_keys_skipped_total", "keydrift_redis_commands_total",
              "keydrift_storage_errors_total", "keydrift_storage_queue_length",
              "keydrift_storage_writable", "keydrift_watch_queue_length",
              "keydrift_watch_gaps_total", "up", "process_cpu_seconds_total",
              "process_resident_memory_bytes"]:
        assert m in used, "no panel shows %s" % m
    bounds = [t["expr"] for p in panels for t in p["targets"]
              if "keydrift_divergence_ratio" in t["expr"]]
    for b in ("estimate", "lower", "upper"):
        assert any('bound="%s"' % b in e for e in bounds), b


def test_metric_name_parser():
    assert metric_names('sum by (le) (rate(a_bucket{x=~"$y", le="1"}[5m])) / on (i) b') == \
        {"a_bucket", "b"}
    assert metric_names('max by (job) (up{job="k"}) == 0 or absent(c)') == {"up", "c"}
    assert metric_names("time() - process_start_time_seconds > 1e3") == \
        {"process_start_time_seconds"}
    assert strip_comparisons("a > 5 unless on (r) b == 1") == "a"
    assert strip_comparisons("a == 0 and on (i) count(b) > 0") == "a and on (i) count(b)"
    assert substitute('rate(x{r=~"$replica"}[$__rate_interval])') == 'rate(x{r=~".+"}[20s])'


# ------------------------------------------------------------ a live topology

class Prometheus:
    """A real Prometheus scraping the given jobs, with rules from alerts.yml
    whose `for:` durations are shortened to 1 s."""

    def __init__(self, h, jobs):
        self.dir = os.path.join(h.tmp, "prometheus")
        os.makedirs(self.dir, exist_ok=True)
        rules = load_rules()
        for g in rules["groups"]:
            g["interval"] = "1s"
            for r in g["rules"]:
                if "for" in r:
                    r["for"] = "1s"
        with open(os.path.join(self.dir, "rules.yml"), "w") as f:
            yaml.safe_dump(rules, f)
        conf = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s",
                           "scrape_timeout": "900ms"},
                "rule_files": ["rules.yml"],
                "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                                   for job, targets in jobs.items()]}
        with open(os.path.join(self.dir, "prometheus.yml"), "w") as f:
            yaml.safe_dump(conf, f)
        self.port = free_port()
        self.url = "http://127.0.0.1:%d" % self.port
        self.proc = Proc(["prometheus", "--config.file=" + os.path.join(self.dir, "prometheus.yml"),
                          "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
                          "--web.listen-address=127.0.0.1:%d" % self.port,
                          "--log.level=warn"],
                         os.path.join(self.dir, "prometheus.log"), cwd=self.dir)
        h.procs.append(self.proc)
        wait_for(lambda: self.ready() or not self.proc.alive(), timeout=20,
                 what="prometheus ready")
        assert self.proc.alive(), self.proc.output()

    def ready(self):
        try:
            return http_get(self.url + "/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    def api(self, path, **params):
        st, _, body = http_get(self.url + path + "?" + urllib.parse.urlencode(params), timeout=10)
        doc = json.loads(body)
        assert st == 200 and doc["status"] == "success", (path, params, st, doc)
        return doc["data"]

    def query(self, expr):
        return self.api("/api/v1/query", query=expr)["result"]

    def alerts(self, name, state="firing"):
        return [a for a in self.api("/api/v1/alerts")["alerts"]
                if a["labels"]["alertname"] == name and a["state"] == state]

    def wait_firing(self, name, timeout=20, **labels):
        def firing():
            return [a for a in self.alerts(name)
                    if all(a["labels"].get(k) == v for k, v in labels.items())]
        return wait_for(firing, timeout=timeout, interval=0.25,
                        what="alert %s %r firing" % (name, labels))


def write_keys(primary, n=200):
    p = primary.client()
    for i in range(n):
        p.set("k:%d" % i, "v%d" % i)
        p.publish("cache_update", "k:%d" % i)
    # Above the agent's max-value-bytes below: sampled, never fetched whole.
    p.set("k:big", "x" * 20000)
    p.publish("cache_update", "k:big")
    return p.dbsize()


@pytest.fixture(scope="module")
def topo(tmp_path_factory):
    """A primary, a native replica, a pubsub cache with its keydrift sync, the
    agent, and Prometheus scraping the agent and the sync; the cache holds
    confirmed divergences, one of them resolved."""
    h = Harness(tmp_path_factory.mktemp("dash"))
    try:
        primary = h.redis("primary")
        replica = h.replica("replica", primary)
        cache = h.redis("cache")
        sync_port = free_port()
        sync = h.sync(primary, cache, "--sync-metrics-listen", "127.0.0.1:%d" % sync_port)
        n = write_keys(primary)
        c = cache.client()
        wait_for(lambda: c.dbsize() >= n - 1 and c.get("k:199") == b"v199",
                 what="cache in step")
        c.set("k:1", "stale")            # stays divergent
        c.set("k:2", "stale")            # fixed below: resolved
        c.delete("k:3")
        agent = Agent(h, primary, [("replica-1", replica, "native"), ("cache-a", cache, "pubsub")],
                      extra="max-value-bytes 4kb\nmax-commands-per-sec 5000\n")
        prom = Prometheus(h, {"keydrift": ["127.0.0.1:%d" % agent.port],
                              "keydrift_sync": ["127.0.0.1:%d" % sync_port]})
        wait_for(lambda: agent.metric("keydrift_divergent_keys", replica="cache-a",
                                      kind="value") == 2,
                 timeout=30, what="two value divergences confirmed on cache-a")
        c.set("k:2", "v2")
        wait_for(lambda: agent.metric("keydrift_divergent_keys", replica="cache-a",
                                      kind="value") == 1,
                 timeout=30, what="one divergence resolved")
        # A write whose publish is lost: found by watch mode (detection delay).
        primary.client().set("lost:1", "never published")
        wait_for(lambda: agent.metric("keydrift_divergent_keys", replica="cache-a",
                                      kind="missing") == 2,
                 timeout=15, what="the lost update confirmed")
        # Keys published while the subscriber is stopped are suspects on the
        # cache (it misses them) that clear once it catches up.
        sync.signal(signal.SIGSTOP)
        try:
            p = primary.client()
            for i in range(20):
                p.set("late:%d" % i, i)
                p.publish("cache_update", "late:%d" % i)
            time.sleep(1.0)
        finally:
            sync.signal(signal.SIGCONT)
        wait_for(lambda: (agent.metric("keydrift_divergences_cleared_total",
                                       replica="cache-a") or 0) > 0,
                 timeout=15, what="suspects cleared")
        yield {"h": h, "primary": primary, "replica": replica, "cache": cache, "sync": sync,
               "sync_url": "http://127.0.0.1:%d" % sync_port, "agent": agent, "prom": prom}
    finally:
        h.cleanup()


def sync_metrics_text(topo):
    st, _, body = http_get(topo["sync_url"] + "/metrics")
    assert st == 200, st
    return body.decode()


def test_promtool_check_metrics_on_live_scrapes(topo):
    for text in (topo["agent"].metrics_text(), sync_metrics_text(topo)):
        p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                           capture_output=True)
        assert p.returncode == 0, (p.stdout + p.stderr).decode()


def test_every_referenced_metric_is_exported_and_every_exported_one_is_used(topo):
    exported = families(topo["agent"].metrics_text())
    exported.update(families(sync_metrics_text(topo)))
    histograms = {n for n, t in exported.items() if t == "histogram"}
    histograms |= {"keydrift_repair_duration_seconds"}

    referenced = {}
    for title, e in dashboard_exprs(load_dashboard()):
        for n in metric_names(e):
            referenced.setdefault(family(n, histograms), set()).add("panel %r" % title)
    for r in alert_rules():
        for n in metric_names(r["expr"]):
            referenced.setdefault(family(n, histograms), set()).add("alert " + r["alert"])

    known = set(exported) | set(PENDING_METRICS) | SYNTHETIC
    unknown = {n: sorted(w) for n, w in referenced.items() if n not in known}
    assert not unknown, "referenced but not exported: %r" % unknown
    # The pending list holds only what is really missing: once a metric is
    # exported, it must leave the list.
    assert not set(PENDING_METRICS) & set(exported), set(PENDING_METRICS) & set(exported)
    assert set(PENDING_METRICS) <= set(referenced)

    documented, _ = documented_metrics()
    unused = sorted(n for n in exported if n not in referenced and n not in documented)
    assert not unused, "exported but on no panel, alert or in docs/metrics.md: %r" % unused
    # Every exported metric is documented, and the docs name nothing else.
    assert not set(exported) - documented, sorted(set(exported) - documented)
    stray = documented - set(exported) - set(PENDING_METRICS) - CHECK_METRICS
    assert not stray, "documented but not exported: %r" % sorted(stray)


CHECK_METRICS = {"keydrift_check_success", "keydrift_check_divergent_keys",
                 "keydrift_check_duration_seconds", "keydrift_check_last_run_timestamp_seconds"}


def test_every_expression_returns_data_and_caused_alerts_fire(topo):
    t0 = time.monotonic()
    prom, agent = topo["prom"], topo["agent"]
    sync = topo["sync"]

    # Lag: the cache's subscriber stops until its lag is high and it is stalled.
    sync.signal(signal.SIGSTOP)
    try:
        prom.wait_firing("KeydriftReplicaStalled", replica="cache-a", status="stalled")
        fired = prom.wait_firing("KeydriftReplicaLagHigh", replica="cache-a")
        assert float(fired[0]["value"]) > 5
    finally:
        sync.signal(signal.SIGCONT)
    wait_for(lambda: (agent.metric("keydrift_replica_lag_seconds", replica="cache-a") or 9) < 0.5,
             timeout=10, what="cache caught up")

    prom.wait_firing("KeydriftDivergenceConfirmed", replica="cache-a")
    firing = prom.alerts("KeydriftDivergenceConfirmed")
    assert {a["labels"]["replica"] for a in firing} == {"cache-a"}, firing

    # Every sample the panels need is in Prometheus: wait for a few scrapes
    # after the last change, then evaluate every dashboard expression.
    time.sleep(3)
    empty, skipped = [], []
    for title, expr in dashboard_exprs(load_dashboard()):
        if references_pending(expr):
            skipped.append(title)
            continue
        if not prom.query(substitute(expr)):
            empty.append((title, expr))
    assert not empty, "dashboard queries without data: %r" % empty

    # Variables: label_values(METRIC, LABEL) through the label values API.
    for v in load_dashboard()["templating"]["list"]:
        if v["type"] != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
        values = prom.api("/api/v1/label/%s/values" % m.group(2),
                          **{"match[]": substitute(m.group(1))})
        assert values, q
    assert set(prom.api("/api/v1/label/replica/values")) >= {"cache-a", "replica-1"}

    # Alert expressions: whole where their condition holds now, and without
    # their thresholds for the others (the series they compare exist).
    for r in alert_rules():
        if references_pending(r["expr"]):
            skipped.append(r["alert"])
            continue
        assert prom.query(strip_comparisons(r["expr"])), (r["alert"], strip_comparisons(r["expr"]))
    assert prom.query(alert_expr("KeydriftDivergenceConfirmed"))

    # A replica is killed: down.
    topo["replica"].kill()
    prom.wait_firing("KeydriftReplicaDown", replica="replica-1")
    assert not [a for a in prom.alerts("KeydriftReplicaLagHigh")
                if a["labels"]["replica"] == "replica-1"]

    # The agent stops: Prometheus cannot scrape it.
    agent.proc.stop()
    prom.wait_firing("KeydriftAgentDown", instance="127.0.0.1:%d" % agent.port)

    print("skipped (pending metrics): %s" % ", ".join(skipped))
    print("end-to-end part took %.1f s" % (time.monotonic() - t0))


def alert_expr(name):
    return next(r["expr"] for r in alert_rules() if r["alert"] == name)


# ------------------------------------------------------------ keydrift check --push

def test_check_push_lands_in_a_real_pushgateway(h):
    primary = h.redis("primary")
    replica = h.replica("replica", primary)
    port = free_port()
    gw = Proc(["prometheus-pushgateway", "--web.listen-address=127.0.0.1:%d" % port,
               "--log.level=warn"], os.path.join(h.tmp, "pushgateway.log"))
    h.procs.append(gw)
    url = "http://127.0.0.1:%d" % port
    wait_for(lambda: http_get(url + "/-/ready", timeout=1)[0] == 200, timeout=15,
             what="pushgateway ready")
    conf = h.write_file("check.conf", "primary %s\nreplica replica-1 %s native\n"
                        "agent-id push-test\n" % (primary.addr, replica.addr))
    primary.client().set("a", "b")
    wait_for(lambda: replica.client().get("a") == b"b", what="replica in step")

    p = h.run_keydrift("check", conf, "--push", url)
    assert p.returncode == 0, p.stderr.decode()
    st, _, body = http_get(url + "/metrics")
    assert st == 200
    text = body.decode()
    m = parse_metrics(text)
    labels = frozenset({("instance", "push-test"), ("job", "keydrift_check")})
    assert m[("keydrift_check_success", labels)] == 1
    assert m[("keydrift_check_divergent_keys", labels)] == 0
    assert m[("keydrift_check_duration_seconds", labels)] >= 0
    assert abs(m[("keydrift_check_last_run_timestamp_seconds", labels)] - time.time()) < 60
    # The gateway records the push itself too.
    assert any(k[0] == "push_time_seconds" and ("job", "keydrift_check") in k[1] for k in m)
    pushed = {n for n in families(text) if n.startswith("keydrift_check")}
    assert pushed == CHECK_METRICS, pushed
    documented, _ = documented_metrics()
    assert CHECK_METRICS <= documented
    # What check pushes passes promtool too.
    pushed_text = "\n".join(l for l in text.splitlines()
                            if 'job="keydrift_check"' in l or l.startswith("#")) + "\n"
    c = subprocess.run(["promtool", "check", "metrics"], input=pushed_text.encode(),
                       capture_output=True)
    assert c.returncode == 0, (c.stdout + c.stderr).decode()

    # A divergent pass is pushed as such (exit 1, the count on the gateway).
    replica.client().config_set("replica-read-only", "no")
    replica.client().set("only-here", "x")
    p = h.run_keydrift("check", conf, "--push", url)
    assert p.returncode == 1, p.stderr.decode()
    m = parse_metrics(http_get(url + "/metrics")[2].decode())
    assert m[("keydrift_check_divergent_keys", labels)] == 1

    # Nothing listening: a clear error and a non-zero exit.
    dead = "http://127.0.0.1:%d" % free_port()
    replica.client().delete("only-here")
    p = h.run_keydrift("check", conf, "--push", dead)
    err = p.stderr.decode()
    assert p.returncode == 2, (p.returncode, err)
    assert "push to %s failed" % dead in err and "connect" in err.lower(), err
