/*
 * agent -- the `keydrift run` daemon.
 *
 * The main thread only handles signals: SIGTERM/SIGINT stop, SIGHUP reloads
 * (the config is parsed into a fresh struct and swapped in only if valid).
 * Everything else runs on the lag threads, the store's writer thread and
 * the HTTP server's threads.
 */
#include "agent.h"
#include "api.h"
#include "clock.h"
#include "cmds.h"
#include "detect.h"
#include "http.h"
#include "lag.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "topo.h"
#include "webhook.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE_RETRY_MS     10000
#define WEBHOOK_TIMEOUT_MS 5000

static struct agent agent;

static struct metric_family *m_build, *m_node_up, *m_cmds, *m_store_err, *m_store_q, *m_store_drop,
    *m_store_ok, *m_reloads;

int agent_is_loopback(const char *host)
{
    return !strcmp(host, "127.0.0.1") || !strncmp(host, "127.", 4) || !strcmp(host, "::1") ||
           !strcmp(host, "[::1]") || !strcmp(host, "localhost");
}

/* ------------------------------------------------------------ metrics */

static void node_metrics(const struct rnode *n)
{
    metric_set(metrics_series2(m_node_up, n->rn_name, n->rn_role), atomic_load(&n->rn_up));
    metric_set(metrics_series1(m_cmds, n->rn_name), (double)atomic_load(&n->rn_commands));
}

/* Runs at every render: copies atomics and module state into the registry. */
static void agent_collect(void *arg)
{
    struct agent *a = arg;

    pthread_rwlock_rdlock(&a->a_lock);
    node_metrics(&a->a_primary);
    for (int i = 0; i < a->a_cfg.nreplicas; i++)
        node_metrics(&a->a_replicas[i]);
    /* Every shard's lag and engines; unit 0's nodes are the ones above. */
    for (int u = 0; u < a->a_nunits; u++) {
        struct topo_unit *un = &a->a_units[u];
        if (u > 0) {
            node_metrics(un->u_primary);
            for (int i = 0; i < un->u_cfg.nreplicas; i++)
                node_metrics(&un->u_replicas[i]);
        }
        topo_unit_collect(un);
    }
    struct detect_progress sum;
    topo_units_progress(a->a_units, a->a_nunits, &sum);
    detect_metrics_summary(&sum);
    topo_units_ratio(a->a_units, a->a_nunits);
    if (a->a_store) {
        metric_set(metrics_series0(m_store_err),
                   (double)(store_errors_total(a->a_store) + a->a_store_open_failures));
        metric_set(metrics_series0(m_store_q), (double)store_queue_length(a->a_store));
        metric_set(metrics_series0(m_store_drop), (double)store_dropped_total(a->a_store));
        metric_set(metrics_series0(m_store_ok), store_writable(a->a_store));
    } else {
        metric_set(metrics_series0(m_store_ok), a->a_cfg.history_db[0] ? 0 : 1);
        metric_set(metrics_series0(m_store_err), (double)a->a_store_open_failures);
    }
    metric_set(metrics_series0(m_reloads), (double)a->a_reloads);
    pthread_rwlock_unlock(&a->a_lock);
}

static void register_metrics(struct agent *a)
{
    static const char *const bl[] = {"version", "hiredis", "sqlite"};
    static const char *const nl[] = {"node", "role"};
    static const char *const n1[] = {"node"};
    char hv[32];

    m_build = metrics_family("keydrift_build_info",
                             "Always 1; labels carry the version of keydrift and its libraries.",
                             METRIC_GAUGE, 3, bl);
    snprintf(hv, sizeof(hv), "%d.%d.%d", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    const char *bv[] = {KEYDRIFT_VERSION, hv, sqlite3_libversion()};
    metric_set(metrics_series(m_build, bv), 1);
    m_node_up =
        metrics_family("keydrift_node_up", "1 when the agent's last command to the node succeeded.",
                       METRIC_GAUGE, 2, nl);
    m_cmds = metrics_family("keydrift_redis_commands_total",
                            "Commands the agent sent to each node (its own load on Redis).",
                            METRIC_COUNTER, 1, n1);
    m_store_err = metrics_family("keydrift_storage_errors_total",
                                 "Failed writes to the history database.", METRIC_COUNTER, 0, NULL);
    m_store_q = metrics_family(
        "keydrift_storage_queue_length",
        "Writes not in the history database yet: queued plus the batch being written.",
        METRIC_GAUGE, 0, NULL);
    m_store_drop = metrics_family("keydrift_storage_dropped_total",
                                  "Queued writes dropped because the queue was full.",
                                  METRIC_COUNTER, 0, NULL);
    m_store_ok = metrics_family("keydrift_storage_writable",
                                "1 when the last write to the history database succeeded.",
                                METRIC_GAUGE, 0, NULL);
    m_reloads = metrics_family("keydrift_config_reloads_total",
                               "Configuration reloads (SIGHUP) that were applied.", METRIC_COUNTER,
                               0, NULL);
    lag_metrics_init();
    detect_metrics_init();
    topo_metrics_init();
    metrics_register_process();
    metrics_add_collector(agent_collect, a);
}

/* ------------------------------------------------------------ HTTP */

static int start_http(struct agent *a, char *err, size_t errlen)
{
    struct http_opts o = {.listen = a->a_cfg.http_listen,
                          .max_connections = a->a_cfg.http_max_connections,
                          .per_ip_connections = a->a_cfg.http_per_ip_connections,
                          .timeout_ms = a->a_cfg.http_timeout,
                          .max_body = a->a_cfg.http_max_body};

    a->a_http = http_new(&o);
    if (!a->a_http) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    http_add_metrics_routes(a->a_http);
    api_register(a->a_http, a);
    if (http_start(a->a_http, err, errlen) < 0) {
        http_free(a->a_http);
        a->a_http = NULL;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ lifecycle */

/*
 * Sets up the nodes for the current config. A node that keeps its name keeps
 * its command counter, so a reload does not reset keydrift_redis_commands_total.
 */
static void init_nodes(struct agent *a)
{
    struct config *c = &a->a_cfg;
    unsigned long long kept[CFG_MAX_REPLICAS];
    char names[CFG_MAX_REPLICAS][CFG_NAME_MAX];
    int nkept = 0;

    for (int i = 0; i < CFG_MAX_REPLICAS && a->a_replicas[i].rn_name[0]; i++) {
        kept[nkept] = atomic_load(&a->a_replicas[i].rn_commands);
        memcpy(names[nkept++], a->a_replicas[i].rn_name, CFG_NAME_MAX);
    }
    unsigned long long pcmds = atomic_load(&a->a_primary.rn_commands);
    memset(&a->a_primary, 0, sizeof(a->a_primary));
    snprintf(a->a_primary.rn_name, sizeof(a->a_primary.rn_name), "primary");
    snprintf(a->a_primary.rn_role, sizeof(a->a_primary.rn_role), "primary");
    a->a_primary.rn_addr = c->primary;
    atomic_store(&a->a_primary.rn_commands, pcmds);
    memset(a->a_replicas, 0, sizeof(a->a_replicas));
    for (int i = 0; i < c->nreplicas; i++) {
        struct rnode *n = &a->a_replicas[i];
        snprintf(n->rn_name, sizeof(n->rn_name), "%s", c->replicas[i].name);
        snprintf(n->rn_role, sizeof(n->rn_role), "%s",
                 c->replicas[i].kind == REPLICA_NATIVE ? "replica" : "cache");
        n->rn_addr = c->replicas[i].addr;
        for (int k = 0; k < nkept; k++)
            if (!strcmp(names[k], n->rn_name))
                atomic_store(&n->rn_commands, kept[k]);
    }
}

static void open_store(struct agent *a)
{
    char err[256];

    if (!a->a_cfg.history_db[0] || a->a_store)
        return;
    a->a_store = store_open(a->a_cfg.history_db, a->a_cfg.retention, err, sizeof(err));
    if (!a->a_store) {
        a->a_store_open_failures++;
        if (strcmp(err, a->a_store_error) != 0)
            log_errorx("history database %s: %s; monitoring goes on without history, retrying "
                       "every %d s",
                       a->a_cfg.history_db, err, STORE_RETRY_MS / 1000);
        snprintf(a->a_store_error, sizeof(a->a_store_error), "%s", err);
        return;
    }
    a->a_store_error[0] = '\0';
    char addr[CFG_HOST_MAX + 8];
    snprintf(addr, sizeof(addr), "%s:%d", a->a_cfg.primary.host, a->a_cfg.primary.port);
    store_put_node(a->a_store, "primary", "primary", addr, "");
    for (int i = 0; i < a->a_cfg.nreplicas; i++) {
        const struct cfg_replica *r = &a->a_cfg.replicas[i];
        snprintf(addr, sizeof(addr), "%s:%d", r->addr.host, r->addr.port);
        store_put_node(a->a_store, r->name, "replica", addr, cfg_replica_kind_name(r->kind));
    }
}

/*
 * Resolves the configured discovery into a->a_topo (static: the config as
 * is; Sentinel/Cluster: asks them, bounded by connect-timeout per address).
 * On failure the topology is empty, nothing is watched, and the watch keeps
 * retrying. Called with a_lock held for writing, or before threads start.
 */
static void resolve_topology(struct agent *a)
{
    char err[CFG_ERR_MAX], line[512];

    if (!a->a_topo && !(a->a_topo = calloc(1, sizeof(*a->a_topo))))
        fatalx("out of memory");
    if (topo_resolve(&a->a_cfg, a->a_topo, err, sizeof(err)) < 0) {
        log_errorx("discovery: %s; nothing is watched until it answers (retrying)", err);
        a->a_topo->t_nshards = a->a_topo->t_total = 0;
        return;
    }
    if (a->a_cfg.discovery == DISCOVERY_STATIC)
        return;
    for (int i = 0; i < a->a_topo->t_nshards; i++) {
        topo_describe(&a->a_topo->t_shards[i], line, sizeof(line));
        log_notice("discovery: %s", line);
    }
    if (a->a_cfg.discovery == DISCOVERY_CLUSTER)
        log_notice("discovery: %d of %d cluster shard(s) are this agent's (shard-index %d/%d)",
                   a->a_topo->t_nshards, a->a_topo->t_total, a->a_cfg.shard_index,
                   a->a_cfg.shard_count);
}

/*
 * Mirrors shard 0 of the topology into a_cfg.primary/replicas (what the
 * status, readiness and node metrics read). Sentinel re-resolution only takes
 * the pubsub caches from the config, so overwriting the natives is safe.
 */
static void adopt_topology(struct agent *a)
{
    const struct topo_shard *s;

    if (a->a_cfg.discovery == DISCOVERY_STATIC)
        return;
    if (a->a_topo->t_nshards == 0) {
        a->a_cfg.nreplicas = 0;
        return;
    }
    s = &a->a_topo->t_shards[0];
    a->a_cfg.primary = s->ts_primary;
    memcpy(a->a_cfg.replicas, s->ts_replicas, sizeof(s->ts_replicas[0]) * (size_t)s->ts_nreplicas);
    a->a_cfg.nreplicas = s->ts_nreplicas;
}

/*
 * Starts one unit per shard of a_topo: its lag monitor and one detection
 * engine per db. Every engine starts with no in-memory state, so after a
 * topology change no suspect of the old topology is carried over (history
 * stays in SQLite). a_lock held for writing, or before threads start.
 */
static void start_workers(struct agent *a)
{
    struct detect_opts tmpl = {0};
    int n = a->a_topo->t_nshards;

    adopt_topology(a);
    init_nodes(a);
    open_store(a);
    a->a_units = calloc((size_t)(n ? n : 1), sizeof(*a->a_units));
    if (!a->a_units)
        fatalx("out of memory");
    for (int i = 0; i < n; i++) {
        struct topo_unit *u = &a->a_units[i];
        if (topo_unit_start(u, &a->a_cfg, &a->a_topo->t_shards[i], i == 0 ? &a->a_primary : NULL,
                            i == 0 ? a->a_replicas : NULL, a->a_store) < 0)
            fatalx("cannot start the lag monitor");
        topo_unit_start_detect(u, &tmpl, a->a_store);
        a->a_nunits++;
        if (i > 0 && a->a_store) {
            char addr[CFG_HOST_MAX + 8];
            snprintf(addr, sizeof(addr), "%s:%d", u->u_cfg.primary.host, u->u_cfg.primary.port);
            store_put_node(a->a_store, u->u_primary->rn_name, "primary", addr, "");
            for (int k = 0; k < u->u_cfg.nreplicas; k++) {
                const struct cfg_replica *r = &u->u_cfg.replicas[k];
                snprintf(addr, sizeof(addr), "%s:%d", r->addr.host, r->addr.port);
                store_put_node(a->a_store, r->name, "replica", addr,
                               cfg_replica_kind_name(r->kind));
            }
        }
    }
    a->a_lag = n ? a->a_units[0].u_lag : NULL;
    a->a_detect = n && a->a_units[0].u_ndetect ? a->a_units[0].u_detect[0] : NULL;
    a->a_workers_gen++;
    topo_metrics_set(a->a_topo);
}

static void stop_workers(struct agent *a)
{
    for (int i = 0; i < a->a_nunits; i++)
        topo_unit_stop(&a->a_units[i]);
    free(a->a_units);
    a->a_units = NULL;
    a->a_nunits = 0;
    a->a_detect = NULL;
    a->a_lag = NULL;
}

/* Drops the per-node, per-replica series: the next render shows the new topology. */
static void reset_worker_metrics(void)
{
    lag_metrics_reset();
    detect_metrics_reset();
    metrics_family_reset(m_node_up);
    metrics_family_reset(m_cmds);
}

/*
 * Follows a topology change the watch reported: the same swap as a reload
 * (stop lag and detection, adopt the new primary and replicas, start again),
 * then records it as an event.
 */
static void follow_topology(struct agent *a)
{
    const char *why = "topology";
    struct topo *t = topo_watch_poll(a->a_watch, &why);
    char line[1024] = "";

    if (!t)
        return;
    pthread_rwlock_wrlock(&a->a_lock);
    stop_workers(a);
    reset_worker_metrics();
    free(a->a_topo);
    a->a_topo = t;
    start_workers(a);
    for (int i = 0; i < t->t_nshards; i++) {
        size_t o = strlen(line);
        topo_describe(&t->t_shards[i], line + o, sizeof(line) - o);
        o = strlen(line);
        if (i + 1 < t->t_nshards && o + 2 < sizeof(line))
            memcpy(line + o, "; ", 3);
    }
    if (a->a_store)
        store_put_event(a->a_store, (int64_t)clock_wall_ms(), why,
                        t->t_nshards ? a->a_units[0].u_primary->rn_name : "topology", line);
    pthread_rwlock_unlock(&a->a_lock);
    log_notice("discovery: %s: workers restarted with %s", why,
               line[0] ? line : "no shard to watch");
}

static void apply_log_settings(const struct config *c)
{
    enum log_level lvl = LOG_LVL_INFO;
    log_level_parse(c->log_level, &lvl);
    log_set_level(lvl);
    log_init("keydrift", c->log_target == LOGT_SYSLOG);
}

/* Checks what the daemon needs beyond the option table's own rules. */
static int check_run_config(const struct config *c, char *err, size_t errlen)
{
    struct cfg_addr la;

    if (cfg_parse_addr(c->http_listen, &la) < 0 && strcmp(c->http_listen, "") != 0) {
        snprintf(err, errlen, "option 'http-listen': '%s' is not HOST:PORT", c->http_listen);
        return -1;
    }
    if (c->http_listen[0] && !agent_is_loopback(la.host) && !c->http_token) {
        snprintf(err, errlen,
                 "option 'http-listen': %s is not a loopback address; set 'http-token-file' so "
                 "the repair endpoint is not open to the network",
                 c->http_listen);
        return -1;
    }
    return 0;
}

static void reload(struct agent *a, const char *path, int argc, char **argv)
{
    struct config fresh;
    char err[CFG_ERR_MAX];

    if (cfg_load(&fresh, path, argc, argv, err, sizeof(err)) < 0 ||
        check_run_config(&fresh, err, sizeof(err)) < 0) {
        log_errorx("reload: %s; keeping the running configuration", err);
        cfg_free(&fresh);
        return;
    }
    if (cfg_log_changes(&a->a_cfg, &fresh) == 0) {
        log_notice("reload: configuration unchanged");
        cfg_free(&fresh);
        return;
    }
    if (strcmp(fresh.http_listen, a->a_cfg.http_listen) != 0)
        log_warnx("reload: http-listen changes take effect at the next restart");
    if (strcmp(fresh.history_db, a->a_cfg.history_db) != 0)
        log_warnx("reload: history-db changes take effect at the next restart");
    if (strcmp(fresh.webhook_url, a->a_cfg.webhook_url) != 0)
        log_warnx("reload: webhook-url changes take effect at the next restart");

    pthread_rwlock_wrlock(&a->a_lock);
    stop_workers(a);
    topo_watch_stop(a->a_watch); /* it borrows the old config's strings */
    a->a_watch = NULL;
    reset_worker_metrics();
    /* Keep what cannot change without a restart. */
    free(fresh.http_listen);
    fresh.http_listen = strdup(a->a_cfg.http_listen);
    free(fresh.history_db);
    fresh.history_db = strdup(a->a_cfg.history_db);
    cfg_free(&a->a_cfg);
    a->a_cfg = fresh;
    apply_log_settings(&a->a_cfg);
    resolve_topology(a);
    start_workers(a);
    a->a_watch = topo_watch_start(&a->a_cfg, a->a_topo);
    a->a_reloads++;
    pthread_rwlock_unlock(&a->a_lock);
    log_notice("reload: applied");
}

static void usage(FILE *f)
{
    fprintf(f, "usage: keydrift run [-t] [CONFIG] [--option value...]\n"
               "\n"
               "Runs the agent: measures replica lag, serves metrics and the API.\n"
               "  -t          check the configuration and exit (0 valid, 2 invalid)\n"
               "  CONFIG      a config file (redis.conf style); see docs/config.md\n"
               "  --NAME V..  set any option, after the file (e.g. --primary 127.0.0.1:6379)\n"
               "Signals: SIGHUP reloads the config, SIGTERM/SIGINT stop.\n");
}

int cmd_run(int argc, char **argv)
{
    struct agent *a = &agent;
    const char *path = NULL;
    int test_only = 0;
    int i = 1;
    char err[CFG_ERR_MAX];
    sigset_t set;

    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-t")) {
            test_only = 1;
        } else if (argv[i][0] != '-' && !path) {
            path = argv[i];
        } else {
            break;
        }
    }
    if (cfg_load(&a->a_cfg, path, argc - i, argv + i, err, sizeof(err)) < 0 ||
        check_run_config(&a->a_cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "keydrift: %s\n", err);
        cfg_free(&a->a_cfg);
        return 2;
    }
    if (test_only) {
        printf("keydrift: configuration %s is valid\n", path ? path : "(defaults)");
        cfg_free(&a->a_cfg);
        return 0;
    }
    apply_log_settings(&a->a_cfg);

    /* Signals go to the main thread only: block them before any thread starts. */
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    pthread_rwlock_init(&a->a_lock, NULL);
    a->a_started_ms = clock_wall_ms();
    register_metrics(a);
    if (webhook_init(a->a_cfg.webhook_url, WEBHOOK_TIMEOUT_MS) < 0)
        log_errorx("webhook: cannot start the sender; notifications are off");
    resolve_topology(a);
    start_workers(a);
    a->a_watch = topo_watch_start(&a->a_cfg, a->a_topo);
    if (a->a_cfg.http_listen[0] && start_http(a, err, sizeof(err)) < 0) {
        log_errorx("http: %s", err);
        topo_watch_stop(a->a_watch);
        stop_workers(a);
        free(a->a_topo);
        if (a->a_store)
            store_close(a->a_store);
        webhook_shutdown();
        metrics_shutdown();
        cfg_free(&a->a_cfg);
        return 2;
    }
    log_notice("keydrift %s running: primary %s:%d, %d replica(s), metrics on http://%s/metrics",
               KEYDRIFT_VERSION, a->a_cfg.primary.host, a->a_cfg.primary.port, a->a_cfg.nreplicas,
               a->a_cfg.http_listen);
    if (a->a_store)
        store_put_event(a->a_store, (int64_t)clock_wall_ms(), "start", "agent", KEYDRIFT_VERSION);

    uint64_t next_store_try = 0;
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
        int sig = sigtimedwait(&set, NULL, &ts);
        if (sig == SIGTERM || sig == SIGINT) {
            log_notice("received %s, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
            break;
        }
        if (sig == SIGHUP) {
            log_notice("received SIGHUP, reloading %s", path ? path : "(no file)");
            reload(a, path, argc - i, argv + i);
        }
        follow_topology(a);
        if (!a->a_store && a->a_cfg.history_db[0] && clock_mono_us() / 1000 >= next_store_try) {
            pthread_rwlock_wrlock(&a->a_lock);
            open_store(a);
            if (a->a_store) {
                /* The workers were started without history: restart them with it. */
                log_notice("history database %s is writable again", a->a_cfg.history_db);
                stop_workers(a);
                start_workers(a);
            }
            pthread_rwlock_unlock(&a->a_lock);
            next_store_try = clock_mono_us() / 1000 + STORE_RETRY_MS;
        }
    }

    http_free(a->a_http);
    a->a_http = NULL;
    topo_watch_stop(a->a_watch);
    a->a_watch = NULL;
    pthread_rwlock_wrlock(&a->a_lock);
    stop_workers(a);
    free(a->a_topo);
    a->a_topo = NULL;
    if (a->a_store) {
        store_put_event(a->a_store, (int64_t)clock_wall_ms(), "stop", "agent", "");
        store_close(a->a_store);
        a->a_store = NULL;
    }
    pthread_rwlock_unlock(&a->a_lock);
    webhook_shutdown();
    metrics_shutdown();
    cfg_free(&a->a_cfg);
    pthread_rwlock_destroy(&a->a_lock);
    return 0;
}
