/*
 * check -- `keydrift check`: one full pass over the keyspace, then exit.
 *
 * Runs the lag monitor (for the catch-up markers that confirmation needs)
 * and the detection engine in one-pass mode: one SCAN cycle of the primary,
 * one of each replica, every suspect settled. Exit 0 when consistent, 1 when
 * divergences were confirmed, 2 on error.
 */
#include "clock.h"
#include "cmds.h"
#include "config.h"
#include "detect.h"
#include "lag.h"
#include "log.h"
#include "metrics.h"
#include "push.h"
#include "textenc.h"
#include "topo.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct finding {
    char *replica;
    int db;
    char *key;
    size_t keylen;
    enum cmp_kind kind;
    long long pttl, rttl;
    uint64_t pd, rd;
    char *found_by;
};

struct findings {
    pthread_mutex_t mu;
    struct finding *v;
    size_t n, cap;
};

static void on_confirmed(const struct detect_finding *f, void *arg)
{
    struct findings *fs = arg;

    if (f->resolution)
        return;
    pthread_mutex_lock(&fs->mu);
    if (fs->n == fs->cap) {
        size_t cap = fs->cap ? fs->cap * 2 : 64;
        struct finding *nv = realloc(fs->v, cap * sizeof(*nv));
        if (!nv) {
            pthread_mutex_unlock(&fs->mu);
            return;
        }
        fs->v = nv;
        fs->cap = cap;
    }
    struct finding *x = &fs->v[fs->n++];
    x->replica = strdup(f->replica);
    x->db = f->db;
    x->key = malloc(f->keylen ? f->keylen : 1);
    if (x->key)
        memcpy(x->key, f->key, f->keylen);
    x->keylen = f->keylen;
    x->kind = f->kind;
    x->pttl = f->primary_ttl_ms;
    x->rttl = f->replica_ttl_ms;
    x->pd = f->primary_digest;
    x->rd = f->replica_digest;
    x->found_by = strdup(f->found_by);
    pthread_mutex_unlock(&fs->mu);
}

static void print_table(const struct findings *fs, uint64_t checked, double secs)
{
    if (fs->n)
        printf("%-16s %-8s %s\n", "REPLICA", "KIND", "KEY");
    for (size_t i = 0; i < fs->n; i++) {
        char *k = text_escape(fs->v[i].key, fs->v[i].keylen);
        printf("%-16s %-8s \"%s\"\n", fs->v[i].replica, cmp_kind_name(fs->v[i].kind), k ? k : "?");
        free(k);
    }
    if (fs->n)
        printf("%zu divergent key(s); %" PRIu64 " keys checked in %.1f s\n", fs->n, checked, secs);
    else
        printf("consistent: %" PRIu64 " keys checked in %.1f s\n", checked, secs);
}

/* The label of the shard that has the named replica ("" when none does). */
static const char *shard_of(const struct topo_unit *units, int n, const char *replica)
{
    for (int u = 0; u < n; u++)
        for (int i = 0; i < units[u].u_cfg.nreplicas; i++)
            if (!strcmp(units[u].u_cfg.replicas[i].name, replica))
                return units[u].u_shard.ts_label;
    return "";
}

/* Per shard: its primary and the keys its engines checked (all dbs). */
static json_t *shards_json(const struct topo_unit *units, int n)
{
    json_t *arr = json_array();
    for (int u = 0; u < n; u++) {
        const struct topo_unit *un = &units[u];
        char addr[CFG_HOST_MAX + 8];
        json_int_t checked = 0;
        json_t *reps = json_array();
        for (int k = 0; k < un->u_ndetect; k++) {
            struct detect_progress p;
            detect_progress(un->u_detect[k], &p);
            checked += (json_int_t)p.keys_checked;
        }
        for (int i = 0; i < un->u_cfg.nreplicas; i++)
            json_array_append_new(reps, json_string(un->u_cfg.replicas[i].name));
        snprintf(addr, sizeof(addr), "%s:%d", un->u_cfg.primary.host, un->u_cfg.primary.port);
        json_array_append_new(arr, json_pack("{s:s,s:s,s:o,s:I}", "shard", un->u_shard.ts_label,
                                             "primary", addr, "replicas", reps, "keys_checked",
                                             checked));
    }
    return arr;
}

static void print_json(const struct findings *fs, uint64_t checked, double secs,
                       const struct topo_unit *units, int nunits)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < fs->n; i++) {
        const struct finding *x = &fs->v[i];
        char *k = text_escape(x->key, x->keylen), *b = text_base64(x->key, x->keylen);
        char pd[17], rd[17];
        snprintf(pd, sizeof(pd), "%016" PRIx64, x->pd);
        snprintf(rd, sizeof(rd), "%016" PRIx64, x->rd);
        json_array_append_new(
            arr,
            json_pack("{s:s,s:s,s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:s,s:i}", "replica", x->replica, "key",
                      k ? k : "", "key_base64", b ? b : "", "kind", cmp_kind_name(x->kind),
                      "primary_ttl_ms", (json_int_t)x->pttl, "replica_ttl_ms", (json_int_t)x->rttl,
                      "primary_digest", pd, "replica_digest", rd, "found_by", x->found_by, "shard",
                      shard_of(units, nunits, x->replica), "db", x->db));
        free(k);
        free(b);
    }
    json_t *j = json_pack("{s:b,s:I,s:f,s:o,s:o}", "consistent", fs->n == 0, "keys_checked",
                          (json_int_t)checked, "duration_seconds", secs, "divergences", arr,
                          "shards", shards_json(units, nunits));
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    if (s)
        printf("%s\n", s);
    free(s);
    json_decref(j);
}

/*
 * The progress line: keys compared of the primary's and keys scanned of
 * the replicas' (the scans run at once; until a replica's starts it is taken
 * to hold as many keys as the primary). Rate and ETA over both.
 */
static void progress_line(struct topo_unit *units, int n, uint64_t started)
{
    struct detect_progress p;
    double secs = (double)(clock_mono_us() - started) / 1e6;
    topo_units_progress(units, n, &p);
    uint64_t done = p.keys_checked + p.replica_scanned, total = p.keys_in_db + p.replica_keys;
    double rate = secs > 0 ? (double)done / secs : 0;
    double left = total > done ? (double)(total - done) : 0;
    fprintf(stderr,
            "\r%" PRIu64 "/%" PRIu64 " keys compared, %" PRIu64 "/%" PRIu64
            " replica keys scanned, %.0f keys/s, ETA %.0f s, %" PRIu64 " suspect(s)   ",
            p.keys_checked, p.keys_in_db, p.replica_scanned, p.replica_keys, rate,
            rate > 0 ? left / rate : 0, p.suspects);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: keydrift check [CONFIG] [--json] [--push URL] [--option value...]\n"
               "\n"
               "One full pass: SCAN the primary and every replica, compare, confirm.\n"
               "  --json      one JSON document with a \"divergences\" array\n"
               "  --push URL  push the pass's metrics to a Prometheus Pushgateway\n"
               "Exit status: 0 consistent, 1 divergent, 2 error.\n");
}

int cmd_check(int argc, char **argv)
{
    struct config cfg;
    struct findings fs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    const char *path = NULL, *push_url = NULL;
    int json = 0, i = 1, rc;
    char err[CFG_ERR_MAX];
    char *rest[256];
    int nrest = 0;

    for (; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--push")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "keydrift check: --push needs a URL\n");
                return 2;
            }
            push_url = argv[++i];
        } else if (argv[i][0] != '-' && !path && nrest == 0) {
            path = argv[i];
        } else if (nrest < 256) {
            rest[nrest++] = argv[i];
        }
    }
    if (cfg_load(&cfg, path, nrest, rest, err, sizeof(err)) < 0) {
        fprintf(stderr, "keydrift: %s\n", err);
        cfg_free(&cfg);
        return 2;
    }
    enum log_level lvl = LOG_LVL_WARNING;
    log_level_parse(cfg.log_level, &lvl);
    log_set_level(lvl > LOG_LVL_WARNING ? lvl : LOG_LVL_WARNING);
    /* The topology: the configured one, or Sentinel's / the Cluster's, each
     * shard checked by its own lag monitor and one engine per db. */
    struct topo *t = calloc(1, sizeof(*t));
    if (!t || topo_resolve(&cfg, t, err, sizeof(err)) < 0) {
        fprintf(stderr, "keydrift check: %s\n", t ? err : "out of memory");
        free(t);
        cfg_free(&cfg);
        return 2;
    }
    int nunits = t->t_nshards, total_replicas = 0;
    for (int u = 0; u < nunits; u++)
        total_replicas += t->t_shards[u].ts_nreplicas;
    if (total_replicas == 0) {
        fprintf(stderr, "keydrift check: no replicas %s\n",
                cfg.discovery == DISCOVERY_STATIC ? "configured (option 'replica')"
                                                  : "found by discovery");
        free(t);
        cfg_free(&cfg);
        return 2;
    }
    struct topo_unit *units = calloc((size_t)nunits, sizeof(*units));
    if (!units) {
        free(t);
        cfg_free(&cfg);
        return 2;
    }
    lag_metrics_init();
    detect_metrics_init();
    topo_metrics_init();

    uint64_t started = clock_mono_us();
    int started_units = 0, start_failed = 0;
    for (int u = 0; u < nunits; u++) {
        if (topo_unit_start(&units[u], &cfg, &t->t_shards[u], NULL, NULL, NULL) < 0) {
            start_failed = 1;
            break;
        }
        started_units++;
    }
    /* Let the lag monitors see every replica once: confirmation needs it. */
    for (int tries = 0; tries < 100 && !start_failed; tries++) {
        int seen = 0, ready = 1;
        for (int u = 0; u < nunits; u++) {
            for (int r = 0; r < units[u].u_cfg.nreplicas; r++) {
                struct lag_view v;
                lag_get(units[u].u_lag, r, &v);
                seen += v.lag_seconds >= 0 || !v.reachable;
            }
            ready = ready && lag_primary_offset(units[u].u_lag) >= 0;
        }
        if (seen == total_replicas && ready)
            break;
        usleep(20000);
    }
    struct detect_opts tmpl = {.one_pass = 1, .on_confirmed = on_confirmed, .arg = &fs};
    int engines = 0;
    for (int u = 0; u < started_units && !start_failed; u++) {
        topo_unit_start_detect(&units[u], &tmpl, NULL);
        engines += units[u].u_ndetect;
        if (units[u].u_cfg.nreplicas > 0 && units[u].u_ndetect != cfg.ndbs)
            start_failed = 1;
    }
    if (start_failed || engines == 0) {
        fprintf(stderr, "keydrift check: cannot start\n");
        for (int u = 0; u < started_units; u++)
            topo_unit_stop(&units[u]);
        free(units);
        free(t);
        cfg_free(&cfg);
        return 2;
    }
    int tty = isatty(STDERR_FILENO);
    /* Wait for every pass, moving the progress line on a terminal. Woken by
     * the end of a pass, not by a poll, so a check's duration is not rounded
     * up to the poll interval. */
    for (;;) {
        struct detect *pending = NULL;
        for (int u = 0; u < nunits && !pending; u++)
            for (int k = 0; k < units[u].u_ndetect && !pending; k++)
                if (!detect_done(units[u].u_detect[k]))
                    pending = units[u].u_detect[k];
        if (!pending)
            break;
        if (detect_done_within(pending, 200))
            continue;
        if (tty)
            progress_line(units, nunits, started);
    }
    if (tty)
        fprintf(stderr, "\n");
    int failed = 0;
    for (int u = 0; u < nunits; u++)
        for (int k = 0; k < units[u].u_ndetect; k++)
            failed |= detect_wait(units[u].u_detect[k]) < 0;
    struct detect_progress p;
    topo_units_progress(units, nunits, &p);
    double secs = (double)(clock_mono_us() - started) / 1e6;

    if (failed) {
        fprintf(stderr, "keydrift check: %s\n",
                p.error[0] ? p.error : "the primary could not be read");
        rc = 2;
    } else {
        if (json)
            print_json(&fs, p.keys_checked, secs, units, nunits);
        else
            print_table(&fs, p.keys_checked, secs);
        rc = fs.n ? 1 : 0;
    }
    detect_metrics_summary(&p);
    if (push_url &&
        push_check(push_url, &cfg, failed ? -1 : (long long)fs.n, secs, err, sizeof(err)) < 0) {
        fprintf(stderr, "keydrift check: push to %s failed: %s\n", push_url, err);
        if (rc == 0)
            rc = 2;
    }
    for (size_t k = 0; k < fs.n; k++) {
        free(fs.v[k].replica);
        free(fs.v[k].key);
        free(fs.v[k].found_by);
    }
    free(fs.v);
    for (int u = 0; u < nunits; u++)
        topo_unit_stop(&units[u]);
    free(units);
    free(t);
    metrics_shutdown();
    cfg_free(&cfg);
    return rc;
}
