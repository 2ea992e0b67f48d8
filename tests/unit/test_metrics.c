/*
 * Metrics registry: rendering of each type, escaping, reset, collectors,
 * concurrent updates, the line grammar, and promtool's verdict on a sample.
 */
#include "metrics.h"
#include "unit.h"

#include <math.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <unistd.h>

/* Renders the registry; the caller frees. */
static char *render(void)
{
    size_t len = 0;
    char *s = metrics_render(&len);
    CHECK(s != NULL);
    if (s)
        CHECK(strlen(s) == len);
    return s;
}

/* Whether line (a whole line, without '\n') occurs in text. */
static int has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len == n && memcmp(p, line, n) == 0)
            return 1;
        p = nl ? nl + 1 : NULL;
    }
    return 0;
}

#define CHECK_LINE(text, line)                                                                     \
    do {                                                                                           \
        if (!has_line((text), (line))) {                                                           \
            fprintf(stderr, "  %s:%d: missing line: %s\n", __FILE__, __LINE__, (line));            \
            unit_failed_checks++;                                                                  \
        }                                                                                          \
    } while (0)

TEST(metrics_counter_and_gauge)
{
    metrics_shutdown();
    const char *labels[] = {"replica"};
    struct metric_family *c =
        metrics_family("kd_test_events_total", "Events seen.", METRIC_COUNTER, 1, labels);
    struct metric_family *g = metrics_family("kd_test_lag_seconds", "Lag.", METRIC_GAUGE, 0, NULL);
    CHECK(c && g);
    CHECK(metrics_family("kd_test_events_total", "again", METRIC_COUNTER, 1, labels) == c);
    CHECK(metrics_family("kd_test_events_total", "clash", METRIC_GAUGE, 1, labels) == NULL);
    CHECK(metrics_family("0bad", "x", METRIC_GAUGE, 0, NULL) == NULL);

    struct metric *r1 = metrics_series1(c, "r1");
    struct metric *r2 = metrics_series1(c, "r2");
    CHECK(metrics_series1(c, "r1") == r1);
    metric_inc(r1);
    metric_add(r1, 2);
    metric_add(r1, -5); /* ignored on a counter */
    metric_inc(r2);
    CHECK(metric_value(r1) == 3);
    struct metric *lag = metrics_series0(g);
    metric_set(lag, 0.25);
    metric_add(lag, -0.5);
    CHECK(metric_value(lag) == -0.25);
    metric_inc(NULL); /* NULL-safe */

    char *s = render();
    const char *want = "# HELP kd_test_events_total Events seen.\n"
                       "# TYPE kd_test_events_total counter\n"
                       "kd_test_events_total{replica=\"r1\"} 3\n"
                       "kd_test_events_total{replica=\"r2\"} 1\n"
                       "# HELP kd_test_lag_seconds Lag.\n"
                       "# TYPE kd_test_lag_seconds gauge\n"
                       "kd_test_lag_seconds -0.25\n";
    CHECK_STR(s, want);
    free(s);

    metric_set(lag, NAN);
    s = render();
    CHECK_LINE(s, "kd_test_lag_seconds NaN");
    free(s);
    metric_set(lag, -INFINITY);
    s = render();
    CHECK_LINE(s, "kd_test_lag_seconds -Inf");
    free(s);
    metric_set(lag, 1e21);
    s = render();
    CHECK_LINE(s, "kd_test_lag_seconds 1e+21");
    free(s);
    metric_set(lag, 0.1);
    s = render();
    CHECK_LINE(s, "kd_test_lag_seconds 0.1");
    free(s);
    metrics_shutdown();
}

TEST(metrics_histogram)
{
    metrics_shutdown();
    const double b[] = {0.1, 1, 2.5};
    const char *labels[] = {"op"};
    struct metric_family *h =
        metrics_histogram("kd_test_duration_seconds", "Durations.", 1, labels, b, 3);
    CHECK(h != NULL);
    const double bad[] = {1, 1};
    CHECK(metrics_histogram("kd_test_bad_seconds", "x", 0, NULL, bad, 2) == NULL);
    const char *le[] = {"le"};
    CHECK(metrics_histogram("kd_test_le_seconds", "x", 1, le, b, 3) == NULL);

    struct metric *m = metrics_series1(h, "get");
    metric_observe(m, 0.05);
    metric_observe(m, 0.1); /* upper bounds are inclusive */
    metric_observe(m, 2);
    metric_observe(m, 7);
    CHECK(metric_value(m) == 4);
    char *s = render();
    const char *want = "# HELP kd_test_duration_seconds Durations.\n"
                       "# TYPE kd_test_duration_seconds histogram\n"
                       "kd_test_duration_seconds_bucket{op=\"get\",le=\"0.1\"} 2\n"
                       "kd_test_duration_seconds_bucket{op=\"get\",le=\"1\"} 2\n"
                       "kd_test_duration_seconds_bucket{op=\"get\",le=\"2.5\"} 3\n"
                       "kd_test_duration_seconds_bucket{op=\"get\",le=\"+Inf\"} 4\n"
                       "kd_test_duration_seconds_sum{op=\"get\"} 9.15\n"
                       "kd_test_duration_seconds_count{op=\"get\"} 4\n";
    CHECK_STR(s, want);
    free(s);

    /* The default buckets, no labels: rendered at 0 before any observation. */
    struct metric_family *d =
        metrics_family("kd_test_default_seconds", "Defaults.", METRIC_HISTOGRAM, 0, NULL);
    CHECK(d != NULL);
    s = render();
    CHECK_LINE(s, "kd_test_default_seconds_bucket{le=\"0.005\"} 0");
    CHECK_LINE(s, "kd_test_default_seconds_bucket{le=\"10\"} 0");
    CHECK_LINE(s, "kd_test_default_seconds_bucket{le=\"+Inf\"} 0");
    CHECK_LINE(s, "kd_test_default_seconds_count 0");
    free(s);
    metrics_shutdown();
}

TEST(metrics_escaping)
{
    metrics_shutdown();
    const char *labels[] = {"a", "b"};
    struct metric_family *f = metrics_family(
        "kd_test_escape", "Back\\slash and\nnewline \"quoted\".", METRIC_GAUGE, 2, labels);
    metric_set(metrics_series2(f, "q\"uo\\te\nx", "bad\xff utf8 \xc3\xa9"), 1);
    metric_set(metrics_series2(f, NULL, ""), 2);
    char *s = render();
    CHECK_LINE(s, "# HELP kd_test_escape Back\\\\slash and\\nnewline \"quoted\".");
    CHECK_LINE(s, "kd_test_escape{a=\"q\\\"uo\\\\te\\nx\",b=\"bad\xef\xbf\xbd utf8 \xc3\xa9\"} 1");
    CHECK_LINE(s, "kd_test_escape{a=\"\",b=\"\"} 2");
    free(s);
    metrics_shutdown();
}

TEST(metrics_family_reset)
{
    metrics_shutdown();
    const char *labels[] = {"replica"};
    struct metric_family *f = metrics_family("kd_test_up", "Up.", METRIC_GAUGE, 1, labels);
    struct metric_family *z = metrics_family("kd_test_total", "T.", METRIC_COUNTER, 0, NULL);
    metric_set(metrics_series1(f, "gone"), 1);
    metric_inc(metrics_series0(z));
    metrics_family_reset(f);
    metrics_family_reset(z);
    char *s = render();
    CHECK(strstr(s, "gone") == NULL);
    CHECK(strstr(s, "kd_test_up") == NULL); /* no series left: not rendered */
    CHECK_LINE(s, "kd_test_total 0");       /* an unlabelled family restarts at 0 */
    free(s);
    metric_set(metrics_series1(f, "new"), 5);
    s = render();
    CHECK_LINE(s, "kd_test_up{replica=\"new\"} 5");
    free(s);
    metrics_shutdown();
}

struct collect_state {
    struct metric_family *f;
    int calls;
};

static void collect(void *arg)
{
    struct collect_state *cs = arg;
    cs->calls++;
    /* Collectors run outside the registry lock: creating a series is fine. */
    metric_set(metrics_series1(cs->f, "x"), cs->calls);
}

TEST(metrics_collector)
{
    metrics_shutdown();
    const char *labels[] = {"k"};
    struct collect_state cs = {metrics_family("kd_test_calls", "Calls.", METRIC_GAUGE, 1, labels),
                               0};
    metrics_add_collector(collect, &cs);
    metrics_add_collector(collect, &cs); /* duplicate: ignored */
    char *s = render();
    CHECK(cs.calls == 1);
    CHECK_LINE(s, "kd_test_calls{k=\"x\"} 1");
    free(s);
    s = render();
    CHECK(cs.calls == 2);
    CHECK_LINE(s, "kd_test_calls{k=\"x\"} 2");
    free(s);
    metrics_shutdown();
    s = render();
    CHECK(cs.calls == 2 && s && *s == '\0');
    free(s);
}

TEST(metrics_process)
{
    metrics_shutdown();
    metrics_register_process();
    metrics_register_process();
    char *s = render();
    static const char *const names[] = {
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char type[128];
        snprintf(type, sizeof(type), "# TYPE %s %s", names[i],
                 strstr(names[i], "_total") ? "counter" : "gauge");
        CHECK_LINE(s, type);
    }
    const char *p = strstr(s, "\nprocess_resident_memory_bytes ");
    CHECK(p && strtod(p + 31, NULL) > 1e5);
    p = strstr(s, "\nprocess_open_fds ");
    CHECK(p && strtod(p + 18, NULL) >= 3);
    p = strstr(s, "\nprocess_start_time_seconds ");
    double start = p ? strtod(p + 28, NULL) : 0;
    CHECK(start > 1.5e9 && start <= (double)time(NULL) + 1);
    free(s);
    metrics_shutdown();
}

struct hammer {
    struct metric *c, *g, *h;
    struct metric_family *f;
};

#define HAMMER_N 100000

static void *hammer_run(void *arg)
{
    struct hammer *hm = arg;
    for (int i = 0; i < HAMMER_N; i++) {
        metric_inc(hm->c);
        metric_add(hm->g, 0.5);
        metric_observe(hm->h, (i % 4) * 0.5);
        if (i % 1000 == 0) /* series lookups race with updates and renders */
            metric_inc(metrics_series1(hm->f, "shared"));
    }
    return NULL;
}

/* Four threads update the same series while the main thread renders. */
TEST(metrics_concurrent_updates)
{
    metrics_shutdown();
    const char *labels[] = {"t"};
    const double b[] = {0.5, 1};
    struct hammer hm = {
        .c = metrics_series0(metrics_family("kd_test_ops_total", "Ops.", METRIC_COUNTER, 0, NULL)),
        .g = metrics_series0(metrics_family("kd_test_level", "Level.", METRIC_GAUGE, 0, NULL)),
        .h = metrics_series0(metrics_histogram("kd_test_obs_seconds", "Obs.", 0, NULL, b, 2)),
        .f = metrics_family("kd_test_shared_total", "Shared.", METRIC_COUNTER, 1, labels),
    };
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, hammer_run, &hm) == 0);
    for (int i = 0; i < 20; i++)
        free(render());
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(metric_value(hm.c) == 4.0 * HAMMER_N);
    CHECK(metric_value(hm.g) == 2.0 * HAMMER_N);
    CHECK(metric_value(hm.h) == 4.0 * HAMMER_N);
    CHECK(metric_value(metrics_series1(hm.f, "shared")) == 4.0 * (HAMMER_N / 1000));
    char *s = render();
    CHECK_LINE(s, "kd_test_ops_total 400000");
    CHECK_LINE(s, "kd_test_obs_seconds_bucket{le=\"0.5\"} 200000");
    CHECK_LINE(s, "kd_test_obs_seconds_bucket{le=\"1\"} 300000");
    CHECK_LINE(s, "kd_test_obs_seconds_sum 300000");
    free(s);
    metrics_shutdown();
}

/*
 * A registry with every type, awkward label values and the process metrics;
 * shared by the grammar test and the promtool test.
 */
static void sample_registry(void)
{
    metrics_shutdown();
    const char *l2[] = {"replica", "kind"};
    const char *l1[] = {"replica"};
    const double b[] = {0.001, 0.01, 0.1, 1, 10};
    struct metric_family *c = metrics_family("keydrift_divergences_confirmed_total",
                                             "Divergences confirmed.", METRIC_COUNTER, 2, l2);
    metric_add(metrics_series2(c, "r1", "missing"), 3);
    metric_inc(metrics_series2(c, "r\"2\\\n", "value"));
    struct metric_family *g =
        metrics_family("keydrift_replica_lag_seconds", "Lag, by heartbeat.\nSecond line \\ here.",
                       METRIC_GAUGE, 1, l1);
    metric_set(metrics_series1(g, "r1"), 0.125);
    metric_set(metrics_series1(g, "r2"), NAN);
    metric_set(metrics_series1(g, "r3"), INFINITY);
    struct metric_family *h = metrics_histogram("keydrift_repair_duration_seconds",
                                                "Time to repair one key.", 0, NULL, b, 5);
    for (int i = 0; i < 50; i++)
        metric_observe(metrics_series0(h), i * 0.37);
    metrics_family("keydrift_scan_cycles_total", "Scan cycles.", METRIC_COUNTER, 0, NULL);
    metrics_register_process();
}

/* Every line of a rendering is a HELP, a TYPE or a sample line. */
TEST(metrics_render_grammar)
{
    sample_registry();
    char *s = render();
    regex_t help, type, sample;
    CHECK(regcomp(&help, "^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* ([^\\\\]|\\\\[\\\\n])*$",
                  REG_EXTENDED | REG_NOSUB) == 0);
    CHECK(regcomp(&type, "^# TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram)$",
                  REG_EXTENDED | REG_NOSUB) == 0);
    CHECK(regcomp(&sample,
                  "^[a-zA-Z_:][a-zA-Z0-9_:]*"
                  "(\\{[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\[\\\\\"n])*\""
                  "(,[a-zA-Z_][a-zA-Z0-9_]*=\"([^\"\\\\]|\\\\[\\\\\"n])*\")*\\})? "
                  "(NaN|[+-]Inf|-?[0-9]+(\\.[0-9]+)?(e[+-][0-9]+)?)$",
                  REG_EXTENDED | REG_NOSUB) == 0);
    CHECK(s[strlen(s) - 1] == '\n');
    int samples = 0;
    for (char *line = s, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        int ok = regexec(&help, line, 0, NULL, 0) == 0 || regexec(&type, line, 0, NULL, 0) == 0;
        if (!ok && regexec(&sample, line, 0, NULL, 0) == 0) {
            ok = 1;
            samples++;
        }
        if (!ok) {
            fprintf(stderr, "  unparsable line: %s\n", line);
            unit_failed_checks++;
        }
    }
    CHECK(samples >= 14);
    regfree(&help);
    regfree(&type);
    regfree(&sample);
    free(s);
    metrics_shutdown();
}

/*
 * promtool check metrics must accept a rendering of the sample registry.
 * KEYDRIFT_METRICS_DUMP=path also keeps the rendering there for inspection.
 * Skipped (with a note) when promtool is not installed.
 */
TEST(metrics_promtool_check)
{
    const char *promtool = "/usr/bin/promtool";
    sample_registry();
    char *s = render();
    const char *dump = getenv("KEYDRIFT_METRICS_DUMP");
    char path[] = "/tmp/keydrift-metrics-XXXXXX";
    int fd = dump && *dump ? -1 : mkstemp(path);
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : fopen(dump, "w");
    CHECK(fp != NULL);
    if (fp) {
        fputs(s, fp);
        fclose(fp);
    }
    if (access(promtool, X_OK) == 0) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "%s check metrics < '%s' >&2", promtool, fd >= 0 ? path : dump);
        int rc = system(cmd);
        if (rc != 0)
            fprintf(stderr, "  promtool rejected the rendering (rc %d):\n%s", rc, s);
        CHECK(rc == 0);
    } else {
        fprintf(stderr, "  (promtool not found; format check skipped)\n");
    }
    if (fd >= 0)
        unlink(path);
    free(s);
    metrics_shutdown();
}
