/*
 * lag -- replica lag by heartbeat (time) and by replication offset (bytes),
 * and each replica's status. See lag.h for the model.
 */
#include "lag.h"
#include "clock.h"
#include "info.h"
#include "log.h"
#include "metrics.h"
#include "store.h"
#include "topo.h"
#include "webhook.h"

#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HB_RING          16384 /* heartbeats remembered: 5.5 min at 20 ms */
#define HB_PREFIX        "keydrift:hb:"
#define MARKER_RING      256     /* markers remembered: 25 s at one per 100 ms */
#define MARKER_EVERY_US  100000u /* a marker at least this often (key format) */
#define MARKER_TTL_MS    10000
#define MARKER_PEEK      16 /* markers a poll asks for at each end of the outstanding run */
#define INFO_EVERY_US    250000u
#define CLIENTS_EVERY_US 1000000u
#define STATUS_EVERY_US  100000u
#define WINDOW_MAX       1024

struct sample {
    uint64_t seq;
    double lag;
};

struct rep {
    struct lag *r_lag;
    int r_idx;
    struct cfg_replica r_cfg;
    struct rnode *r_node;
    pthread_t r_thr;
    int r_started;

    /* written by the poller, under l_mu */
    int r_polled;
    uint64_t r_shown_seq;
    int r_reachable;
    char r_error[96];
    int r_link_up;   /* native: master_link_status */
    int r_info_seen; /* native: INFO answered at least once (link state known) */
    long long r_offset;
    long long r_last_io;
    int r_sync_in_progress;
    char r_replid[48];
    uint64_t r_resyncs;
    uint64_t r_resync_mono; /* when the last resync was seen */

    /* status, evaluated by the heartbeat thread, under l_mu */
    struct sample r_win[WINDOW_MAX];
    int r_wn, r_wpos;
    enum replica_status r_status;
    char r_reason[96];
    int r_named_sub; /* pubsub: a keydrift sync for this cache is subscribed */

    /* key-format caches, written by the poller under l_mu */
    uint64_t r_shown_marker; /* newest marker the cache shows (0: none) */
    uint64_t r_unshown_at;   /* when the oldest marker it does not show was written; 0 none */
};

struct lag {
    const struct config *l_cfg;
    char l_key[CFG_NAME_MAX + 64];
    uint64_t l_run;
    struct rnode *l_primary;
    struct store *l_store;
    pthread_t l_thr;
    volatile int l_stop;
    int l_has_pubsub;
    int l_markers; /* key-format pubsub caches: markers are written */

    pthread_mutex_t l_mu;
    uint64_t l_ring[HB_RING]; /* monotonic µs when heartbeat seq was written */
    uint64_t l_written;       /* newest seq written (0: none yet) */
    uint64_t l_written_mono;  /* when it was written (µs), 0: none yet */
    uint64_t l_started_mono;
    long long l_primary_offset;
    long long l_subscribers;
    int l_named_any;  /* some subscriber calls itself keydrift-sync */
    int l_not_master; /* INFO says the "primary" is not a master: no heartbeat writes */
    char l_run_id[48];

    /* markers (see lag_marker_ask): l_mring[n % MARKER_RING] is when marker
     * n was written (mono µs), 0 if its write failed */
    uint64_t l_mring[MARKER_RING];
    uint64_t l_mwriting; /* newest marker number used */
    uint64_t l_mwritten; /* newest marker written and published */
    uint64_t l_mwant;    /* a marker asked for: write one up to this number */

    struct rep *l_reps;
    int l_nreps;
};

static const char *const status_names[STATUS_COUNT] = {"ok", "lagging", "stalled", "down",
                                                       "resynced"};

const char *lag_status_name(enum replica_status s)
{
    return status_names[s];
}

void lag_heartbeat_key(const struct config *cfg, char *out, size_t outsz)
{
    snprintf(out, outsz, HB_PREFIX "%s", cfg->agent_id);
}

int lag_is_heartbeat_key(const void *key, size_t len)
{
    return len >= sizeof(HB_PREFIX) - 1 && memcmp(key, HB_PREFIX, sizeof(HB_PREFIX) - 1) == 0;
}

uint64_t lag_beat_time(const uint64_t *ring, uint64_t n, uint64_t written, uint64_t seq,
                       uint64_t interval_us)
{
    /* The slot after the newest may already hold the beat being written. */
    uint64_t oldest = written + 2 > n ? written + 2 - n : 1;

    if (seq >= oldest)
        return ring[seq % n];
    uint64_t back = (oldest - seq) * interval_us, at = ring[oldest % n];
    return at > back ? at - back : 0;
}

/*
 * Lag of a replica now, in seconds; l_mu held. -1 before the first poll. The
 * age of the oldest heartbeat it does not show, or, for a key-format cache,
 * of the oldest marker it does not show if that is older.
 */
static double compute_lag(const struct lag *l, const struct rep *r, uint64_t now)
{
    uint64_t at = 0;

    if (!r->r_polled)
        return -1;
    if (l->l_written && r->r_shown_seq < l->l_written)
        at = lag_beat_time(l->l_ring, HB_RING, l->l_written, r->r_shown_seq + 1,
                           (uint64_t)l->l_cfg->heartbeat_interval * 1000u);
    if (r->r_unshown_at && (!at || r->r_unshown_at < at))
        at = r->r_unshown_at;
    return at && now > at ? (double)(now - at) / 1e6 : 0;
}

/* Parses "<run>:<seq>:<wall-us>"; the seq when run is ours, else 0. */
static uint64_t parse_hb(const struct lag *l, const char *s, size_t len)
{
    char buf[96];
    unsigned long long run, seq, wall;

    if (len >= sizeof(buf))
        return 0;
    memcpy(buf, s, len);
    buf[len] = '\0';
    if (sscanf(buf, "%llx:%llu:%llu", &run, &seq, &wall) != 3 || run != l->l_run)
        return 0;
    return seq;
}

/* ------------------------------------------------------------ replicas */

static void poll_info(struct rep *r, struct rconn *c)
{
    struct lag *l = r->r_lag;
    redisReply *rep = rconn_command(c, "INFO replication");
    struct info_repl ir;

    if (!rep)
        return;
    if (rep->type != REDIS_REPLY_STRING) {
        freeReplyObject(rep);
        return;
    }
    info_repl_init(&ir);
    info_parse(rep->str, rep->len, &ir);
    freeReplyObject(rep);

    pthread_mutex_lock(&l->l_mu);
    r->r_link_up = ir.master_link_up == 1;
    r->r_info_seen = 1;
    r->r_offset = ir.slave_repl_offset;
    r->r_last_io = ir.master_last_io_seconds_ago;
    r->r_sync_in_progress = ir.master_sync_in_progress == 1;
    if (strcmp(ir.role, "master") == 0) {
        r->r_link_up = 0;
        snprintf(r->r_error, sizeof(r->r_error), "not a replica (role master)");
    }
    if (ir.master_replid[0] && r->r_replid[0] && strcmp(ir.master_replid, r->r_replid) != 0) {
        r->r_resyncs++;
        r->r_resync_mono = clock_mono_us();
        log_notice("replica %s: replication id changed from %s to %s", r->r_cfg.name, r->r_replid,
                   ir.master_replid);
        if (l->l_store)
            store_put_event(l->l_store, (int64_t)clock_wall_ms(), "resync", r->r_cfg.name,
                            "replication id changed");
    }
    if (r->r_sync_in_progress)
        r->r_resync_mono = clock_mono_us();
    if (ir.master_replid[0])
        snprintf(r->r_replid, sizeof(r->r_replid), "%s", ir.master_replid);
    pthread_mutex_unlock(&l->l_mu);
}

static int marker_key(const struct lag *l, uint64_t n, char *out, size_t outsz)
{
    return snprintf(out, outsz, "%s:%" PRIx64 ":m%" PRIu64, l->l_key, l->l_run, n);
}

/*
 * A key-format cache: which of the markers it did not show yet does it show
 * now? Asks for the oldest and the newest few of them (all when few).
 */
static void poll_markers(struct rep *r, struct rconn *c)
{
    struct lag *l = r->r_lag;
    uint64_t from, to, want[2 * MARKER_PEEK];
    char keys[2 * MARKER_PEEK][CFG_NAME_MAX + 128];
    const char *argv[1 + 2 * MARKER_PEEK];
    size_t lens[1 + 2 * MARKER_PEEK];
    int n = 0;

    pthread_mutex_lock(&l->l_mu);
    from = r->r_shown_marker + 1;
    to = l->l_mwritten;
    pthread_mutex_unlock(&l->l_mu);
    if (to + 2 > MARKER_RING && from < to + 2 - MARKER_RING)
        from = to + 2 - MARKER_RING; /* older ones are forgotten */
    if (from > to) {
        pthread_mutex_lock(&l->l_mu);
        r->r_unshown_at = 0;
        pthread_mutex_unlock(&l->l_mu);
        return;
    }
    for (uint64_t m = from; m <= to && n < MARKER_PEEK; m++)
        want[n++] = m;
    for (uint64_t m = to - from + 1 > 2 * MARKER_PEEK ? to - MARKER_PEEK + 1 : from + (uint64_t)n;
         m <= to; m++)
        want[n++] = m;
    argv[0] = "MGET";
    lens[0] = 4;
    for (int i = 0; i < n; i++) {
        argv[1 + i] = keys[i];
        lens[1 + i] = (size_t)marker_key(l, want[i], keys[i], sizeof(keys[i]));
    }
    redisReply *rep = rconn_argv(c, 1 + n, argv, lens);
    if (!rep)
        return;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == (size_t)n) {
        uint64_t shown = 0, unshown_at = 0;
        for (int i = 0; i < n; i++)
            if (rep->element[i]->type == REDIS_REPLY_STRING)
                shown = want[i];
        pthread_mutex_lock(&l->l_mu);
        if (shown > r->r_shown_marker)
            r->r_shown_marker = shown;
        /* The oldest marker asked about that the cache does not show; from
         * the slots the ring still holds (it may have moved on meanwhile). */
        uint64_t lo = l->l_mwritten + 2 > MARKER_RING ? l->l_mwritten + 2 - MARKER_RING : 1;
        if (lo < r->r_shown_marker + 1)
            lo = r->r_shown_marker + 1;
        for (uint64_t m = lo; m <= to; m++)
            if ((unshown_at = l->l_mring[m % MARKER_RING]) != 0)
                break;
        r->r_unshown_at = unshown_at;
        pthread_mutex_unlock(&l->l_mu);
    }
    freeReplyObject(rep);
}

/* The poller of one replica: GET the heartbeat key every lag-poll-interval. */
static void *rep_main(void *arg)
{
    struct rep *r = arg;
    struct lag *l = r->r_lag;
    const struct config *cfg = l->l_cfg;
    struct rconn_opts o = {.user = cfg->redis_user,
                           .password = cfg->redis_password,
                           .db = cfg->dbs[0],
                           /* a cluster replica answers reads only after READONLY */
                           .readonly = cfg->discovery == DISCOVERY_CLUSTER,
                           .connect_timeout_ms = cfg->connect_timeout,
                           .command_timeout_ms = cfg->command_timeout,
                           .backoff_max_ms = 1000};
    struct rconn *c = rconn_new(&r->r_cfg.addr, &o, r->r_node);
    uint64_t next_info = 0;
    uint64_t poll_us = (uint64_t)cfg->lag_poll_interval * 1000u;

    if (!c)
        return NULL;
    while (!l->l_stop) {
        uint64_t t0 = clock_mono_us();
        redisReply *rep = rconn_command(c, "GET %b", l->l_key, strlen(l->l_key));

        pthread_mutex_lock(&l->l_mu);
        if (!rep) {
            r->r_reachable = 0;
            snprintf(r->r_error, sizeof(r->r_error), "%s", rconn_errstr(c));
        } else if (rep->type == REDIS_REPLY_ERROR) {
            r->r_reachable = 0;
            snprintf(r->r_error, sizeof(r->r_error), "%.90s", rep->str);
        } else {
            r->r_reachable = 1;
            r->r_error[0] = '\0';
            r->r_polled = 1;
            r->r_shown_seq = rep->type == REDIS_REPLY_STRING ? parse_hb(l, rep->str, rep->len) : 0;
        }
        pthread_mutex_unlock(&l->l_mu);
        if (rep)
            freeReplyObject(rep);

        if (rep && l->l_markers && r->r_cfg.kind == REPLICA_PUBSUB)
            poll_markers(r, c);
        if (rep && r->r_cfg.kind == REPLICA_NATIVE && t0 >= next_info) {
            poll_info(r, c);
            next_info = t0 + INFO_EVERY_US;
        }
        uint64_t now = clock_mono_us();
        if (now < t0 + poll_us)
            usleep((useconds_t)(t0 + poll_us - now));
    }
    rconn_free(c);
    return NULL;
}

/* ------------------------------------------------------------ status */

/*
 * Evaluates one replica's status from its window of samples; l_mu held.
 * Precedence: resynced > down > stalled > lagging > ok.
 */
static enum replica_status evaluate(struct lag *l, struct rep *r, uint64_t now, char *why,
                                    size_t wl)
{
    const struct config *cfg = l->l_cfg;
    double lag = compute_lag(l, r, now);
    uint64_t window_us = (uint64_t)cfg->status_window * STATUS_EVERY_US;
    struct sample *s = &r->r_win[r->r_wpos];

    s->seq = r->r_shown_seq;
    s->lag = lag;
    r->r_wpos = (r->r_wpos + 1) % (int)cfg->status_window;
    if (r->r_wn < cfg->status_window)
        r->r_wn++;

    if (r->r_cfg.kind == REPLICA_NATIVE &&
        (r->r_sync_in_progress || (r->r_resync_mono && now - r->r_resync_mono < window_us))) {
        snprintf(why, wl, "%s",
                 r->r_sync_in_progress ? "full sync in progress" : "replication id changed");
        return STATUS_RESYNCED;
    }
    if (!r->r_reachable) {
        snprintf(why, wl, "%s", r->r_error[0] ? r->r_error : "unreachable");
        return STATUS_DOWN;
    }
    /* Until INFO answered, the link's state is unknown, not down. */
    if (r->r_cfg.kind == REPLICA_NATIVE && r->r_info_seen && !r->r_link_up) {
        snprintf(why, wl, "%s", r->r_error[0] ? r->r_error : "master link down");
        return STATUS_DOWN;
    }
    if (r->r_cfg.kind == REPLICA_PUBSUB) {
        if (l->l_subscribers == 0) {
            snprintf(why, wl, "no subscriber on channel %s", cfg->channel);
            return STATUS_DOWN;
        }
        if (l->l_named_any && !r->r_named_sub) {
            snprintf(why, wl, "no keydrift sync subscribed for this cache");
            return STATUS_DOWN;
        }
    }
    /* Stalled: a full window in which the replica showed nothing new while
     * heartbeats kept being written, and the lag kept growing. */
    if (r->r_wn == cfg->status_window && lag > 0) {
        int oldest = r->r_wpos; /* the slot just after the newest */
        int grew = 1;
        for (int i = 1; i < r->r_wn; i++) {
            const struct sample *a = &r->r_win[(oldest + i - 1) % r->r_wn];
            const struct sample *b = &r->r_win[(oldest + i) % r->r_wn];
            if (b->seq != a->seq || b->lag < a->lag)
                grew = 0;
        }
        if (grew && lag * 1000 > (double)cfg->heartbeat_interval * 2) {
            snprintf(why, wl, "no heartbeat applied for %.1f s", lag);
            return STATUS_STALLED;
        }
    }
    if (lag * 1000 > (double)cfg->lag_warn) {
        snprintf(why, wl, "lag %.3f s above lag-warn", lag);
        return STATUS_LAGGING;
    }
    why[0] = '\0';
    return STATUS_OK;
}

static void update_statuses(struct lag *l)
{
    uint64_t now = clock_mono_us();

    pthread_mutex_lock(&l->l_mu);
    for (int i = 0; i < l->l_nreps; i++) {
        struct rep *r = &l->l_reps[i];
        char why[96];
        enum replica_status st;

        if (!r->r_polled && r->r_reachable == 0 && r->r_error[0] == '\0')
            continue; /* not polled yet */
        st = evaluate(l, r, now, why, sizeof(why));
        if (st != r->r_status) {
            log_notice("replica %s: status %s -> %s%s%s", r->r_cfg.name, status_names[r->r_status],
                       status_names[st], why[0] ? ": " : "", why);
            if (l->l_store) {
                char detail[160];
                snprintf(detail, sizeof(detail), "%s -> %s%s%s", status_names[r->r_status],
                         status_names[st], why[0] ? ": " : "", why);
                store_put_event(l->l_store, (int64_t)clock_wall_ms(), "status", r->r_cfg.name,
                                detail);
            }
            /* webhook: tell the operator's endpoint (queued, never blocks). */
            webhook_event("replica_status", json_pack("{s:s,s:s,s:s,s:s}", "replica", r->r_cfg.name,
                                                      "from", status_names[r->r_status], "to",
                                                      status_names[st], "reason", why));
            r->r_status = st;
        }
        snprintf(r->r_reason, sizeof(r->r_reason), "%s", why);
    }
    pthread_mutex_unlock(&l->l_mu);
}

/* ------------------------------------------------------------ primary */

static struct metric_family *m_hb_skipped;

#define WRITE_OK   1 /* write_replies: the SET succeeded */
#define PUBLISH_OK 2 /* ... and so did every PUBLISH after it */

/*
 * Reads the replies to a SET on the primary and the n - 1 PUBLISHes
 * pipelined after it. A refused SET is logged; a MOVED or READONLY answer
 * asks discovery to look again.
 */
static int write_replies(struct rconn *c, int n, const char *what)
{
    int rc = WRITE_OK | PUBLISH_OK;

    for (int i = 0; i < n; i++) {
        redisReply *r = rconn_reply(c);
        if (!r)
            return 0;
        if (r->type == REDIS_REPLY_ERROR && i == 0) {
            log_warnx("%s write on primary failed: %.200s", what, r->str);
            if (!strncmp(r->str, "MOVED", 5) || !strncmp(r->str, "READONLY", 8))
                topo_kick();
            rc = 0;
        } else if (r->type == REDIS_REPLY_ERROR) {
            rc &= ~PUBLISH_OK;
        }
        freeReplyObject(r);
    }
    return rc;
}

/*
 * Writes the next heartbeat (and publishes it for pubsub caches), unless the
 * last INFO showed that the configured primary is not a master (a demoted
 * primary after a failover): writes go only to a master, so a skipped beat
 * is counted instead. A MOVED or READONLY answer asks discovery to look again.
 */
static void write_heartbeat(struct lag *l, struct rconn *c)
{
    char val[96];
    uint64_t seq, t;
    int n = 1;

    pthread_mutex_lock(&l->l_mu);
    int not_master = l->l_not_master;
    pthread_mutex_unlock(&l->l_mu);
    if (not_master) {
        metric_inc(metrics_series0(m_hb_skipped));
        return;
    }
    pthread_mutex_lock(&l->l_mu);
    seq = l->l_written + 1;
    t = clock_mono_us();
    l->l_ring[seq % HB_RING] = t;
    pthread_mutex_unlock(&l->l_mu);

    snprintf(val, sizeof(val), "%" PRIx64 ":%" PRIu64 ":%" PRIu64, l->l_run, seq, clock_wall_us());
    if (rconn_append(c, "SET %s %s", l->l_key, val) < 0)
        return;
    if (l->l_has_pubsub) {
        if (l->l_cfg->message_format == FMT_JSON) {
            json_t *j = json_pack("{s:s,s:s,s:s}", "op", "set", "key", l->l_key, "value", val);
            char *msg = j ? json_dumps(j, JSON_COMPACT) : NULL;
            json_decref(j);
            if (msg && rconn_append(c, "PUBLISH %s %s", l->l_cfg->channel, msg) == 0)
                n++;
            free(msg);
        } else if (rconn_append(c, "PUBLISH %s %s", l->l_cfg->channel, l->l_key) == 0) {
            n++;
        }
    }
    if (write_replies(c, n, "heartbeat") & WRITE_OK) {
        pthread_mutex_lock(&l->l_mu);
        l->l_written = seq;
        l->l_written_mono = t;
        pthread_mutex_unlock(&l->l_mu);
    }
}

/*
 * Key format: writes the next marker, a key of its own with a short TTL, and
 * publishes it. A subscriber copies a key's current state, so a cache that
 * shows the newest heartbeat may still hold older updates in its queue; a
 * marker is shown only once the subscriber handled the message published
 * with it, and so everything published before.
 */
static void write_marker(struct lag *l, struct rconn *c)
{
    char key[CFG_NAME_MAX + 128];
    uint64_t n, t;
    int sent = 0, ok;

    pthread_mutex_lock(&l->l_mu);
    int not_master = l->l_not_master;
    n = not_master ? 0 : ++l->l_mwriting;
    pthread_mutex_unlock(&l->l_mu);
    if (not_master)
        return;
    marker_key(l, n, key, sizeof(key));
    t = clock_mono_us();
    if (rconn_append(c, "SET %s 1 PX %d", key, MARKER_TTL_MS) == 0)
        sent++;
    if (sent && rconn_append(c, "PUBLISH %s %s", l->l_cfg->channel, key) == 0)
        sent++;
    ok = write_replies(c, sent, "marker") == (WRITE_OK | PUBLISH_OK) && sent == 2;
    pthread_mutex_lock(&l->l_mu);
    l->l_mring[n % MARKER_RING] = ok ? t : 0;
    if (ok && n > l->l_mwritten)
        l->l_mwritten = n;
    pthread_mutex_unlock(&l->l_mu);
}

uint64_t lag_marker_ask(struct lag *l)
{
    uint64_t n = 0;

    pthread_mutex_lock(&l->l_mu);
    if (l->l_markers) {
        n = l->l_mwriting + 2; /* one marker per turn of the heartbeat loop */
        if (l->l_mwant < n)
            l->l_mwant = n;
    }
    pthread_mutex_unlock(&l->l_mu);
    return n;
}

static void poll_primary(struct lag *l, struct rconn *c)
{
    redisReply *r = rconn_command(c, "INFO server replication stats");
    struct info_repl ir;

    if (!r)
        return;
    if (r->type == REDIS_REPLY_STRING) {
        info_repl_init(&ir);
        info_parse(r->str, r->len, &ir);
        pthread_mutex_lock(&l->l_mu);
        l->l_primary_offset = ir.master_repl_offset;
        if (ir.run_id[0] && l->l_run_id[0] && strcmp(ir.run_id, l->l_run_id) != 0) {
            log_warnx("primary %s:%d restarted (run_id %s -> %s)", l->l_cfg->primary.host,
                      l->l_cfg->primary.port, l->l_run_id, ir.run_id);
            if (l->l_store)
                store_put_event(l->l_store, (int64_t)clock_wall_ms(), "primary-restart", "primary",
                                "run_id changed");
        }
        if (ir.run_id[0])
            snprintf(l->l_run_id, sizeof(l->l_run_id), "%s", ir.run_id);
        int not_master = ir.role[0] && strcmp(ir.role, "master") != 0;
        if (not_master != l->l_not_master) {
            if (not_master)
                log_warnx("primary %s:%d has role %s: heartbeats paused until it is a master "
                          "again or discovery finds the new one",
                          l->l_cfg->primary.host, l->l_cfg->primary.port, ir.role);
            else
                log_notice("primary %s:%d is a master again: heartbeats resume",
                           l->l_cfg->primary.host, l->l_cfg->primary.port);
            l->l_not_master = not_master;
            if (not_master)
                topo_kick();
        }
        pthread_mutex_unlock(&l->l_mu);
    }
    freeReplyObject(r);
    if (!l->l_has_pubsub)
        return;
    r = rconn_command(c, "PUBSUB NUMSUB %s", l->l_cfg->channel);
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        pthread_mutex_lock(&l->l_mu);
        l->l_subscribers = r->element[1]->integer;
        pthread_mutex_unlock(&l->l_mu);
    }
    if (r)
        freeReplyObject(r);
}

/*
 * Which caches have a keydrift sync subscribed: each names its connection
 * "keydrift-sync:<cache host:port>" (CLIENT SETNAME).
 */
static void poll_clients(struct lag *l, struct rconn *c)
{
    redisReply *r = rconn_command(c, "CLIENT LIST TYPE pubsub");

    if (!r)
        return;
    if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) {
        pthread_mutex_lock(&l->l_mu);
        l->l_named_any = strstr(r->str, " name=keydrift-sync:") != NULL;
        for (int i = 0; i < l->l_nreps; i++) {
            struct rep *rp = &l->l_reps[i];
            char want[CFG_HOST_MAX + 40];
            snprintf(want, sizeof(want), " name=keydrift-sync:%s:%d ", rp->r_cfg.addr.host,
                     rp->r_cfg.addr.port);
            rp->r_named_sub = strstr(r->str, want) != NULL;
        }
        pthread_mutex_unlock(&l->l_mu);
    }
    freeReplyObject(r);
}

static void *hb_main(void *arg)
{
    struct lag *l = arg;
    const struct config *cfg = l->l_cfg;
    struct rconn_opts o = {.user = cfg->redis_user,
                           .password = cfg->redis_password,
                           .db = cfg->dbs[0],
                           .connect_timeout_ms = cfg->connect_timeout,
                           .command_timeout_ms = cfg->command_timeout,
                           .backoff_max_ms = 1000};
    struct rconn *c = rconn_new(&cfg->primary, &o, l->l_primary);
    uint64_t hb_us = (uint64_t)cfg->heartbeat_interval * 1000u;
    uint64_t next_hb = 0, next_info = 0, next_clients = 0, next_status = 0, next_marker = 0;
    int was_up = 1;

    if (!c)
        return NULL;
    while (!l->l_stop) {
        uint64_t now = clock_mono_us();
        /* INFO first: the heartbeat writer relies on the role it reports. */
        if (now >= next_info) {
            poll_primary(l, c);
            next_info = now + INFO_EVERY_US;
        }
        if (now >= next_hb) {
            write_heartbeat(l, c);
            next_hb = now + hb_us;
        }
        if (l->l_markers) {
            pthread_mutex_lock(&l->l_mu);
            int asked = l->l_mwant > l->l_mwriting;
            pthread_mutex_unlock(&l->l_mu);
            if (asked || now >= next_marker) {
                write_marker(l, c);
                next_marker = now + MARKER_EVERY_US;
            }
        }
        if (l->l_has_pubsub && now >= next_clients) {
            poll_clients(l, c);
            next_clients = now + CLIENTS_EVERY_US;
        }
        if (now >= next_status) {
            update_statuses(l);
            next_status = now + STATUS_EVERY_US;
        }
        int up = rconn_connected(c);
        if (up != was_up) {
            if (!up) {
                log_warnx("primary unreachable: %s", rconn_errstr(c));
                topo_kick(); /* a dead primary may have been failed over */
            } else
                log_notice("primary reachable again");
            if (l->l_store)
                store_put_event(l->l_store, (int64_t)clock_wall_ms(), up ? "link-up" : "link-down",
                                "primary", up ? "" : rconn_errstr(c));
            was_up = up;
        }
        uint64_t next = next_hb < next_status ? next_hb : next_status;
        now = clock_mono_us();
        if (next > now)
            usleep((useconds_t)(next - now < 50000 ? next - now : 50000));
    }
    rconn_free(c);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

struct lag *lag_start(const struct config *cfg, struct rnode *primary, struct rnode *replicas,
                      struct store *store)
{
    struct lag *l = calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->l_cfg = cfg;
    l->l_primary = primary;
    l->l_store = store;
    l->l_primary_offset = -1;
    l->l_subscribers = -1;
    l->l_run = (clock_wall_us() ^ ((uint64_t)getpid() << 32)) & 0xffffffffffffULL;
    l->l_started_mono = clock_mono_us();
    lag_heartbeat_key(cfg, l->l_key, sizeof(l->l_key));
    pthread_mutex_init(&l->l_mu, NULL);
    l->l_nreps = cfg->nreplicas;
    l->l_reps = calloc((size_t)(cfg->nreplicas ? cfg->nreplicas : 1), sizeof(struct rep));
    if (!l->l_reps) {
        free(l);
        return NULL;
    }
    for (int i = 0; i < cfg->nreplicas; i++) {
        struct rep *r = &l->l_reps[i];
        r->r_lag = l;
        r->r_idx = i;
        r->r_cfg = cfg->replicas[i];
        r->r_node = &replicas[i];
        r->r_offset = -1;
        r->r_last_io = -1;
        r->r_status = STATUS_OK;
        if (r->r_cfg.kind == REPLICA_PUBSUB)
            l->l_has_pubsub = 1;
    }
    l->l_markers = l->l_has_pubsub && cfg->message_format == FMT_KEY;
    if (pthread_create(&l->l_thr, NULL, hb_main, l) != 0) {
        free(l->l_reps);
        free(l);
        return NULL;
    }
    for (int i = 0; i < l->l_nreps; i++) {
        if (pthread_create(&l->l_reps[i].r_thr, NULL, rep_main, &l->l_reps[i]) == 0)
            l->l_reps[i].r_started = 1;
        else
            log_warnx("replica %s: cannot start its poll thread", l->l_reps[i].r_cfg.name);
    }
    return l;
}

void lag_stop(struct lag *l)
{
    if (!l)
        return;
    l->l_stop = 1;
    pthread_join(l->l_thr, NULL);
    for (int i = 0; i < l->l_nreps; i++)
        if (l->l_reps[i].r_started)
            pthread_join(l->l_reps[i].r_thr, NULL);
    pthread_mutex_destroy(&l->l_mu);
    free(l->l_reps);
    free(l);
}

void lag_get(struct lag *l, int i, struct lag_view *v)
{
    const struct rep *r = &l->l_reps[i];
    uint64_t now = clock_mono_us();

    pthread_mutex_lock(&l->l_mu);
    v->lag_seconds = compute_lag(l, r, now);
    v->offset = r->r_offset;
    v->lag_bytes = (r->r_cfg.kind == REPLICA_NATIVE && r->r_offset >= 0 && l->l_primary_offset >= 0)
                       ? (l->l_primary_offset > r->r_offset ? l->l_primary_offset - r->r_offset : 0)
                       : -1;
    v->reachable = r->r_reachable;
    v->link_up = r->r_cfg.kind == REPLICA_NATIVE
                     ? r->r_link_up
                     : (l->l_subscribers > 0 && (!l->l_named_any || r->r_named_sub));
    v->last_io_seconds = r->r_last_io;
    v->sync_in_progress = r->r_sync_in_progress;
    v->resyncs = r->r_resyncs;
    v->shown_seq = r->r_shown_seq;
    v->shown_marker = r->r_shown_marker;
    v->status = r->r_status;
    snprintf(v->status_reason, sizeof(v->status_reason), "%s", r->r_reason);
    pthread_mutex_unlock(&l->l_mu);
}

uint64_t lag_written_seq(struct lag *l)
{
    pthread_mutex_lock(&l->l_mu);
    uint64_t s = l->l_written;
    pthread_mutex_unlock(&l->l_mu);
    return s;
}

long long lag_primary_offset(struct lag *l)
{
    pthread_mutex_lock(&l->l_mu);
    long long o = l->l_primary_offset;
    pthread_mutex_unlock(&l->l_mu);
    return o;
}

long long lag_channel_subscribers(struct lag *l)
{
    pthread_mutex_lock(&l->l_mu);
    long long n = l->l_subscribers;
    pthread_mutex_unlock(&l->l_mu);
    return n;
}

void lag_primary_run_id(struct lag *l, char *out, size_t outsz)
{
    pthread_mutex_lock(&l->l_mu);
    snprintf(out, outsz, "%s", l->l_run_id);
    pthread_mutex_unlock(&l->l_mu);
}

/* ------------------------------------------------------------ metrics */

static struct metric_family *m_hb_age, *m_lag_s, *m_lag_b, *m_link, *m_status, *m_subs, *m_resyncs,
    *m_last_io, *m_syncing;

void lag_collect(struct lag *l)
{
    const struct config *cfg = l->l_cfg;

    for (int i = 0; i < l->l_nreps; i++) {
        struct lag_view v;
        const char *name = l->l_reps[i].r_cfg.name;
        lag_get(l, i, &v);
        if (v.lag_seconds >= 0)
            metric_set(metrics_series1(m_lag_s, name), v.lag_seconds);
        if (l->l_reps[i].r_cfg.kind == REPLICA_NATIVE) {
            if (v.lag_bytes >= 0)
                metric_set(metrics_series1(m_lag_b, name), (double)v.lag_bytes);
            if (v.last_io_seconds >= 0)
                metric_set(metrics_series1(m_last_io, name), (double)v.last_io_seconds);
            metric_set(metrics_series1(m_syncing, name), v.sync_in_progress);
            metric_set(metrics_series1(m_resyncs, name), (double)v.resyncs);
        }
        metric_set(metrics_series1(m_link, name), v.link_up && v.reachable);
        for (int s = 0; s < STATUS_COUNT; s++)
            metric_set(metrics_series2(m_status, name, status_names[s]), (int)v.status == s);
    }
    pthread_mutex_lock(&l->l_mu);
    uint64_t since = l->l_written_mono ? l->l_written_mono : l->l_started_mono;
    pthread_mutex_unlock(&l->l_mu);
    metric_set(metrics_series0(m_hb_age), (double)(clock_mono_us() - since) / 1e6);
    if (l->l_has_pubsub) {
        long long n = lag_channel_subscribers(l);
        if (n >= 0)
            metric_set(metrics_series1(m_subs, cfg->channel), (double)n);
    }
}

void lag_metrics_init(void)
{
    static const char *const rl[] = {"replica"};
    static const char *const rsl[] = {"replica", "status"};
    static const char *const cl[] = {"channel"};

    m_hb_age = metrics_family("keydrift_heartbeat_age_seconds",
                              "Seconds since the last heartbeat was written on the primary; "
                              "grows while the primary cannot be written.",
                              METRIC_GAUGE, 0, NULL);
    m_lag_s = metrics_family("keydrift_replica_lag_seconds",
                             "Heartbeat lag: age of the oldest heartbeat the replica does not "
                             "show yet (0 when it shows the latest).",
                             METRIC_GAUGE, 1, rl);
    m_lag_b = metrics_family("keydrift_replica_lag_bytes",
                             "Native replicas: primary master_repl_offset minus the replica's "
                             "processed offset.",
                             METRIC_GAUGE, 1, rl);
    m_link = metrics_family("keydrift_replica_link_up",
                            "1 when the replica is reachable and its link works (native: "
                            "master_link_status up; pubsub: a subscriber serves it).",
                            METRIC_GAUGE, 1, rl);
    m_status = metrics_family("keydrift_replica_status",
                              "1 for the replica's current status (ok, lagging, stalled, down, "
                              "resynced), 0 for the others.",
                              METRIC_GAUGE, 2, rsl);
    m_subs = metrics_family("keydrift_channel_subscribers",
                            "Subscribers on the sync channel (PUBSUB NUMSUB) on the primary.",
                            METRIC_GAUGE, 1, cl);
    m_resyncs = metrics_family("keydrift_replica_resyncs_total",
                               "Replication-id changes seen on a native replica (full or partial "
                               "resynchronisations after a new primary).",
                               METRIC_COUNTER, 1, rl);
    m_last_io = metrics_family("keydrift_replica_last_io_seconds",
                               "Native replicas: seconds since the last interaction with the "
                               "primary (master_last_io_seconds_ago).",
                               METRIC_GAUGE, 1, rl);
    m_hb_skipped = metrics_family("keydrift_heartbeats_skipped_total",
                                  "Heartbeats not written because the configured primary was "
                                  "not a master (e.g. demoted by a failover).",
                                  METRIC_COUNTER, 0, NULL);
    m_syncing = metrics_family("keydrift_replica_sync_in_progress",
                               "Native replicas: 1 while a full sync from the primary is in "
                               "progress.",
                               METRIC_GAUGE, 1, rl);
}

void lag_metrics_reset(void)
{
    struct metric_family *per_replica[] = {m_lag_s, m_lag_b,   m_link,    m_status,
                                           m_subs,  m_resyncs, m_last_io, m_syncing};
    for (size_t i = 0; i < sizeof(per_replica) / sizeof(per_replica[0]); i++)
        if (per_replica[i])
            metrics_family_reset(per_replica[i]);
}
