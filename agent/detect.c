/*
 * detect -- divergence detection: sampling, comparison, confirmation.
 * See detect.h for the model and the state machine.
 */
#include "detect.h"
#include "clock.h"
#include "info.h"
#include "lag.h"
#include "log.h"
#include "metrics.h"
#include "repair.h"
#include "replyrd.h"
#include "seen.h"
#include "store.h"
#include "textenc.h"
#include "webhook.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define MAP_BUCKETS       65536
#define MAX_TRACKED       200000 /* suspects + open divergences held in memory */
#define WATCH_MAX         100000 /* keys waiting for their verification */
#define BATCH_MAX         512
#define CMDS_PER_KEY      3 /* PTTL, MEMORY USAGE, DUMP on each node */
#define REVERIFY_US       2000000u
#define SETTLE_MARGIN_US  2000000u
#define MAX_RESAMPLES     5
#define GIVE_UP_FACTOR    6 /* confirm-timeouts a suspect may wait for its replica */
#define JOBS_MAX          256
#define JOB_KEYS_MAX      1000
#define GUARD_SECONDS     60
#define GUARD_MIN_KEYS    200
#define REPAIR_RETRY_US   30000000u   /* a dry run is repeated after this long */
#define REPAIR_BACKOFF_US 1000000u    /* a failed repair is retried after 1, 2, 4 ... 30 s */
#define IDLE_CYCLE_US     1000000u    /* a sampler that found only the agent's keys rests */
#define SEEN_BYTES        (20u << 20) /* a check's memory for the keys it fetched */

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };
static const char *const job_state_names[] = {"queued", "running", "done"};

struct job_item {
    char *key;
    size_t len;
    int rep;             /* -1: every replica where it is open */
    const char *outcome; /* NULL while pending */
    const char *strategy;
    char error[160];
};

struct job {
    int64_t id;
    enum job_state state;
    enum repair_trigger trigger;
    int all_open;
    int rep; /* -1: all */
    struct job_item *items;
    int nitems, cap, ndone;
    uint64_t created_ms;
};

static const char *const state_names[] = {"suspect", "confirmed", "repairing", "resolved",
                                          "cleared"};
static const char *const mode_names[] = {"scan",  "replica-scan", "random",
                                         "watch", "recheck",      "request"};
enum mode { M_SCAN, M_REPLICA_SCAN, M_RANDOM, M_WATCH, M_RECHECK, M_REQUEST, M_COUNT };
static const char *const trigger_names[] = {"auto", "api", "cli"};

const char *detect_state_name(enum div_state s)
{
    return state_names[s];
}

/* ------------------------------------------------------------ state */

struct div {
    struct div *d_next;   /* hash chain */
    struct div *d_lnext;  /* suspects list or open list */
    struct div **d_lprev; /* for O(1) unlink */
    uint64_t d_hash;
    int d_rep;
    char *d_key;
    size_t d_keylen;
    enum div_state d_state;
    enum cmp_kind d_kind;
    int64_t d_id;
    uint64_t d_first_ms, d_confirmed_ms;
    uint64_t d_first_mono, d_deadline_mono, d_next_check_mono;
    uint64_t d_write_mono; /* watch: when the write was seen; 0 otherwise */
    int d_pexists;
    uint64_t d_pdigest, d_rdigest;
    long long d_pttl, d_rttl;
    int64_t d_pexp, d_rexp;    /* expiry at the first look (mono ms), -1 none */
    long long d_marker_offset; /* native: primary offset at the first look */
    uint64_t d_first_shown;    /* pubsub: heartbeat the cache showed then */
    uint64_t d_marker_seq;     /* pubsub, json format: heartbeat the cache must show */
    uint64_t d_marker;         /* pubsub, key format: marker the cache must show */
    long long d_primary_offset;
    enum mode d_found;
    long d_random_slot; /* random: the sample's slot in the ratio window, -1 */
    int d_resamples;
    /* repair */
    uint64_t d_repair_started_us; /* monotonic; while REPAIRING */
    uint64_t d_next_repair_mono;  /* auto-repair: not before */
    int d_repair_fails;           /* failed or skipped repairs in a row */
    int64_t d_job;                /* the job waiting for this repair, 0 none */
    int d_item;
    enum repair_trigger d_trigger;
    const char *d_strategy;
};

struct bucket { /* token bucket over every agent command on one node */
    struct rnode *b_node;
    int b_refs; /* engines sharing it (several dbs on one node) */
    double b_tokens;
    uint64_t b_last_us;
    unsigned long long b_last_cmds;
};

/*
 * Scan-ahead, in one-pass mode: a second connection to a scanned node on
 * which the next SCAN page is asked for as soon as the current one arrives,
 * so that the server produces it while the agent checks the current page
 * rather than after (a page of 1000 keys took about 0.8 ms of the page's
 * 6-7; a 200k-key check went from 1.35 to 1.19 s). When running, the budget
 * paces the scan and it would only cost a connection.
 */
struct ahead {
    struct rconn *a_conn;        /* NULL: SCAN on the node's own connection */
    unsigned long long a_cursor; /* the cursor of the SCAN in flight */
    int a_pending;
};

struct rstate {
    struct rconn *rs_conn;
    struct ahead rs_ahead;
    unsigned long long rs_cursor; /* replica-scan */
    int rs_cycle_done;
    uint64_t rs_cycle_start_us, rs_cycle_found, rs_idle_until;
    /* random-sample window (see random_result): per slot 0 none, 1 equal,
     * 2 divergent; outcomes in it, divergent ones; the next new slot */
    unsigned char *rs_win;
    long rs_win_n, rs_win_div, rs_win_pos;
    /* cached metric series */
    struct metric *rs_checked[M_COUNT];
    struct metric *rs_suspected;
    struct metric *rs_confirmed[CMP_KIND_COUNT];
    struct metric *rs_open[CMP_KIND_COUNT];
    long rs_open_n[CMP_KIND_COUNT];
};

struct wentry {
    char *key;
    size_t len;
    uint64_t seen_us;
};

struct detect {
    struct detect_opts d_o;
    const struct config *d_cfg;
    pthread_t d_thr, d_wthr;
    int d_wthr_started;
    volatile int d_stop;

    struct rconn *d_p; /* primary, engine thread */
    struct ahead d_pahead;
    /* one pass: fetch-ahead connections ([0] primary, [1..] replicas) and
     * the two batches (one filling or in flight, one in flight), see fetch_push */
    struct rconn *d_fetch[CMP_MAX_NODES];
    struct fslot *d_fslot;
    int d_fcur;
    struct rstate *d_rs;
    struct bucket **d_buckets; /* [0] primary, [1..] replicas; shared per node */
    int d_nb;
    int d_batch;

    /* divergences being tracked */
    struct div **d_map;
    /* which d_map buckets hold any: 8 KB that stay in cache, so the lookup
     * every compared key makes rarely touches the 512 KB of d_map */
    uint64_t d_occupied[MAP_BUCKETS / 64];
    size_t d_tracked;
    struct div *d_suspects, *d_open;
    uint64_t d_next_reverify;

    /* scan cycle */
    unsigned long long d_cursor;
    uint64_t d_cycle_start_us, d_cycle_keys;
    /* Keys (not the agent's, not excluded) the cycle's SCAN returned. A
     * cycle that found none (an empty database, or one holding only the
     * heartbeat and markers) is not followed by the next for IDLE_CYCLE_US,
     * nor a random sample that found none: otherwise they would loop on the
     * agent's own keys as fast as the budget lets them. */
    uint64_t d_cycle_found, d_scan_idle_until, d_random_idle_until;
    int d_cycle_due;  /* the next cycle starts once the rest is over */
    long d_random_no; /* the next random sample's number: its window slot */
    /* one pass: the keys fetched so far, whichever scan returned them */
    struct seen d_seen;
    struct scan_pg d_page; /* the SCAN page being checked, its buffer reused */

    /* watch queue (producer: watch thread) */
    pthread_mutex_t d_wmu;
    struct wentry *d_wq;
    size_t d_wq_head, d_wq_len;
    uint64_t d_wq_dropped;

    /* progress, under d_pmu */
    pthread_mutex_t d_pmu;
    struct detect_progress d_prog;
    int d_done;
    pthread_cond_t d_done_cv;

    /* repair jobs (any thread submits; the engine runs them) */
    pthread_mutex_t d_jmu;
    pthread_cond_t d_jcv;
    struct job *d_jobs[JOBS_MAX]; /* by id % JOBS_MAX */
    int64_t d_next_job;
    struct div *d_repairing; /* written, waiting for verification */
    double d_repair_tokens;
    uint64_t d_repair_last_us;
    /* the mass-repair guard */
    int d_paused;
    char d_paused_why[200];
    char d_run_id[48];
    uint64_t d_prev_dbsize;
    uint64_t d_win_checked[GUARD_SECONDS], d_win_confirmed[GUARD_SECONDS];
    uint64_t d_win_sec;
};

/* ------------------------------------------------------------ metrics */

static struct metric_family *m_checked, *m_suspected, *m_confirmed, *m_open, *m_ratio, *m_delay,
    *m_cycles, *m_progress, *m_cycle_dur, *m_skipped, *m_resolved, *m_cleared, *m_watch_on,
    *m_watch_gaps, *m_watch_q, *m_watch_drop;

static struct metric_family *m_repairs, *m_repair_dur, *m_repair_paused;

static void repair_metrics_init(void)
{
    static const char *const rso[] = {"replica", "strategy", "outcome"};
    static const double buckets[] = {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

    m_repairs = metrics_family("keydrift_repairs_total",
                               "Repairs by replica, strategy and outcome (repaired, failed, "
                               "skipped, dry-run).",
                               METRIC_COUNTER, 3, rso);
    m_repair_dur = metrics_histogram("keydrift_repair_duration_seconds",
                                     "Time from a repair's start to its verification.", 0, NULL,
                                     buckets, (int)(sizeof(buckets) / sizeof(buckets[0])));
    m_repair_paused = metrics_family("keydrift_repair_paused",
                                     "1 while auto-repair is paused by the mass-repair guard.",
                                     METRIC_GAUGE, 0, NULL);
}

void detect_metrics_init(void)
{
    static const char *const rm[] = {"replica", "mode"};
    static const char *const r1[] = {"replica"};
    static const char *const rk[] = {"replica", "kind"};
    static const char *const rb[] = {"replica", "bound"};
    static const char *const rr[] = {"replica", "resolution"};
    static const char *const why[] = {"reason"};
    static const double delay_buckets[] = {0.05, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30};

    if (m_checked)
        return;
    m_checked = metrics_family("keydrift_keys_checked_total",
                               "Keys compared between the primary and a replica, by how they "
                               "were sampled.",
                               METRIC_COUNTER, 2, rm);
    m_suspected = metrics_family("keydrift_divergences_suspected_total",
                                 "Mismatches seen once (suspects), before confirmation.",
                                 METRIC_COUNTER, 1, r1);
    m_confirmed = metrics_family("keydrift_divergences_confirmed_total",
                                 "Mismatches that persisted after the replica caught up with "
                                 "an unchanged primary.",
                                 METRIC_COUNTER, 2, rk);
    m_cleared = metrics_family("keydrift_divergences_cleared_total",
                               "Suspects that were not confirmed (in-flight writes).",
                               METRIC_COUNTER, 1, r1);
    m_resolved = metrics_family("keydrift_divergences_resolved_total",
                                "Confirmed divergences that went away, by resolution.",
                                METRIC_COUNTER, 2, rr);
    m_open = metrics_family("keydrift_divergent_keys",
                            "Confirmed divergences open now (not resolved).", METRIC_GAUGE, 2, rk);
    m_ratio = metrics_family("keydrift_divergence_ratio",
                             "Share of randomly sampled keys found divergent, with its 95% "
                             "Wilson interval (bound=estimate|lower|upper).",
                             METRIC_GAUGE, 2, rb);
    m_delay = metrics_histogram("keydrift_detection_delay_seconds",
                                "Watch mode: time from a key's write to its confirmed "
                                "divergence.",
                                0, NULL, delay_buckets,
                                (int)(sizeof(delay_buckets) / sizeof(delay_buckets[0])));
    m_cycles = metrics_family("keydrift_scan_cycles_total", "Completed SCAN walks of the primary.",
                              METRIC_COUNTER, 0, NULL);
    m_progress = metrics_family("keydrift_scan_progress_ratio",
                                "Share of the primary's keys checked in the current scan cycle.",
                                METRIC_GAUGE, 0, NULL);
    m_cycle_dur =
        metrics_family("keydrift_scan_cycle_duration_seconds",
                       "Duration of the last completed scan cycle.", METRIC_GAUGE, 0, NULL);
    m_skipped = metrics_family("keydrift_keys_skipped_total",
                               "Keys not compared, by reason (large, unsupported-type, ...).",
                               METRIC_COUNTER, 1, why);
    m_watch_on = metrics_family("keydrift_watch_enabled",
                                "1 when keyspace notifications from the primary are being "
                                "received (watch mode).",
                                METRIC_GAUGE, 0, NULL);
    m_watch_gaps = metrics_family("keydrift_watch_gaps_total",
                                  "Times the notification connection was lost (writes in the "
                                  "gap are left to the scan).",
                                  METRIC_COUNTER, 0, NULL);
    m_watch_q =
        metrics_family("keydrift_watch_queue_length",
                       "Written keys waiting for their verification.", METRIC_GAUGE, 0, NULL);
    repair_metrics_init();
    m_watch_drop = metrics_family("keydrift_watch_dropped_total",
                                  "Written keys not verified because the queue was full.",
                                  METRIC_COUNTER, 0, NULL);
}

void detect_metrics_reset(void)
{
    struct metric_family *per_replica[] = {m_checked,  m_suspected, m_confirmed, m_cleared,
                                           m_resolved, m_open,      m_ratio};
    for (size_t i = 0; i < sizeof(per_replica) / sizeof(per_replica[0]); i++)
        if (per_replica[i])
            metrics_family_reset(per_replica[i]);
}

/* ------------------------------------------------------------ glob */

int detect_glob_match(const char *pat, size_t plen, const char *s, size_t slen)
{
    while (plen) {
        switch (*pat) {
        case '*':
            while (plen > 1 && pat[1] == '*') {
                pat++;
                plen--;
            }
            if (plen == 1)
                return 1;
            for (size_t i = 0; i <= slen; i++)
                if (detect_glob_match(pat + 1, plen - 1, s + i, slen - i))
                    return 1;
            return 0;
        case '?':
            if (!slen)
                return 0;
            s++;
            slen--;
            break;
        case '[': {
            int neg, match = 0;
            pat++;
            plen--;
            neg = plen && *pat == '^';
            if (neg) {
                pat++;
                plen--;
            }
            while (plen && *pat != ']') {
                if (*pat == '\\' && plen >= 2) {
                    pat++;
                    plen--;
                    if (slen && *pat == *s)
                        match = 1;
                } else if (plen >= 3 && pat[1] == '-') {
                    unsigned char lo = (unsigned char)pat[0], hi = (unsigned char)pat[2];
                    if (lo > hi) {
                        unsigned char t = lo;
                        lo = hi;
                        hi = t;
                    }
                    if (slen && (unsigned char)*s >= lo && (unsigned char)*s <= hi)
                        match = 1;
                    pat += 2;
                    plen -= 2;
                } else if (slen && *pat == *s) {
                    match = 1;
                }
                pat++;
                plen--;
            }
            if (!slen || match == neg)
                return 0;
            s++;
            slen--;
            if (!plen)
                return 0; /* unterminated class */
            break;
        }
        case '\\':
            if (plen >= 2) {
                pat++;
                plen--;
            }
            /* fall through */
        default:
            if (!slen || *pat != *s)
                return 0;
            s++;
            slen--;
            break;
        }
        pat++;
        plen--;
    }
    return slen == 0;
}

/* ------------------------------------------------------------ the map */

static uint64_t key_hash(int rep, const char *k, size_t len)
{
    return XXH3_64bits_withSeed(k, len, (uint64_t)rep * 0x9e3779b97f4a7c15ULL + 1);
}

static struct div *map_get(struct detect *d, int rep, const char *k, size_t len, uint64_t h)
{
    size_t b = h & (MAP_BUCKETS - 1);
    if (!(d->d_occupied[b / 64] & (1ull << (b % 64))))
        return NULL;
    for (struct div *v = d->d_map[b]; v; v = v->d_next)
        if (v->d_hash == h && v->d_rep == rep && v->d_keylen == len &&
            memcmp(v->d_key, k, len) == 0)
            return v;
    return NULL;
}

static void list_push(struct div **head, struct div *v)
{
    v->d_lnext = *head;
    v->d_lprev = head;
    if (*head)
        (*head)->d_lprev = &v->d_lnext;
    *head = v;
}

static void list_unlink(struct div *v)
{
    if (!v->d_lprev)
        return;
    *v->d_lprev = v->d_lnext;
    if (v->d_lnext)
        v->d_lnext->d_lprev = v->d_lprev;
    v->d_lnext = NULL;
    v->d_lprev = NULL;
}

static struct div *map_add(struct detect *d, int rep, const char *k, size_t len, uint64_t h)
{
    struct div *v;

    if (d->d_tracked >= MAX_TRACKED)
        return NULL;
    v = calloc(1, sizeof(*v));
    if (!v)
        return NULL;
    v->d_key = malloc(len ? len : 1);
    if (!v->d_key) {
        free(v);
        return NULL;
    }
    memcpy(v->d_key, k, len);
    v->d_keylen = len;
    v->d_rep = rep;
    v->d_hash = h;
    v->d_random_slot = -1;
    size_t b = h & (MAP_BUCKETS - 1);
    v->d_next = d->d_map[b];
    d->d_map[b] = v;
    d->d_occupied[b / 64] |= 1ull << (b % 64);
    d->d_tracked++;
    return v;
}

static void map_del(struct detect *d, struct div *v)
{
    size_t b = v->d_hash & (MAP_BUCKETS - 1);
    struct div **pp = &d->d_map[b];
    while (*pp && *pp != v)
        pp = &(*pp)->d_next;
    if (*pp)
        *pp = v->d_next;
    if (!d->d_map[b])
        d->d_occupied[b / 64] &= ~(1ull << (b % 64));
    list_unlink(v);
    d->d_tracked--;
    free(v->d_key);
    free(v);
}

/* ------------------------------------------------------------ budget */

/*
 * Refills each node's bucket and returns how long to wait (µs) before
 * `need` more commands may go to every node. Every command the agent sends
 * to a node (lag polling included) is counted, through the node's counter.
 */
/*
 * The buckets, one per node for the whole process: engines of several
 * databases (or shards sharing a node) draw on the same budget, so none can
 * starve another by spending what the other's bucket counts against it.
 */
#define BUCKETS_MAX 256
static struct bucket buckets[BUCKETS_MAX];
static pthread_mutex_t buckets_mu = PTHREAD_MUTEX_INITIALIZER;

static struct bucket *bucket_get(struct rnode *n, double initial)
{
    struct bucket *free_slot = NULL;

    pthread_mutex_lock(&buckets_mu);
    for (int i = 0; i < BUCKETS_MAX; i++) {
        if (buckets[i].b_refs && buckets[i].b_node == n) {
            buckets[i].b_refs++;
            pthread_mutex_unlock(&buckets_mu);
            return &buckets[i];
        }
        if (!buckets[i].b_refs && !free_slot)
            free_slot = &buckets[i];
    }
    if (free_slot) {
        free_slot->b_node = n;
        free_slot->b_refs = 1;
        free_slot->b_tokens = initial;
        free_slot->b_last_us = clock_mono_us();
        free_slot->b_last_cmds = atomic_load(&n->rn_commands);
    }
    pthread_mutex_unlock(&buckets_mu);
    return free_slot;
}

static void bucket_put(struct bucket *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&buckets_mu);
    b->b_refs--;
    pthread_mutex_unlock(&buckets_mu);
}

static uint64_t budget_wait(struct detect *d, double need)
{
    double rate = (double)d->d_cfg->max_commands_per_sec;
    double burst = rate * 0.2 > need ? rate * 0.2 : need;
    uint64_t now = clock_mono_us(), wait = 0;

    pthread_mutex_lock(&buckets_mu);
    for (int i = 0; i < d->d_nb; i++) {
        struct bucket *b = d->d_buckets[i];
        unsigned long long cmds = atomic_load(&b->b_node->rn_commands);
        b->b_tokens += rate * (double)(now - b->b_last_us) / 1e6;
        b->b_tokens -= (double)(cmds - b->b_last_cmds);
        if (b->b_tokens > burst)
            b->b_tokens = burst;
        b->b_last_us = now;
        b->b_last_cmds = cmds;
        /* Go as soon as the bucket is not in debt, and let the commands
         * sent run it into debt: waiting for `need` tokens instead let an
         * engine asking little at a time (a small db) keep the bucket below
         * what an engine asking a full batch needs, for ever. The rate holds
         * on average; a burst is at most one batch over it. */
        if (b->b_tokens < 0) {
            uint64_t w = (uint64_t)(-b->b_tokens / rate * 1e6) + 1;
            if (w > wait)
                wait = w;
        }
    }
    pthread_mutex_unlock(&buckets_mu);
    return wait;
}

static void budget_take(struct detect *d, double need)
{
    for (;;) {
        uint64_t w = budget_wait(d, need);
        if (!w || d->d_stop)
            return;
        usleep((useconds_t)(w < 100000 ? w : 100000));
    }
}

/* Adapts the batch size to the time slice: grow when fast, shrink when slow. */
static void adapt_batch(struct detect *d, uint64_t took_us)
{
    uint64_t slice = (uint64_t)d->d_cfg->batch_time_slice * 1000u;
    int b = d->d_batch;
    if (took_us < slice / 2)
        b = b + b / 4 + 1;
    else if (took_us > slice)
        b = b * 3 / 4;
    if (b < 1)
        b = 1;
    int cap = (int)(d->d_cfg->max_commands_per_sec / 5 / CMDS_PER_KEY);
    if (cap < 1)
        cap = 1;
    if (b > cap)
        b = cap;
    if (b > BATCH_MAX)
        b = BATCH_MAX;
    d->d_batch = b;
}

/* ------------------------------------------------------------ records */

static const char *resolution_for(enum cmp_kind k, const struct div *v)
{
    if (k == CMP_GONE)
        return v->d_pttl >= 0 ? "expired" : "deleted";
    return "self-healed";
}

static void put_record(struct detect *d, const struct div *v, const char *resolution,
                       uint64_t resolved_ms)
{
    const struct config *cfg = d->d_cfg;
    struct store_divergence sd = {
        .id = v->d_id,
        .replica = cfg->replicas[v->d_rep].name,
        .key = v->d_key,
        .keylen = v->d_keylen,
        .db = d->d_o.db,
        .kind = cmp_kind_name(v->d_kind),
        .state = state_names[v->d_state],
        .first_seen = (int64_t)v->d_first_ms,
        .confirmed_at = (int64_t)v->d_confirmed_ms,
        .resolved_at = (int64_t)resolved_ms,
        .resolution = resolution,
        .primary_digest = v->d_pdigest,
        .replica_digest = v->d_rdigest,
        .primary_ttl_ms = v->d_pttl,
        .replica_ttl_ms = v->d_rttl,
        .primary_offset = v->d_primary_offset,
        .found_by = mode_names[v->d_found],
        .note = NULL,
    };
    if (d->d_o.store)
        store_put_divergence(d->d_o.store, &sd);
}

static void report(struct detect *d, const struct div *v, const char *resolution)
{
    struct detect_finding f = {
        .id = v->d_id,
        .replica = d->d_cfg->replicas[v->d_rep].name,
        .key = v->d_key,
        .keylen = v->d_keylen,
        .db = d->d_o.db,
        .kind = v->d_kind,
        .state = v->d_state,
        .resolution = resolution,
        .primary_digest = v->d_pdigest,
        .replica_digest = v->d_rdigest,
        .primary_ttl_ms = v->d_pttl,
        .replica_ttl_ms = v->d_rttl,
        .found_by = mode_names[v->d_found],
        .first_seen_ms = v->d_first_ms,
        .confirmed_ms = v->d_confirmed_ms,
    };
    if (d->d_o.on_confirmed)
        d->d_o.on_confirmed(&f, d->d_o.arg);
}

/*
 * Counts an open divergence in or out. The gauge is added to, not set: the
 * engines of several dbs (or shards) can share a replica's series.
 */
static void open_count(struct detect *d, int rep, enum cmp_kind k, int delta)
{
    struct rstate *rs = &d->d_rs[rep];
    rs->rs_open_n[k] += delta;
    if (!rs->rs_open[k])
        rs->rs_open[k] = metrics_series2(m_open, d->d_cfg->replicas[rep].name, cmp_kind_name(k));
    metric_add(rs->rs_open[k], delta);
}

static void random_result(struct detect *d, int rep, long slot, int divergent);
static void finish_repair(struct detect *d, struct div *v, const char *outcome, const char *error);
static void guard_count(struct detect *d, uint64_t checked, uint64_t confirmed);
static void guard_pause(struct detect *d, const char *why);

static void confirm(struct detect *d, struct div *v)
{
    struct rstate *rs = &d->d_rs[v->d_rep];
    char kesc[128];

    list_unlink(v);
    v->d_state = DIV_CONFIRMED;
    v->d_confirmed_ms = clock_wall_ms();
    v->d_next_check_mono = clock_mono_us() + REVERIFY_US;
    if (d->d_o.store)
        v->d_id = store_next_id(d->d_o.store);
    else
        v->d_id = (int64_t)d->d_prog.keys_checked + 1;
    list_push(&d->d_open, v);
    if (!rs->rs_confirmed[v->d_kind])
        rs->rs_confirmed[v->d_kind] = metrics_series2(
            m_confirmed, d->d_cfg->replicas[v->d_rep].name, cmp_kind_name(v->d_kind));
    metric_inc(rs->rs_confirmed[v->d_kind]);
    open_count(d, v->d_rep, v->d_kind, +1);
    pthread_mutex_lock(&d->d_jmu);
    guard_count(d, 0, 1);
    pthread_mutex_unlock(&d->d_jmu);
    if (v->d_write_mono)
        metric_observe(metrics_series0(m_delay), (double)(clock_mono_us() - v->d_write_mono) / 1e6);
    if (v->d_random_slot >= 0)
        random_result(d, v->d_rep, v->d_random_slot, 1);
    log_notice("divergence confirmed: replica %s key \"%s\" %s (found by %s)",
               d->d_cfg->replicas[v->d_rep].name,
               log_escape(kesc, sizeof(kesc), v->d_key, v->d_keylen), cmp_kind_name(v->d_kind),
               mode_names[v->d_found]);
    put_record(d, v, NULL, 0);
    report(d, v, NULL);
    char *kt = text_escape(v->d_key, v->d_keylen);
    webhook_event("divergence_confirmed",
                  json_pack("{s:I,s:s,s:s,s:s,s:s}", "id", (json_int_t)v->d_id, "replica",
                            d->d_cfg->replicas[v->d_rep].name, "key", kt ? kt : "", "kind",
                            cmp_kind_name(v->d_kind), "found_by", mode_names[v->d_found]));
    free(kt);
}

static void clear_suspect(struct detect *d, struct div *v)
{
    metric_inc(metrics_series1(m_cleared, d->d_cfg->replicas[v->d_rep].name));
    map_del(d, v);
}

static void resolve(struct detect *d, struct div *v, const char *resolution)
{
    char kesc[128];

    if (v->d_state == DIV_REPAIRING) { /* equal again after our write */
        resolution = "repaired";
        finish_repair(d, v, "repaired", NULL);
    }

    open_count(d, v->d_rep, v->d_kind, -1);
    v->d_state = DIV_RESOLVED;
    metric_inc(metrics_series2(m_resolved, d->d_cfg->replicas[v->d_rep].name, resolution));
    log_notice("divergence resolved (%s): replica %s key \"%s\"", resolution,
               d->d_cfg->replicas[v->d_rep].name,
               log_escape(kesc, sizeof(kesc), v->d_key, v->d_keylen));
    put_record(d, v, resolution, clock_wall_ms());
    report(d, v, resolution);
    map_del(d, v);
}

/* ------------------------------------------------------------ checking */

struct batch {
    const char *keys[BATCH_MAX];
    size_t lens[BATCH_MAX];
    uint64_t seen[BATCH_MAX];       /* watch: write time (mono µs), else 0 */
    long slots[BATCH_MAX];          /* random: the sample's window slot, else -1 */
    unsigned char rscan[BATCH_MAX]; /* one pass: first returned by a replica's scan */
    int n;
};

static long long replica_lag_ms(struct detect *d, int rep)
{
    struct lag_view v;
    lag_get(d->d_o.lag, rep, &v);
    return v.lag_seconds > 0 ? (long long)(v.lag_seconds * 1000) : 0;
}

/* The primary's replication offset now (after our reads), for native markers. */
static long long fresh_primary_offset(struct detect *d)
{
    redisReply *r = rconn_command(d->d_p, "INFO replication");
    long long off = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        struct info_repl ir;
        info_repl_init(&ir);
        info_parse(r->str, r->len, &ir);
        off = ir.master_repl_offset;
    }
    if (r)
        freeReplyObject(r);
    return off;
}

static uint64_t fingerprint(const struct cmp_side *s, uint64_t deep)
{
    if (s->exists != 1)
        return 0;
    return s->digest ? s->digest : deep;
}

/*
 * Outcome of one key on one replica, first look or re-check. Returns the
 * kind (a divergence kind, CMP_EQUAL, CMP_GONE, CMP_SKIPPED or CMP_ERROR),
 * with the digests and TTLs in *pd..*rt. lag_ms is the replica's lag, which
 * the TTL rule allows for.
 */
static enum cmp_kind judge_lagged(struct detect *d, int rep, long long lag_ms, const char *key,
                                  size_t len, const struct cmp_side *ps, const struct cmp_side *rsd,
                                  uint64_t *pd, uint64_t *rd)
{
    const struct cfg_replica *rc = &d->d_cfg->replicas[rep];
    struct cmp_opts o = {.ttl_tolerance_ms = d->d_cfg->ttl_tolerance,
                         .lag_ms = lag_ms,
                         .missing_is_divergence = rc->missing_is_divergence};
    int deep = 0;
    enum cmp_kind k = cmp_judge(ps, rsd, &o, &deep);
    uint64_t dp = 0, dr = 0;

    if (deep) {
        const char *why = NULL;
        k = cmp_deep(d->d_p, d->d_rs[rep].rs_conn, key, len, ps, rsd, d->d_cfg->max_value_bytes,
                     &dp, &dr, &why);
        if (k == CMP_SKIPPED)
            metric_inc(metrics_series1(m_skipped, why && strstr(why, "type") ? "unsupported-type"
                                                                             : "uncomparable"));
        else if (k == CMP_EQUAL) /* the values are equal; the TTLs may still differ */
            k = cmp_judge_ttl(ps, rsd, &o);
    }
    *pd = fingerprint(ps, dp);
    *rd = rsd->exists == 1 ? (rsd->digest ? rsd->digest : dr) : 0;
    return k;
}

/* judge_lagged with the replica's lag now. */
static enum cmp_kind judge_one(struct detect *d, int rep, const char *key, size_t len,
                               const struct cmp_side *ps, const struct cmp_side *rsd, uint64_t *pd,
                               uint64_t *rd)
{
    return judge_lagged(d, rep, replica_lag_ms(d, rep), key, len, ps, rsd, pd, rd);
}

/*
 * What the replica must show before the suspect is re-checked: native, the
 * primary's offset after our read; a json-format cache, a heartbeat written
 * after it (two ahead, so an update published just after our look has passed
 * too); a key-format cache, a marker written after it (see lag.h: there a
 * heartbeat shown proves nothing about the updates queued before it).
 */
static void set_marker(struct detect *d, struct div *v, long long *poff)
{
    if (d->d_cfg->replicas[v->d_rep].kind == REPLICA_NATIVE) {
        if (*poff < 0)
            *poff = fresh_primary_offset(d);
        v->d_marker_offset = *poff;
        v->d_primary_offset = *poff;
    } else {
        struct lag_view lv;
        lag_get(d->d_o.lag, v->d_rep, &lv);
        v->d_first_shown = lv.shown_seq;
        v->d_marker_seq = lag_written_seq(d->d_o.lag) + 2;
        v->d_marker = lag_marker_ask(d->d_o.lag);
        v->d_primary_offset = lag_primary_offset(d->d_o.lag);
    }
}

/* A key's expiry as mono ms, from a PTTL read at now (µs); -1 for none. */
static int64_t expiry_at(uint64_t now, long long pttl)
{
    return pttl >= 0 ? (int64_t)(now / 1000) + pttl : -1;
}

/*
 * Did an expiry move between two looks? By more than the time between a
 * read and its timestamp explains: half the TTL tolerance, 10 to 50 ms.
 */
static int expiry_moved(const struct detect *d, int64_t a, int64_t b)
{
    long long slack = d->d_cfg->ttl_tolerance / 2;

    slack = slack < 10 ? 10 : slack > 50 ? 50 : slack;
    if ((a < 0) != (b < 0))
        return 1;
    return a >= 0 && (a > b ? a - b : b - a) > slack;
}

/* Starts tracking a first-look mismatch as a suspect. */
static void new_suspect(struct detect *d, int rep, const char *key, size_t len, uint64_t h,
                        enum cmp_kind k, const struct cmp_side *ps, const struct cmp_side *rsd,
                        uint64_t pd, uint64_t rd, enum mode m, uint64_t seen, long slot,
                        long long *poff)
{
    struct div *v = map_add(d, rep, key, len, h);
    struct rstate *rs = &d->d_rs[rep];
    uint64_t now = clock_mono_us();

    if (!v)
        return;
    v->d_state = DIV_SUSPECT;
    v->d_kind = k;
    v->d_first_ms = clock_wall_ms();
    v->d_first_mono = now;
    v->d_deadline_mono = now + (uint64_t)d->d_cfg->confirm_timeout * 1000u;
    v->d_write_mono = seen;
    v->d_pexists = ps->exists;
    v->d_pdigest = pd;
    v->d_rdigest = rd;
    v->d_pttl = ps->pttl;
    v->d_rttl = rsd->pttl;
    v->d_pexp = expiry_at(now, ps->pttl);
    v->d_rexp = expiry_at(now, rsd->pttl);
    v->d_found = m;
    v->d_random_slot = slot;
    set_marker(d, v, poff);
    list_push(&d->d_suspects, v);
    if (!rs->rs_suspected)
        rs->rs_suspected = metrics_series1(m_suspected, d->d_cfg->replicas[rep].name);
    metric_inc(rs->rs_suspected);
}

static void count_checked(struct detect *d, int rep, enum mode m)
{
    struct rstate *rs = &d->d_rs[rep];
    if (!rs->rs_checked[m])
        rs->rs_checked[m] = metrics_series2(m_checked, d->d_cfg->replicas[rep].name, mode_names[m]);
    metric_inc(rs->rs_checked[m]);
}

/*
 * Judges a fetched batch: sides[j] holds node j's state of b's keys (node 0
 * the primary, node j >= 1 replica reps[j]), frc[j] whether it was read.
 * Returns -1 when the primary could not be read. Frees the DUMP payloads.
 */
static int judge_batch(struct detect *d, const struct batch *b, enum mode m, size_t nc,
                       const int *reps, struct cmp_side *const *sides, const int *frc)
{
    struct cmp_side *ps = sides[0];
    long long poff = -1;
    int rc = 0;

    if (frc[0] < 0) {
        rc = -1;
        pthread_mutex_lock(&d->d_pmu);
        d->d_prog.errors++;
        snprintf(d->d_prog.error, sizeof(d->d_prog.error), "%s", rconn_errstr(d->d_p));
        pthread_mutex_unlock(&d->d_pmu);
        goto out;
    }
    for (size_t j = 1; j < nc; j++) {
        int rep = reps[j];
        struct cmp_side *rsd = sides[j];
        long long lag_ms;
        if (frc[j] < 0)
            continue;
        lag_ms = replica_lag_ms(d, rep); /* read once: it takes the lag thread's lock */
        for (int i = 0; i < b->n; i++) {
            uint64_t h = key_hash(rep, b->keys[i], b->lens[i]);
            struct div *v = map_get(d, rep, b->keys[i], b->lens[i], h);
            uint64_t pd, rd;
            enum cmp_kind k;
            enum mode km = b->rscan[i] ? M_REPLICA_SCAN : m;

            if (ps[i].large || rsd[i].large)
                metric_inc(metrics_series1(m_skipped, "large-sampled"));
            k = judge_lagged(d, rep, lag_ms, b->keys[i], b->lens[i], &ps[i], &rsd[i], &pd, &rd);
            if (k == CMP_ERROR || k == CMP_SKIPPED)
                continue;
            count_checked(d, rep, km);
            if (cmp_is_divergence(k)) {
                if (!v) {
                    new_suspect(d, rep, b->keys[i], b->lens[i], h, k, &ps[i], &rsd[i], pd, rd, km,
                                b->seen[i], b->slots[i], &poff);
                } else if (v->d_state != DIV_SUSPECT) {
                    v->d_rdigest = rd; /* still open; keep what it is now */
                    v->d_rttl = rsd[i].pttl;
                    if (b->slots[i] >= 0) /* a sample of a known divergence is one */
                        random_result(d, rep, b->slots[i], 1);
                }
            } else {
                if (b->slots[i] >= 0)
                    random_result(d, rep, b->slots[i], 0);
                if (v && v->d_state == DIV_SUSPECT)
                    clear_suspect(d, v);
                else if (v && (v->d_state == DIV_CONFIRMED || v->d_state == DIV_REPAIRING))
                    resolve(d, v, resolution_for(k, v));
            }
            cmp_side_clear(&rsd[i]);
        }
    }
out:
    for (size_t j = 0; j < nc; j++)
        for (int i = 0; i < b->n; i++)
            cmp_side_clear(&sides[j][i]);
    pthread_mutex_lock(&d->d_pmu);
    d->d_prog.keys_checked += (uint64_t)b->n;
    pthread_mutex_unlock(&d->d_pmu);
    if (m != M_RECHECK) {
        pthread_mutex_lock(&d->d_jmu);
        guard_count(d, (uint64_t)b->n, 0);
        pthread_mutex_unlock(&d->d_jmu);
    }
    return rc;
}

/*
 * Checks a batch of keys against every replica (or only `only_rep` when >= 0):
 * one fetch from the primary and those replicas together, then a judgement
 * per key and replica. Returns -1 when the primary could not be read.
 */
static int check_batch(struct detect *d, const struct batch *b, enum mode m, int only_rep)
{
    struct rconn *conns[CMP_MAX_NODES];
    struct cmp_side *sides[CMP_MAX_NODES];
    int reps[CMP_MAX_NODES], frc[CMP_MAX_NODES];
    size_t nc = 1;
    int rc;

    /* The primary and the replicas are read together (cmp_fetch_many): the
     * servers work in parallel while the agent waits once. */
    conns[0] = d->d_p;
    reps[0] = -1;
    for (int rep = 0; rep < d->d_cfg->nreplicas; rep++) {
        if (only_rep >= 0 && rep != only_rep)
            continue;
        conns[nc] = d->d_rs[rep].rs_conn;
        reps[nc++] = rep;
    }
    struct cmp_side *all = calloc(nc * (size_t)b->n, sizeof(*all));
    if (!all)
        return -1;
    for (size_t j = 0; j < nc; j++)
        sides[j] = all + j * (size_t)b->n;
    budget_take(d, (double)b->n * CMDS_PER_KEY);
    cmp_fetch_many(conns, nc, b->keys, b->lens, (size_t)b->n, d->d_cfg->max_value_bytes, sides,
                   frc);
    rc = judge_batch(d, b, m, nc, reps, sides, frc);
    free(all);
    return rc;
}

/*
 * Fetch-ahead, in one-pass mode, for the keys every scan returns first: they
 * go into full batches (across SCAN pages: they are copied), and each batch's
 * fetch is sent on connections of its own (d_fetch: primary, then every
 * replica) before the previous batch is read and judged, so that the servers
 * work on batch N+1 while the agent parses and judges batch N and reads the
 * next SCAN pages. The deep comparisons, the fallbacks of the fetch
 * (cmp_fetch_recv) and the replica scans' EXISTS use the nodes' usual
 * connections, which carry nothing in flight. Running, the budget paces the
 * agent and this would only cost connections.
 */
_Static_assert(BATCH_MAX <= CMP_SEND_MAX, "a batch is sent ahead whole");

struct fslot {
    struct batch f_b;
    size_t f_off[BATCH_MAX]; /* key offsets in f_buf while filling */
    char *f_buf;
    size_t f_used, f_cap;
    struct cmp_sent f_sent;
    int f_inflight;
};

static int fetch_nodes(struct detect *d, struct rconn **conns, struct rconn **fb, int *reps)
{
    int nc = 0;
    conns[nc] = d->d_fetch[0];
    fb[nc] = d->d_p;
    reps[nc++] = -1;
    for (int rep = 0; rep < d->d_cfg->nreplicas; rep++) {
        conns[nc] = d->d_fetch[1 + rep];
        fb[nc] = d->d_rs[rep].rs_conn;
        reps[nc++] = rep;
    }
    return nc;
}

/* Reads and judges slot s's batch, if one is in flight. */
static void fetch_finish(struct detect *d, struct fslot *s)
{
    struct rconn *conns[CMP_MAX_NODES], *fb[CMP_MAX_NODES];
    struct cmp_side *sides[CMP_MAX_NODES];
    int reps[CMP_MAX_NODES], frc[CMP_MAX_NODES];

    if (!s->f_inflight)
        return;
    s->f_inflight = 0;
    size_t nc = (size_t)fetch_nodes(d, conns, fb, reps);
    struct cmp_side *all = calloc(nc * (size_t)s->f_b.n, sizeof(*all));
    if (all) {
        for (size_t j = 0; j < nc; j++)
            sides[j] = all + j * (size_t)s->f_b.n;
        cmp_fetch_recv(conns, fb, s->f_b.keys, s->f_b.lens, d->d_cfg->max_value_bytes, &s->f_sent,
                       sides, frc);
        judge_batch(d, &s->f_b, M_SCAN, nc, reps, sides, frc);
        free(all);
    } else {
        /* No memory to read it into: drop the connections' replies. */
        for (size_t j = 0; j < nc; j++)
            rconn_close(conns[j]);
    }
    d->d_cycle_keys += (uint64_t)s->f_b.n;
    s->f_b.n = 0;
    s->f_used = 0;
}

/* Sends the filling slot's batch, then judges the one in flight before it. */
static void fetch_push(struct detect *d)
{
    struct rconn *conns[CMP_MAX_NODES], *fb[CMP_MAX_NODES];
    int reps[CMP_MAX_NODES];
    struct fslot *s = &d->d_fslot[d->d_fcur], *prev = &d->d_fslot[!d->d_fcur];
    int nc = fetch_nodes(d, conns, fb, reps);

    if (!s->f_b.n)
        return;
    for (int i = 0; i < s->f_b.n; i++)
        s->f_b.keys[i] = s->f_buf + s->f_off[i];
    budget_take(d, (double)s->f_b.n * CMDS_PER_KEY);
    cmp_fetch_send(conns, (size_t)nc, s->f_b.keys, s->f_b.lens, (size_t)s->f_b.n,
                   d->d_cfg->max_value_bytes, &s->f_sent);
    s->f_inflight = 1;
    fetch_finish(d, prev);
    /* A connection that failed while prev was read lost s's calls too. */
    for (int j = 0; j < nc; j++)
        if (!rconn_connected(conns[j]))
            s->f_sent.nchunks[j] = 0;
    d->d_fcur = !d->d_fcur;
}

/* Judges every batch still in flight or filling (end of the cycle, errors). */
static void fetch_drain(struct detect *d)
{
    if (!d->d_fetch[0])
        return;
    fetch_push(d);
    fetch_finish(d, &d->d_fslot[!d->d_fcur]);
    fetch_finish(d, &d->d_fslot[d->d_fcur]);
}

static void fetch_free(struct detect *d)
{
    for (size_t j = 0; j < CMP_MAX_NODES; j++)
        rconn_free(d->d_fetch[j]);
    if (d->d_fslot)
        for (int i = 0; i < 2; i++)
            free(d->d_fslot[i].f_buf);
    free(d->d_fslot);
}

/*
 * Adds a key to the filling batch (rscan: a replica's scan returned it
 * first); sends the batch when full. -1 out of memory.
 */
static int fetch_add(struct detect *d, const char *k, size_t len, int rscan)
{
    struct fslot *s = &d->d_fslot[d->d_fcur];

    if (s->f_used + len > s->f_cap) {
        size_t cap = s->f_cap ? s->f_cap : 16384;
        while (cap < s->f_used + len)
            cap *= 2;
        char *nb = realloc(s->f_buf, cap);
        if (!nb)
            return -1;
        s->f_buf = nb;
        s->f_cap = cap;
    }
    memcpy(s->f_buf + s->f_used, k, len);
    s->f_off[s->f_b.n] = s->f_used;
    s->f_used += len;
    s->f_b.lens[s->f_b.n] = len;
    s->f_b.seen[s->f_b.n] = 0;
    s->f_b.slots[s->f_b.n] = -1;
    s->f_b.rscan[s->f_b.n] = (unsigned char)rscan;
    s->f_b.n++;
    if (s->f_b.n == BATCH_MAX)
        fetch_push(d);
    return 0;
}

/* Has replica rep caught up with the primary as of the suspect's first look? */
static int caught_up(struct detect *d, const struct div *v)
{
    struct lag_view lv;
    lag_get(d->d_o.lag, v->d_rep, &lv);
    if (d->d_cfg->replicas[v->d_rep].kind == REPLICA_NATIVE)
        return v->d_marker_offset >= 0 && lv.offset >= v->d_marker_offset;
    if (v->d_marker)
        return lv.shown_marker >= v->d_marker;
    return lv.shown_seq >= v->d_marker_seq;
}

/*
 * Re-checks one suspect. Confirmed only if it still differs and both copies
 * still hold what they held at the first look (value digests, and for a TTL
 * verdict both expiries): a copy that changed in between was in flight, and
 * the suspect is re-sampled instead, this look becoming the new first look.
 * A key that changes at every look is given up after a few tries (the next
 * cycle sees it again).
 */
static void recheck(struct detect *d, struct div *v)
{
    struct cmp_side ps, rsd;
    const char *key = v->d_key;
    uint64_t pd, rd, now;
    enum cmp_kind k;

    memset(&ps, 0, sizeof(ps));
    memset(&rsd, 0, sizeof(rsd));
    budget_take(d, 2 * CMDS_PER_KEY);
    if (cmp_fetch(d->d_p, &key, &v->d_keylen, 1, d->d_cfg->max_value_bytes, &ps) < 0 ||
        cmp_fetch(d->d_rs[v->d_rep].rs_conn, &key, &v->d_keylen, 1, d->d_cfg->max_value_bytes,
                  &rsd) < 0) {
        /* A node did not answer: try again a little later, up to the deadline. */
        v->d_next_check_mono = clock_mono_us() + 200000;
        if (clock_mono_us() > v->d_deadline_mono + SETTLE_MARGIN_US)
            clear_suspect(d, v);
        cmp_side_clear(&ps);
        cmp_side_clear(&rsd);
        return;
    }
    now = clock_mono_us();
    k = judge_one(d, v->d_rep, v->d_key, v->d_keylen, &ps, &rsd, &pd, &rd);
    int pexists = ps.exists;
    long long pttl = ps.pttl, rttl = rsd.pttl;
    cmp_side_clear(&ps);
    cmp_side_clear(&rsd);
    if (k == CMP_ERROR) {
        v->d_next_check_mono = now + 200000;
        return;
    }
    count_checked(d, v->d_rep, M_RECHECK);
    if (!cmp_is_divergence(k)) {
        if (v->d_random_slot >= 0)
            random_result(d, v->d_rep, v->d_random_slot, 0);
        clear_suspect(d, v);
        return;
    }
    int64_t pexp = expiry_at(now, pttl), rexp = expiry_at(now, rttl);
    int changed =
        pexists != v->d_pexists || pd != v->d_pdigest || rd != v->d_rdigest || k != v->d_kind;
    if (!changed && k == CMP_TTL)
        changed = expiry_moved(d, v->d_pexp, pexp) || expiry_moved(d, v->d_rexp, rexp);
    v->d_kind = k;
    v->d_rdigest = rd;
    v->d_pttl = pttl;
    v->d_rttl = rttl;
    if (changed) {
        long long poff = -1;
        if (++v->d_resamples > MAX_RESAMPLES) {
            clear_suspect(d, v);
            return;
        }
        v->d_pexists = pexists;
        v->d_pdigest = pd;
        v->d_pexp = pexp;
        v->d_rexp = rexp;
        v->d_first_mono = now;
        v->d_deadline_mono = now + (uint64_t)d->d_cfg->confirm_timeout * 1000u;
        set_marker(d, v, &poff);
        return;
    }
    confirm(d, v);
}

/* ------------------------------------------------------------ random */

/* Sets one window entry: 0 no sample, 1 equal, 2 divergent. */
static void win_set(struct rstate *rs, long i, unsigned char v)
{
    unsigned char old = rs->rs_win[i];
    rs->rs_win_n += (v != 0) - (old != 0);
    rs->rs_win_div += (v == 2) - (old == 2);
    rs->rs_win[i] = v;
}

/*
 * Records a random sample's outcome in the replica's window: the last
 * random-sample-window sample numbers (slots). A sample's outcome may come
 * late (a suspect, once confirmed or cleared) or never (a key that errs, or
 * whose suspect is given up): a slot without one is not counted. The share
 * is published at scrape time, over every engine's window
 * (detect_ratio_publish).
 */
static void random_result(struct detect *d, int rep, long slot, int divergent)
{
    struct rstate *rs = &d->d_rs[rep];
    long n = (long)d->d_cfg->random_sample_window;

    if (!rs->rs_win || slot + n <= rs->rs_win_pos) /* none, or gone out of the window */
        return;
    pthread_mutex_lock(&d->d_pmu);
    if (slot >= rs->rs_win_pos) {
        /* The slots up to this one take the places of the oldest. */
        long from = slot - n + 1 > rs->rs_win_pos ? slot - n + 1 : rs->rs_win_pos;
        for (long t = from; t <= slot; t++)
            win_set(rs, t % n, 0);
        rs->rs_win_pos = slot + 1;
    }
    win_set(rs, slot % n, divergent ? 2 : 1);
    pthread_mutex_unlock(&d->d_pmu);
}

void detect_random_window(struct detect *d, int rep, long *n, long *divergent)
{
    pthread_mutex_lock(&d->d_pmu);
    *n = d->d_rs[rep].rs_win_n;
    *divergent = d->d_rs[rep].rs_win_div;
    pthread_mutex_unlock(&d->d_pmu);
}

void detect_wilson(long n, long k, double *p, double *lo, double *hi)
{
    double nn = (double)n, z = 1.959964, z2 = z * z;

    *p = n > 0 ? (double)k / nn : 0;
    if (n <= 0) {
        *lo = 0;
        *hi = 1;
        return;
    }
    double denom = 1 + z2 / nn;
    double centre = (*p + z2 / (2 * nn)) / denom;
    double half = z * sqrt(*p * (1 - *p) / nn + z2 / (4 * nn * nn)) / denom;
    *lo = centre - half < 0 ? 0 : centre - half;
    *hi = centre + half > 1 ? 1 : centre + half;
}

void detect_ratio_publish(const char *replica, long n, long divergent)
{
    double p, lo, hi;

    if (n <= 0)
        return;
    detect_wilson(n, divergent, &p, &lo, &hi);
    metric_set(metrics_series2(m_ratio, replica, "estimate"), p);
    metric_set(metrics_series2(m_ratio, replica, "lower"), lo);
    metric_set(metrics_series2(m_ratio, replica, "upper"), hi);
}

/* ------------------------------------------------------------ sampling */

static int excluded(struct detect *d, const char *k, size_t len)
{
    const char *ex = d->d_cfg->exclude_pattern;
    if (lag_is_heartbeat_key(k, len))
        return 1;
    return ex && *ex && detect_glob_match(ex, strlen(ex), k, len);
}

static void batch_add(struct batch *b, const char *k, size_t len, uint64_t seen, long slot)
{
    b->keys[b->n] = k;
    b->lens[b->n] = len;
    b->seen[b->n] = seen;
    b->slots[b->n] = slot;
    b->rscan[b->n] = 0;
    b->n++;
}

/* Starts a scan cycle: DBSIZE for the progress ratio. */
static void cycle_start(struct detect *d)
{
    redisReply *r = rconn_command(d->d_p, "DBSIZE");
    d->d_cycle_start_us = clock_mono_us();
    d->d_cycle_keys = 0;
    d->d_cycle_found = 0;
    uint64_t n = r && r->type == REDIS_REPLY_INTEGER ? (uint64_t)r->integer : 0;
    pthread_mutex_lock(&d->d_pmu);
    d->d_prog.keys_in_db = n;
    d->d_prog.scan_progress = 0;
    if (d->d_o.one_pass) /* each replica is taken to hold as many until its scan starts */
        d->d_prog.replica_keys = n * (uint64_t)d->d_cfg->nreplicas;
    pthread_mutex_unlock(&d->d_pmu);
    if (d->d_o.one_pass) /* room for them all and a few more, so it need not grow */
        seen_reserve(&d->d_seen, (size_t)(n + n / 10 + 4096));
    if (r)
        freeReplyObject(r);
    /* A primary that lost most of its keys must not wipe its caches. */
    pthread_mutex_lock(&d->d_jmu);
    uint64_t prev = d->d_prev_dbsize;
    d->d_prev_dbsize = n;
    pthread_mutex_unlock(&d->d_jmu);
    if (prev >= 100 && n < prev / 2 && !d->d_o.one_pass) {
        char why[160];
        snprintf(why, sizeof(why), "the primary's key count dropped from %llu to %llu",
                 (unsigned long long)prev, (unsigned long long)n);
        guard_pause(d, why);
    }
}

/* One pass: a replica's scan starts; its DBSIZE replaces the guess. */
static void replica_size_known(struct detect *d, struct rconn *c)
{
    redisReply *r = rconn_command(c, "DBSIZE");
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
        pthread_mutex_lock(&d->d_pmu);
        uint64_t *k = &d->d_prog.replica_keys, guess = d->d_prog.keys_in_db;
        *k = (*k > guess ? *k - guess : 0) + (uint64_t)r->integer;
        pthread_mutex_unlock(&d->d_pmu);
    }
    if (r)
        freeReplyObject(r);
}

static void cycle_end(struct detect *d)
{
    double took = (double)(clock_mono_us() - d->d_cycle_start_us) / 1e6;
    metric_inc(metrics_series0(m_cycles));
    if (d->d_o.store) {
        struct store_cycle c = {.mode = "scan",
                                .started = (int64_t)(clock_wall_ms() - (uint64_t)(took * 1000)),
                                .finished = (int64_t)clock_wall_ms(),
                                .keys_checked = (int64_t)d->d_cycle_keys};
        store_put_cycle(d->d_o.store, &c);
    }
    pthread_mutex_lock(&d->d_pmu);
    d->d_prog.cycles++;
    d->d_prog.scan_progress = 1;
    d->d_prog.cycle_seconds = took;
    pthread_mutex_unlock(&d->d_pmu);
    log_debug("scan cycle done: %llu keys in %.1f s", (unsigned long long)d->d_cycle_keys, took);
}

/*
 * Replica scan: of the SCAN keys marked in lacks[], leaves marked those the
 * primary does not hold now. Keys the primary holds are compared by the
 * primary's own scan; comparing them here again would double the work of a
 * pass. (In one pass only the keys the caller could not tell about are
 * marked: see struct seen.) One EXISTS for them all, then one per key only
 * when some are lacking. An error reply keeps the key (compared, to be
 * safe). -1 when the primary could not be read.
 */
static int primary_lacks(struct detect *d, const struct scan_pg *pg, unsigned char *lacks)
{
    size_t nk = 0;
    for (size_t i = 0; i < pg->n; i++)
        nk += lacks[i];
    if (!nk)
        return 0;

    /* One EXISTS with every key asked about: it counts each key listed that
     * exists (a repeated key as often as listed), so a count equal to the
     * number of keys means the primary holds them all, which is nearly
     * always the case; only otherwise is each key asked on its own. */
    const char **a = malloc((nk + 1) * sizeof(*a));
    size_t *l = malloc((nk + 1) * sizeof(*l));
    redisReply *e = NULL;
    if (a && l) {
        size_t k = 0;
        a[k] = "EXISTS", l[k++] = 6;
        for (size_t i = 0; i < pg->n; i++)
            if (lacks[i])
                a[k] = pg->key[i], l[k++] = pg->len[i];
        /* Paced and counted as the lookups it makes, like the per-key
         * EXISTS it replaces, so the budget still bounds the load. */
        budget_take(d, (double)nk);
        e = rconn_argv(d->d_p, (int)k, a, l);
        if (e)
            rconn_count(d->d_p, (unsigned)nk - 1);
    }
    free(a);
    free(l);
    if (a && l && !e)
        return -1; /* the connection failed */
    int all = e && e->type == REDIS_REPLY_INTEGER && e->integer == (long long)nk;
    if (e)
        freeReplyObject(e);
    if (all) {
        memset(lacks, 0, pg->n);
        return 0;
    }
    for (size_t at = 0; at < pg->n; at += BATCH_MAX) {
        size_t n = pg->n - at < BATCH_MAX ? pg->n - at : BATCH_MAX, sent = 0;
        for (size_t i = at; i < at + n; i++) {
            if (!lacks[i])
                continue;
            const char *c[2] = {"EXISTS", pg->key[i]};
            size_t cl[2] = {6, pg->len[i]};
            if (rconn_append_argv(d->d_p, 2, c, cl) < 0)
                return -1;
            sent++;
        }
        budget_take(d, (double)sent);
        for (size_t i = at; i < at + n && sent; i++) {
            if (!lacks[i])
                continue;
            redisReply *r = rconn_reply(d->d_p);
            if (!r)
                return -1;
            lacks[i] = !(r->type == REDIS_REPLY_INTEGER && r->integer > 0);
            freeReplyObject(r);
            sent--;
        }
    }
    return 0;
}

/* Reads the next reply of c as a SCAN page into pg: 0, or -1 (no page, or the link failed). */
static int read_page(struct rconn *c, struct scan_pg *pg)
{
    scan_pg_begin(pg);
    if (rconn_reply_with(c, &scan_pg_fns, pg) < 0)
        return -1;
    if (scan_pg_end(pg) < 0) {
        log_debug("detect: %s:%d: SCAN answered no page: %s", rconn_addr(c)->host,
                  rconn_addr(c)->port, pg->err[0] ? pg->err : "(not an error reply)");
        return -1;
    }
    return 0;
}

/*
 * Reads the SCAN page of node c at cursor into pg: the one asked for ahead
 * when there is one for this cursor, else asked for now. -1 on a connection
 * error or a reply that is not a page.
 */
static int scan_page(struct rconn *c, struct ahead *ah, struct scan_pg *pg, const char *cur,
                     const char *pat, const char *count, unsigned long long cursor)
{
    struct rconn *on = ah->a_conn ? ah->a_conn : c;

    if (ah->a_conn) {
        int pending = ah->a_pending && rconn_pending(ah->a_conn) > 0;
        ah->a_pending = 0;
        if (pending && ah->a_cursor == cursor)
            return read_page(ah->a_conn, pg);
        if (pending) { /* another cursor (a new cycle): drop it, whatever it is */
            scan_pg_begin(pg);
            if (rconn_reply_with(ah->a_conn, &scan_pg_fns, pg) < 0)
                return -1;
        }
    }
    if (rconn_append(on, "SCAN %s MATCH %s COUNT %s", cur, pat, count) < 0)
        return -1;
    return read_page(on, pg);
}

/* Asks for the page at cursor ahead; on failure the next scan_page asks again. */
static void scan_ahead(struct detect *d, struct ahead *ah, unsigned long long cursor,
                       const char *pat, const char *count)
{
    char cur[32];

    if (!ah->a_conn || !cursor)
        return;
    snprintf(cur, sizeof(cur), "%llu", cursor);
    budget_take(d, 1);
    if (rconn_append(ah->a_conn, "SCAN %s MATCH %s COUNT %s", cur, pat, count) == 0 &&
        rconn_flush(ah->a_conn) == 0) {
        ah->a_pending = 1;
        ah->a_cursor = cursor;
    }
}

/*
 * One SCAN call on node c from *cursor; checks the keys it returns (for a
 * replica: only those the primary lacks, against that replica). Returns 1
 * when the cycle ended (cursor back to 0), 0 otherwise, -1 on error.
 */
static int scan_step(struct detect *d, struct rconn *c, struct ahead *ah,
                     unsigned long long *cursor, int rep)
{
    char cur[32], count[32];
    const char *pat = d->d_cfg->key_pattern && *d->d_cfg->key_pattern ? d->d_cfg->key_pattern : "*";
    struct scan_pg *pg = &d->d_page;
    struct batch b;
    int ended;

    snprintf(cur, sizeof(cur), "%llu", *cursor);
    snprintf(count, sizeof(count), "%lld", d->d_cfg->scan_count);
    budget_take(d, 1);
    if (scan_page(c, ah, pg, cur, pat, count, *cursor) < 0)
        return -1;
    *cursor = pg->cursor;
    ended = *cursor == 0;
    scan_ahead(d, ah, *cursor, pat, count);
    if (rep >= 0 && d->d_o.one_pass) {
        pthread_mutex_lock(&d->d_pmu);
        d->d_prog.replica_scanned += pg->n;
        pthread_mutex_unlock(&d->d_pmu);
    }
    /* fresh[i], in one pass: 1 no scan returned the key before (it is
     * fetched now), 0 one did (it was fetched then), -1 not known (the set
     * is full). lacks[i], on a replica: the primary is asked about it. */
    signed char *fresh = NULL;
    unsigned char *lacks = NULL;
    if (pg->n && d->d_o.one_pass) {
        uint64_t *h = malloc(pg->n * sizeof(*h));
        fresh = malloc(pg->n);
        if (!h || !fresh) {
            free(h);
            free(fresh);
            return -1;
        }
        for (size_t i = 0; i < pg->n; i++)
            h[i] = key_hash(-1, pg->key[i], pg->len[i]);
        seen_add_many(&d->d_seen, h, pg->n, fresh);
        free(h);
    }
    int unknown = !fresh; /* some key the primary must be asked about */
    for (size_t i = 0; fresh && i < pg->n && !unknown; i++)
        unknown = fresh[i] < 0;
    if (rep >= 0 && pg->n && unknown) {
        lacks = calloc(pg->n, 1);
        if (lacks)
            for (size_t i = 0; i < pg->n; i++)
                lacks[i] = (!fresh || fresh[i] < 0) && !excluded(d, pg->key[i], pg->len[i]);
        if (!lacks || primary_lacks(d, pg, lacks) < 0) {
            free(lacks);
            free(fresh);
            return -1;
        }
    }
    b.n = 0;
    uint64_t found = 0;
    for (size_t i = 0; i < pg->n; i++) {
        const char *k = pg->key[i];
        size_t kl = pg->len[i];
        if (excluded(d, k, kl))
            continue;
        found++;
        if (fresh && !fresh[i])
            continue; /* fetched when another scan returned it */
        if (fresh && d->d_fetch[0] && (fresh[i] > 0 || rep < 0) &&
            fetch_add(d, k, kl, rep >= 0) == 0)
            continue; /* fetched ahead, judged by fetch_push / fetch_drain */
        if (lacks && !lacks[i] && !(fresh && fresh[i] > 0))
            continue;
        batch_add(&b, k, kl, 0, -1);
        if (b.n == d->d_batch || b.n == BATCH_MAX || i + 1 == pg->n) {
            uint64_t t0 = clock_mono_us();
            if (rep < 0) {
                check_batch(d, &b, M_SCAN, -1);
                d->d_cycle_keys += (uint64_t)b.n;
            } else {
                check_batch(d, &b, M_REPLICA_SCAN, rep);
            }
            adapt_batch(d, clock_mono_us() - t0);
            b.n = 0;
        }
    }
    if (b.n) {
        if (rep < 0) {
            check_batch(d, &b, M_SCAN, -1);
            d->d_cycle_keys += (uint64_t)b.n;
        } else {
            check_batch(d, &b, M_REPLICA_SCAN, rep);
        }
    }
    if (rep < 0)
        d->d_cycle_found += found;
    else
        d->d_rs[rep].rs_cycle_found += found;
    if (ended)
        fetch_drain(d); /* a scan's keys are all judged when it ends */
    free(lacks);
    free(fresh);
    return ended;
}

/*
 * Draws n RANDOMKEY samples from the primary and checks them on every
 * replica. Returns how many were keys to compare (not the agent's own).
 */
static int random_step(struct detect *d, int n)
{
    redisReply *rr[BATCH_MAX];
    struct batch b;
    int got = 0;

    if (n > BATCH_MAX)
        n = BATCH_MAX;
    budget_take(d, n);
    for (int i = 0; i < n; i++)
        if (rconn_append(d->d_p, "RANDOMKEY") < 0)
            return 0;
    for (int i = 0; i < n; i++) {
        rr[i] = rconn_reply(d->d_p);
        if (!rr[i])
            break;
        got++;
    }
    b.n = 0;
    for (int i = 0; i < got; i++) {
        if (rr[i]->type == REDIS_REPLY_STRING && !excluded(d, rr[i]->str, rr[i]->len))
            batch_add(&b, rr[i]->str, rr[i]->len, 0, d->d_random_no++);
    }
    if (b.n)
        check_batch(d, &b, M_RANDOM, -1);
    for (int i = 0; i < got; i++)
        freeReplyObject(rr[i]);
    return b.n;
}

/* ------------------------------------------------------------ watch */

static void wq_push(struct detect *d, const char *k, size_t len, uint64_t seen)
{
    pthread_mutex_lock(&d->d_wmu);
    if (d->d_wq_len >= WATCH_MAX) {
        d->d_wq_dropped++;
        pthread_mutex_unlock(&d->d_wmu);
        metric_inc(metrics_series0(m_watch_drop));
        return;
    }
    struct wentry *e = &d->d_wq[(d->d_wq_head + d->d_wq_len) % WATCH_MAX];
    e->key = malloc(len ? len : 1);
    if (e->key) {
        memcpy(e->key, k, len);
        e->len = len;
        e->seen_us = seen;
        d->d_wq_len++;
    }
    pthread_mutex_unlock(&d->d_wmu);
}

/*
 * Enables keyspace notifications for every write (flags K/E and A) unless
 * already on; returns 0 when they are (or were made) on. *warned: a
 * warning was logged since they were last on (one per outage, not one per
 * retry).
 */
static int enable_notifications(struct rconn *c, int *warned)
{
    redisReply *r = rconn_command(c, "CONFIG GET notify-keyspace-events");
    char flags[64] = "";
    int ok = 0;

    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING)
        snprintf(flags, sizeof(flags), "%s", r->element[1]->str);
    else if (r && r->type == REDIS_REPLY_ERROR && !*warned) {
        log_warnx("watch: CONFIG GET refused (%s); enable notify-keyspace-events \"EA\" on the "
                  "primary for watch mode",
                  r->str);
        *warned = 1;
    }
    if (r)
        freeReplyObject(r);
    if (!r)
        return -1;
    int has_e = strchr(flags, 'E') != NULL;
    int has_a =
        strchr(flags, 'A') != NULL ||
        (strchr(flags, 'g') && strchr(flags, '$') && strchr(flags, 'l') && strchr(flags, 's') &&
         strchr(flags, 'h') && strchr(flags, 'z') && strchr(flags, 'x') && strchr(flags, 't'));
    if (has_e && has_a) {
        if (*warned)
            log_notice("watch: keyspace notifications are on");
        *warned = 0;
        return 0;
    }
    char want[80];
    snprintf(want, sizeof(want), "%s%s%s", flags, has_e ? "" : "E", has_a ? "" : "A");
    r = rconn_command(c, "CONFIG SET notify-keyspace-events %s", want);
    if (r && r->type == REDIS_REPLY_STATUS) {
        log_notice("watch: enabled keyspace notifications on the primary "
                   "(notify-keyspace-events \"%s\")",
                   want);
        ok = 1;
        *warned = 0;
    } else if (!*warned) {
        *warned = 1;
        log_warnx("watch: cannot enable keyspace notifications (%s); set notify-keyspace-events "
                  "\"%s\" on the primary, or drop 'watch' from sample-modes",
                  r && r->type == REDIS_REPLY_ERROR ? r->str : "no answer", want);
    }
    if (r)
        freeReplyObject(r);
    return ok ? 0 : -1;
}

static void watch_set(struct detect *d, int on)
{
    pthread_mutex_lock(&d->d_pmu);
    d->d_prog.watch_enabled = on;
    pthread_mutex_unlock(&d->d_pmu);
}

/* Notifications cannot be had now: watch is off; try again in 5 s. */
static void watch_down(struct detect *d, struct rconn *c)
{
    watch_set(d, 0);
    rconn_close(c);
    for (int i = 0; i < 50 && !d->d_stop; i++)
        usleep(100000);
}

/* The watch thread: queues every key the primary reports written. */
static void *watch_main(void *arg)
{
    struct detect *d = arg;
    const struct config *cfg = d->d_cfg;
    struct rconn_opts o = {.user = cfg->redis_user,
                           .password = cfg->redis_password,
                           .db = 0,
                           .connect_timeout_ms = cfg->connect_timeout,
                           .command_timeout_ms = cfg->command_timeout,
                           .backoff_max_ms = 2000};
    struct rconn *c = rconn_new(&cfg->primary, &o, d->d_o.primary);
    int subscribed = 0, refused = 0, warned = 0;
    uint64_t lost_at = 0;
    char pattern[64];

    snprintf(pattern, sizeof(pattern), "__keyevent@%d__:*", d->d_o.db);
    while (!d->d_stop && c) {
        if (!subscribed) {
            if (rconn_ensure(c) < 0) {
                usleep(100000);
                continue;
            }
            if (enable_notifications(c, &warned) < 0) {
                watch_down(d, c);
                continue;
            }
            /* On once the server confirms the subscription. */
            if (rconn_append(c, "PSUBSCRIBE %s", pattern) < 0)
                continue;
            subscribed = 1;
            if (lost_at) {
                log_warnx("watch: notifications were down for %.3f s; writes in that window are "
                          "left to the scan",
                          (double)(clock_mono_us() - lost_at) / 1e6);
                if (d->d_o.store)
                    store_put_event(d->d_o.store, (int64_t)clock_wall_ms(), "watch-gap", "primary",
                                    "keyspace notifications were interrupted");
                lost_at = 0;
            }
        }
        redisReply *r = NULL;
        int rc = rconn_poll_reply(c, 100, &r);
        if (rc < 0) {
            subscribed = 0;
            lost_at = clock_mono_us();
            watch_set(d, 0);
            metric_inc(metrics_series0(m_watch_gaps));
            continue;
        }
        if (rc == 0)
            continue;
        if (r->type == REDIS_REPLY_ERROR) { /* the subscription refused (ACL, ...) */
            if (!refused)
                log_warnx("watch: PSUBSCRIBE %s refused (%s); writes in db %d are left to the "
                          "scan (the agent's user needs the channel &%s)",
                          pattern, r->str, d->d_o.db, pattern);
            refused = 1;
            freeReplyObject(r);
            subscribed = 0;
            watch_down(d, c);
            continue;
        }
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            !strcmp(r->element[0]->str, "psubscribe")) {
            if (refused)
                log_notice("watch: PSUBSCRIBE %s accepted", pattern);
            refused = 0;
            watch_set(d, 1);
        } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 &&
                   r->element[0]->type == REDIS_REPLY_STRING &&
                   !strcmp(r->element[0]->str, "pmessage") &&
                   r->element[3]->type == REDIS_REPLY_STRING) {
            redisReply *k = r->element[3];
            if (!excluded(d, k->str, k->len))
                wq_push(d, k->str, k->len, clock_mono_us());
        }
        freeReplyObject(r);
    }
    rconn_free(c);
    return NULL;
}

/* Longest current lag over the replicas, for the watch delay. */
static uint64_t max_lag_us(struct detect *d)
{
    long long m = 0;
    for (int i = 0; i < d->d_cfg->nreplicas; i++) {
        long long l = replica_lag_ms(d, i);
        if (l > m)
            m = l;
    }
    if (m > d->d_cfg->confirm_timeout)
        m = d->d_cfg->confirm_timeout;
    return (uint64_t)m * 1000u;
}

/* Verifies the written keys whose replicas should have them by now. */
static int watch_step(struct detect *d)
{
    uint64_t due_before = clock_mono_us() - max_lag_us(d) - (uint64_t)d->d_cfg->watch_grace * 1000u;
    struct wentry es[BATCH_MAX];
    struct batch b;
    int n = 0;

    pthread_mutex_lock(&d->d_wmu);
    while (d->d_wq_len && n < d->d_batch && n < BATCH_MAX) {
        struct wentry *e = &d->d_wq[d->d_wq_head];
        if (e->seen_us > due_before)
            break;
        es[n++] = *e;
        d->d_wq_head = (d->d_wq_head + 1) % WATCH_MAX;
        d->d_wq_len--;
    }
    size_t left = d->d_wq_len;
    pthread_mutex_unlock(&d->d_wmu);
    metric_set(metrics_series0(m_watch_q), (double)left);
    if (!n)
        return 0;
    /* A key written many times in a row is checked once. */
    b.n = 0;
    for (int i = 0; i < n; i++) {
        int dup = 0;
        for (int j = 0; j < b.n && !dup; j++)
            dup = b.lens[j] == es[i].len && !memcmp(b.keys[j], es[i].key, es[i].len);
        if (!dup)
            batch_add(&b, es[i].key, es[i].len, es[i].seen_us, -1);
    }
    uint64_t t0 = clock_mono_us();
    check_batch(d, &b, M_WATCH, -1);
    adapt_batch(d, clock_mono_us() - t0);
    for (int i = 0; i < n; i++)
        free(es[i].key);
    return n;
}

/* ------------------------------------------------------------ repair */

/* The job with this id, or NULL; d_jmu held. */
static struct job *job_get(struct detect *d, int64_t id)
{
    struct job *j = id > 0 ? d->d_jobs[id % JOBS_MAX] : NULL;
    return j && j->id == id ? j : NULL;
}

static void job_free(struct job *j)
{
    if (!j)
        return;
    for (int i = 0; i < j->nitems; i++)
        free(j->items[i].key);
    free(j->items);
    free(j);
}

static int job_add_item(struct job *j, const char *key, size_t len, int rep)
{
    if (j->nitems == j->cap) {
        int cap = j->cap ? j->cap * 2 : 16;
        struct job_item *ni = realloc(j->items, (size_t)cap * sizeof(*ni));
        if (!ni)
            return -1;
        j->items = ni;
        j->cap = cap;
    }
    struct job_item *it = &j->items[j->nitems];
    memset(it, 0, sizeof(*it));
    it->key = malloc(len ? len : 1);
    if (!it->key)
        return -1;
    memcpy(it->key, key, len);
    it->len = len;
    it->rep = rep;
    j->nitems++;
    return 0;
}

/* Records an item's outcome; wakes waiters when the job is done. */
static void job_item_done(struct detect *d, int64_t id, int item, const char *outcome,
                          const char *strategy, const char *error)
{
    pthread_mutex_lock(&d->d_jmu);
    struct job *j = job_get(d, id);
    if (j && item >= 0 && item < j->nitems && !j->items[item].outcome) {
        struct job_item *it = &j->items[item];
        it->outcome = outcome;
        it->strategy = strategy;
        snprintf(it->error, sizeof(it->error), "%s", error ? error : "");
        if (++j->ndone == j->nitems) {
            j->state = JOB_DONE;
            pthread_cond_broadcast(&d->d_jcv);
        }
    }
    pthread_mutex_unlock(&d->d_jmu);
}

static void record_repair(struct detect *d, const struct div *v, const char *strategy,
                          enum repair_trigger trigger, const char *outcome, const char *error,
                          uint64_t started_ms)
{
    const char *name = d->d_cfg->replicas[v->d_rep].name;

    metric_inc(metrics_series(m_repairs, (const char *const[]){name, strategy, outcome}));
    if (d->d_o.store) {
        struct store_repair r = {.divergence_id = v->d_id,
                                 .replica = name,
                                 .key = v->d_key,
                                 .keylen = v->d_keylen,
                                 .strategy = strategy,
                                 .trigger = trigger_names[trigger],
                                 .requested = (int64_t)started_ms,
                                 .finished = (int64_t)clock_wall_ms(),
                                 .outcome = outcome,
                                 .error = error && *error ? error : NULL};
        store_put_repair(d->d_o.store, &r);
    }
    if (!strcmp(outcome, "failed")) {
        char kesc[128];
        log_warnx("repair failed: replica %s key \"%s\": %s", name,
                  log_escape(kesc, sizeof(kesc), v->d_key, v->d_keylen), error ? error : "");
    }
}

/* Ends a repair in progress (v is REPAIRING): outcome for the job and history. */
static void finish_repair(struct detect *d, struct div *v, const char *outcome, const char *error)
{
    uint64_t took = clock_mono_us() - v->d_repair_started_us;
    uint64_t started_ms = clock_wall_ms() - took / 1000;

    metric_observe(metrics_series0(m_repair_dur), (double)took / 1e6);
    record_repair(d, v, v->d_strategy, v->d_trigger, outcome, error, started_ms);
    if (v->d_job)
        job_item_done(d, v->d_job, v->d_item, outcome, v->d_strategy, error);
    v->d_job = 0;
}

/* After a failed or skipped repair: auto-repair tries again after 1, 2, 4 ... 30 s. */
static void repair_backoff(struct div *v, uint64_t now)
{
    uint64_t wait = REPAIR_BACKOFF_US << (v->d_repair_fails < 5 ? v->d_repair_fails : 5);

    v->d_repair_fails++;
    v->d_next_repair_mono = now + (wait < REPAIR_RETRY_US ? wait : REPAIR_RETRY_US);
}

/*
 * Which replicas' auto-repairs wait, once per turn: a pubsub cache repaired
 * by publishing needs its subscriber to apply the message, so its repairs
 * are held while the channel has none, rather than published into the void
 * to fail their verification.
 */
static void repairs_held(struct detect *d, unsigned char *held)
{
    for (int i = 0; i < d->d_cfg->nreplicas; i++) {
        struct lag_view lv;
        held[i] = 0;
        if (d->d_cfg->replicas[i].kind != REPLICA_PUBSUB ||
            d->d_cfg->repair_pubsub_strategy != PUBSUB_PUBLISH)
            continue;
        lag_get(d->d_o.lag, i, &lv);
        held[i] = !lv.link_up;
    }
}

/*
 * Starts the repair of one divergence v (open: CONFIRMED). Re-reads both
 * sides first: a key that is equal again is resolved instead. On a write,
 * v waits in REPAIRING for the replica to catch up, then is verified.
 */
static void start_repair(struct detect *d, struct div *v, enum repair_trigger trigger, int64_t job,
                         int item)
{
    const struct cfg_replica *rc = &d->d_cfg->replicas[v->d_rep];
    struct rconn *rcon = d->d_rs[v->d_rep].rs_conn;
    struct cmp_side ps, rsd;
    const char *key = v->d_key;
    const char *strategy = repair_strategy_name(d->d_cfg, rc);
    char err[200] = "";
    uint64_t now_ms = clock_wall_ms();
    uint64_t pd, rd;

    memset(&ps, 0, sizeof(ps));
    memset(&rsd, 0, sizeof(rsd));
    if (cmp_fetch(d->d_p, &key, &v->d_keylen, 1, d->d_cfg->max_value_bytes, &ps) < 0 ||
        cmp_fetch(rcon, &key, &v->d_keylen, 1, d->d_cfg->max_value_bytes, &rsd) < 0) {
        snprintf(err, sizeof(err), "cannot read the key: %s",
                 rconn_connected(d->d_p) ? rconn_errstr(rcon) : rconn_errstr(d->d_p));
        record_repair(d, v, strategy, trigger, "failed", err, now_ms);
        if (job)
            job_item_done(d, job, item, "failed", strategy, err);
        repair_backoff(v, clock_mono_us());
        goto out;
    }
    enum cmp_kind k = judge_one(d, v->d_rep, v->d_key, v->d_keylen, &ps, &rsd, &pd, &rd);
    if (!cmp_is_divergence(k)) {
        if (job)
            job_item_done(d, job, item, "not-divergent", strategy, NULL);
        if (k == CMP_EQUAL || k == CMP_GONE)
            resolve(d, v, resolution_for(k, v)); /* frees v */
        goto out;
    }
    if (d->d_cfg->repair_dry_run) {
        char kesc[128];
        log_notice("repair (dry run): would %s key \"%s\" for replica %s (%s)", strategy,
                   log_escape(kesc, sizeof(kesc), v->d_key, v->d_keylen), rc->name,
                   cmp_kind_name(k));
        record_repair(d, v, strategy, trigger, "dry-run", NULL, now_ms);
        if (job)
            job_item_done(d, job, item, "dry-run", strategy, NULL);
        v->d_next_repair_mono = clock_mono_us() + REPAIR_RETRY_US;
        goto out;
    }
    budget_take(d, 4);
    enum repair_result rr = repair_apply(d->d_cfg, rc, d->d_p, rcon, v->d_key, v->d_keylen, k, &ps,
                                         &rsd, &strategy, err, sizeof(err));
    if (rr == REPAIR_WRITTEN) {
        long long poff = -1;
        list_unlink(v);
        v->d_state = DIV_REPAIRING;
        v->d_kind = k;
        v->d_trigger = trigger;
        v->d_strategy = strategy;
        v->d_job = job;
        v->d_item = item;
        v->d_repair_started_us = clock_mono_us();
        v->d_deadline_mono =
            v->d_repair_started_us + (uint64_t)d->d_cfg->repair_verify_timeout * 1000u;
        set_marker(d, v, &poff);
        list_push(&d->d_repairing, v);
        put_record(d, v, NULL, 0);
    } else {
        const char *outcome = rr == REPAIR_NOTHING ? "skipped" : "failed";
        if (rr == REPAIR_NOTHING)
            snprintf(err, sizeof(err),
                     "the value changed since it was compared; it is "
                     "checked again");
        record_repair(d, v, strategy, trigger, outcome, err, now_ms);
        if (job)
            job_item_done(d, job, item, outcome, strategy, err);
        repair_backoff(v, clock_mono_us());
        if (rr == REPAIR_FAILED) {
            json_t *ev = json_pack("{s:s,s:s,s:s,s:s}", "replica", rc->name, "kind",
                                   cmp_kind_name(k), "strategy", strategy, "error", err);
            char *kt = text_escape(v->d_key, v->d_keylen);
            json_object_set_new(ev, "key", json_string(kt ? kt : ""));
            free(kt);
            webhook_event("repair_failed", ev);
        }
    }
out:
    cmp_side_clear(&ps);
    cmp_side_clear(&rsd);
}

/* Verifies written repairs once their replica caught up (or at the timeout). */
static int verify_step(struct detect *d)
{
    uint64_t now = clock_mono_us();
    struct div *v = d->d_repairing, *next;
    int n = 0;

    for (; v && !d->d_stop; v = next) {
        next = v->d_lnext;
        if (!caught_up(d, v) && now < v->d_deadline_mono)
            continue;
        struct cmp_side ps, rsd;
        const char *key = v->d_key;
        uint64_t pd, rd;
        memset(&ps, 0, sizeof(ps));
        memset(&rsd, 0, sizeof(rsd));
        n++;
        enum cmp_kind k = CMP_ERROR;
        if (cmp_fetch(d->d_p, &key, &v->d_keylen, 1, d->d_cfg->max_value_bytes, &ps) == 0 &&
            cmp_fetch(d->d_rs[v->d_rep].rs_conn, &key, &v->d_keylen, 1, d->d_cfg->max_value_bytes,
                      &rsd) == 0)
            k = judge_one(d, v->d_rep, v->d_key, v->d_keylen, &ps, &rsd, &pd, &rd);
        cmp_side_clear(&ps);
        cmp_side_clear(&rsd);
        if (k == CMP_EQUAL || k == CMP_GONE) {
            resolve(d, v, "repaired"); /* finishes the repair, frees v */
        } else if (k == CMP_ERROR && now < v->d_deadline_mono) {
            continue;
        } else {
            char err[160];
            snprintf(err, sizeof(err), "%s after the repair (%s)",
                     k == CMP_ERROR ? "could not verify" : "still differs", cmp_kind_name(k));
            finish_repair(d, v, "failed", err);
            list_unlink(v);
            v->d_state = DIV_CONFIRMED;
            v->d_next_check_mono = now + REVERIFY_US;
            repair_backoff(v, now);
            list_push(&d->d_open, v);
            put_record(d, v, NULL, 0);
        }
    }
    return n;
}

/* Pauses auto-repair (idempotent), telling the operator why. */
static void guard_pause(struct detect *d, const char *why)
{
    pthread_mutex_lock(&d->d_jmu);
    int was = d->d_paused;
    d->d_paused = 1;
    snprintf(d->d_paused_why, sizeof(d->d_paused_why), "%s", why);
    pthread_mutex_unlock(&d->d_jmu);
    if (was)
        return;
    log_warnx("auto-repair paused: %s; resume with `keydrift repair --resume` or POST "
              "/api/v1/repair/resume",
              why);
    metric_set(metrics_series0(m_repair_paused), 1);
    if (d->d_o.store)
        store_put_event(d->d_o.store, (int64_t)clock_wall_ms(), "repair-paused", "agent", why);
    webhook_event("repair_paused", json_pack("{s:s}", "reason", why));
}

/* Counts keys checked and confirmed, per second, for the guard; d_jmu held. */
static void guard_count(struct detect *d, uint64_t checked, uint64_t confirmed)
{
    uint64_t sec = clock_mono_us() / 1000000u;
    if (sec != d->d_win_sec) {
        for (uint64_t s2 = d->d_win_sec + 1; s2 <= sec && s2 <= d->d_win_sec + GUARD_SECONDS;
             s2++) {
            d->d_win_checked[s2 % GUARD_SECONDS] = 0;
            d->d_win_confirmed[s2 % GUARD_SECONDS] = 0;
        }
        d->d_win_sec = sec;
    }
    d->d_win_checked[sec % GUARD_SECONDS] += checked;
    d->d_win_confirmed[sec % GUARD_SECONDS] += confirmed;
}

/*
 * The mass-repair guard: a share of confirmed divergences above
 * repair-max-share, a primary that restarted (run_id), or a primary whose
 * key count dropped sharply pauses auto-repair: repairing then would more
 * likely spread a fault than fix one.
 */
static void guard_step(struct detect *d)
{
    char run_id[48], why[200] = "";
    uint64_t checked = 0, confirmed = 0;

    lag_primary_run_id(d->d_o.lag, run_id, sizeof(run_id));
    pthread_mutex_lock(&d->d_jmu);
    guard_count(d, 0, 0);
    for (int i = 0; i < GUARD_SECONDS; i++) {
        checked += d->d_win_checked[i];
        confirmed += d->d_win_confirmed[i];
    }
    if (checked >= GUARD_MIN_KEYS &&
        (double)confirmed / (double)checked > d->d_cfg->repair_max_share)
        snprintf(why, sizeof(why),
                 "%.1f%% of the keys checked in the last minute were confirmed divergent "
                 "(repair-max-share %.1f%%)",
                 100.0 * (double)confirmed / (double)checked, 100 * d->d_cfg->repair_max_share);
    if (run_id[0] && !d->d_run_id[0])
        snprintf(d->d_run_id, sizeof(d->d_run_id), "%s", run_id);
    else if (run_id[0] && strcmp(run_id, d->d_run_id) != 0)
        snprintf(why, sizeof(why), "the primary restarted (its run_id changed)");
    pthread_mutex_unlock(&d->d_jmu);
    if (why[0])
        guard_pause(d, why);
}

/* Reads the primary's run_id now; pauses and returns 1 when it changed. */
static int primary_restarted(struct detect *d)
{
    redisReply *r = rconn_command(d->d_p, "INFO server");
    char run_id[48] = "";
    int changed = 0;

    if (r && r->type == REDIS_REPLY_STRING)
        info_field(r->str, r->len, "run_id", run_id, sizeof(run_id));
    if (r)
        freeReplyObject(r);
    if (!run_id[0])
        return 1; /* cannot tell: do not repair now */
    pthread_mutex_lock(&d->d_jmu);
    if (!d->d_run_id[0])
        snprintf(d->d_run_id, sizeof(d->d_run_id), "%s", run_id);
    else
        changed = strcmp(run_id, d->d_run_id) != 0;
    pthread_mutex_unlock(&d->d_jmu);
    if (changed)
        guard_pause(d, "the primary restarted (its run_id changed)");
    return changed;
}

static int auto_repair_step(struct detect *d)
{
    uint64_t now = clock_mono_us();
    double rate = (double)d->d_cfg->repair_max_per_sec;
    int n = 0;
    struct div *v, *next;
    unsigned char held[CFG_MAX_REPLICAS];

    if (d->d_cfg->repair != REPAIR_AUTO || d->d_paused || !d->d_open)
        return 0;
    d->d_repair_tokens += rate * (double)(now - d->d_repair_last_us) / 1e6;
    if (d->d_repair_tokens > rate)
        d->d_repair_tokens = rate;
    d->d_repair_last_us = now;
    repairs_held(d, held);
    for (v = d->d_open; v; v = v->d_lnext)
        if (v->d_state == DIV_CONFIRMED && v->d_next_repair_mono <= now && !held[v->d_rep])
            break;
    if (!v || d->d_repair_tokens < 1)
        return 0;
    /* Ask the primary itself, not the last poll: a primary that just came back
     * empty must not have its caches wiped before the guard notices. */
    if (primary_restarted(d))
        return 0;
    for (v = d->d_open; v && d->d_repair_tokens >= 1 && !d->d_stop; v = next) {
        next = v->d_lnext;
        if (v->d_state != DIV_CONFIRMED || v->d_next_repair_mono > now || held[v->d_rep])
            continue;
        d->d_repair_tokens -= 1;
        start_repair(d, v, TRIGGER_AUTO, 0, -1);
        n++;
    }
    return n;
}

/* Compares one key now and, if it differs, tracks it as confirmed (a request). */
static struct div *track_requested(struct detect *d, int rep, const char *key, size_t len)
{
    struct cmp_side ps, rsd;
    uint64_t pd, rd;
    long long poff = -1;
    uint64_t h = key_hash(rep, key, len);
    struct div *v = NULL;

    memset(&ps, 0, sizeof(ps));
    memset(&rsd, 0, sizeof(rsd));
    if (cmp_fetch(d->d_p, &key, &len, 1, d->d_cfg->max_value_bytes, &ps) == 0 &&
        cmp_fetch(d->d_rs[rep].rs_conn, &key, &len, 1, d->d_cfg->max_value_bytes, &rsd) == 0) {
        enum cmp_kind k = judge_one(d, rep, key, len, &ps, &rsd, &pd, &rd);
        if (cmp_is_divergence(k)) {
            new_suspect(d, rep, key, len, h, k, &ps, &rsd, pd, rd, M_REQUEST, 0, -1, &poff);
            v = map_get(d, rep, key, len, h);
            if (v)
                confirm(d, v);
        }
    }
    cmp_side_clear(&ps);
    cmp_side_clear(&rsd);
    return v;
}

/* Expands and starts queued repair jobs. */
static int jobs_step(struct detect *d)
{
    struct job *todo[JOBS_MAX];
    int ntodo = 0;

    pthread_mutex_lock(&d->d_jmu);
    for (int i = 0; i < JOBS_MAX; i++)
        if (d->d_jobs[i] && d->d_jobs[i]->state == JOB_QUEUED) {
            d->d_jobs[i]->state = JOB_RUNNING;
            todo[ntodo++] = d->d_jobs[i];
        }
    pthread_mutex_unlock(&d->d_jmu);

    for (int t = 0; t < ntodo; t++) {
        struct job *j = todo[t];
        /* Items are expanded here, on the engine thread that owns the divergences. */
        if (j->all_open) {
            pthread_mutex_lock(&d->d_jmu);
            for (struct div *v = d->d_open; v; v = v->d_lnext)
                if ((j->rep < 0 || v->d_rep == j->rep) && v->d_state == DIV_CONFIRMED)
                    job_add_item(j, v->d_key, v->d_keylen, v->d_rep);
            if (j->nitems == 0)
                j->state = JOB_DONE;
            pthread_cond_broadcast(&d->d_jcv);
            pthread_mutex_unlock(&d->d_jmu);
        } else {
            pthread_mutex_lock(&d->d_jmu);
            int n = j->nitems;
            for (int i = 0; i < n; i++) {
                if (j->items[i].rep >= 0)
                    continue;
                /* any replica: every replica where the key is open, else all */
                int first = -1;
                for (int r = 0; r < d->d_cfg->nreplicas; r++) {
                    uint64_t h = key_hash(r, j->items[i].key, j->items[i].len);
                    if (!map_get(d, r, j->items[i].key, j->items[i].len, h))
                        continue;
                    if (first < 0)
                        first = r;
                    else
                        job_add_item(j, j->items[i].key, j->items[i].len, r);
                }
                if (first < 0) {
                    first = 0;
                    for (int r = 1; r < d->d_cfg->nreplicas; r++)
                        job_add_item(j, j->items[i].key, j->items[i].len, r);
                }
                j->items[i].rep = first;
            }
            pthread_mutex_unlock(&d->d_jmu);
        }
        for (int i = 0; i < j->nitems; i++) {
            struct job_item *it = &j->items[i];
            uint64_t h = key_hash(it->rep, it->key, it->len);
            struct div *v = map_get(d, it->rep, it->key, it->len, h);
            if (v && v->d_state == DIV_SUSPECT)
                confirm(d, v); /* an operator's request needs no second look */
            if (!v)
                v = track_requested(d, it->rep, it->key, it->len);
            if (!v) {
                job_item_done(d, j->id, i, "not-divergent",
                              repair_strategy_name(d->d_cfg, &d->d_cfg->replicas[it->rep]), NULL);
            } else if (v->d_state == DIV_REPAIRING) {
                job_item_done(d, j->id, i, "skipped",
                              repair_strategy_name(d->d_cfg, &d->d_cfg->replicas[it->rep]),
                              "a repair of this key is already in progress");
            } else {
                start_repair(d, v, j->trigger, j->id, i);
            }
        }
    }
    return ntodo;
}

int64_t repair_submit(struct detect *d, const char *replica, const char *const *keys,
                      const size_t *lens, int nkeys, int all_open, enum repair_trigger trigger,
                      char *err, size_t errlen)
{
    int rep = -1;
    struct job *j;

    if (d->d_cfg->repair == REPAIR_OFF) {
        snprintf(err, errlen, "repairs are off (option 'repair off')");
        return -1;
    }
    if (replica && *replica) {
        for (int i = 0; i < d->d_cfg->nreplicas; i++)
            if (!strcmp(d->d_cfg->replicas[i].name, replica))
                rep = i;
        if (rep < 0) {
            snprintf(err, errlen, "unknown replica '%s'", replica);
            return -1;
        }
    }
    if (!all_open && (nkeys < 1 || nkeys > JOB_KEYS_MAX)) {
        snprintf(err, errlen, "between 1 and %d keys, please", JOB_KEYS_MAX);
        return -1;
    }
    j = calloc(1, sizeof(*j));
    if (!j) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    j->trigger = trigger;
    j->all_open = all_open;
    j->rep = rep;
    j->created_ms = clock_wall_ms();
    for (int i = 0; !all_open && i < nkeys; i++) {
        if (job_add_item(j, keys[i], lens[i], rep) < 0) {
            job_free(j);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    pthread_mutex_lock(&d->d_jmu);
    int64_t id = ++d->d_next_job;
    struct job *old = d->d_jobs[id % JOBS_MAX];
    if (old && old->state != JOB_DONE) {
        d->d_next_job--;
        pthread_mutex_unlock(&d->d_jmu);
        job_free(j);
        snprintf(err, errlen, "too many repair jobs in progress; try again shortly");
        return -1;
    }
    j->id = id;
    d->d_jobs[id % JOBS_MAX] = j;
    pthread_mutex_unlock(&d->d_jmu);
    job_free(old);
    return id;
}

json_t *repair_job_json(struct detect *d, int64_t id, long long wait_ms)
{
    struct timespec until;
    json_t *out = NULL;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += wait_ms / 1000;
    until.tv_nsec += (wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->d_jmu);
    struct job *j = job_get(d, id);
    while (j && j->state != JOB_DONE && wait_ms > 0 &&
           pthread_cond_timedwait(&d->d_jcv, &d->d_jmu, &until) == 0)
        j = job_get(d, id);
    if (j) {
        json_t *results = json_array();
        for (int i = 0; i < j->nitems; i++) {
            const struct job_item *it = &j->items[i];
            char *k = text_escape(it->key, it->len), *b = text_base64(it->key, it->len);
            json_t *r = json_pack("{s:s,s:s,s:s,s:s}", "replica",
                                  it->rep >= 0 ? d->d_cfg->replicas[it->rep].name : "", "key",
                                  k ? k : "", "key_base64", b ? b : "", "outcome",
                                  it->outcome ? it->outcome : "pending");
            if (it->strategy)
                json_object_set_new(r, "strategy", json_string(it->strategy));
            if (it->error[0])
                json_object_set_new(r, "error", json_string(it->error));
            json_array_append_new(results, r);
            free(k);
            free(b);
        }
        out = json_pack("{s:I,s:s,s:s,s:I,s:o}", "id", (json_int_t)j->id, "state",
                        job_state_names[j->state], "trigger", trigger_names[j->trigger],
                        "created_ms", (json_int_t)j->created_ms, "results", results);
    }
    pthread_mutex_unlock(&d->d_jmu);
    return out;
}

int repair_paused(struct detect *d, char *why, size_t whylen)
{
    pthread_mutex_lock(&d->d_jmu);
    int p = d->d_paused;
    snprintf(why, whylen, "%s", p ? d->d_paused_why : "");
    pthread_mutex_unlock(&d->d_jmu);
    return p;
}

void repair_resume(struct detect *d)
{
    char run_id[48];

    lag_primary_run_id(d->d_o.lag, run_id, sizeof(run_id));
    pthread_mutex_lock(&d->d_jmu);
    int was = d->d_paused;
    d->d_paused = 0;
    d->d_paused_why[0] = '\0';
    /* The operator accepts the primary as it is now. */
    snprintf(d->d_run_id, sizeof(d->d_run_id), "%s", run_id);
    d->d_prev_dbsize = 0;
    memset(d->d_win_checked, 0, sizeof(d->d_win_checked));
    memset(d->d_win_confirmed, 0, sizeof(d->d_win_confirmed));
    pthread_mutex_unlock(&d->d_jmu);
    if (was) {
        log_notice("auto-repair resumed by an operator");
        if (d->d_o.store)
            store_put_event(d->d_o.store, (int64_t)clock_wall_ms(), "repair-resumed", "agent", "");
    }
    metric_set(metrics_series0(m_repair_paused), 0);
}

/* ------------------------------------------------------------ the engine */

static uint64_t confirm_us(const struct detect *d)
{
    return (uint64_t)d->d_cfg->confirm_timeout * 1000u;
}

/*
 * At confirm-timeout, may a suspect whose replica has not caught up be
 * judged anyway? A replica that is merely behind would turn a pending update
 * into a false alarm, so only when nothing can be in flight:
 *   - native: never (its stream delivers everything once it catches up);
 *   - pubsub with no subscriber on the channel: yes, nothing will arrive;
 *   - pubsub whose subscriber applied none of our heartbeats since the first
 *     look, for GIVE_UP_FACTOR timeouts: yes, it is not applying updates
 *     (stuck, or a subscriber that ignores the messages);
 *   - otherwise (it applies updates, slowly): keep waiting.
 */
static int may_settle_behind(struct detect *d, const struct div *v, uint64_t now)
{
    struct lag_view lv;

    if (d->d_cfg->replicas[v->d_rep].kind == REPLICA_NATIVE)
        return 0;
    lag_get(d->d_o.lag, v->d_rep, &lv);
    if (!lv.link_up && lv.reachable)
        return 1;
    return lv.shown_seq == v->d_first_shown &&
           now >= v->d_first_mono + (GIVE_UP_FACTOR - 1) * confirm_us(d);
}

static int recheck_step(struct detect *d)
{
    uint64_t now = clock_mono_us();
    int done = 0;
    struct div *v = d->d_suspects, *next;

    for (; v && !d->d_stop; v = next) {
        next = v->d_lnext;
        if (v->d_next_check_mono > now)
            continue;
        if (caught_up(d, v) || (now >= v->d_deadline_mono && may_settle_behind(d, v, now))) {
            recheck(d, v);
            done++;
        } else if (now >= v->d_first_mono + GIVE_UP_FACTOR * confirm_us(d)) {
            clear_suspect(d, v); /* it never caught up: lag, not evidence */
            done++;
        }
    }
    return done;
}

/* Re-verifies open divergences every couple of seconds, to see them resolve. */
static void reverify_step(struct detect *d)
{
    uint64_t now = clock_mono_us();
    struct batch b;
    struct div *v;

    if (now < d->d_next_reverify)
        return;
    d->d_next_reverify = now + REVERIFY_US;
    for (int rep = 0; rep < d->d_cfg->nreplicas; rep++) {
        b.n = 0;
        for (v = d->d_open; v; v = v->d_lnext) {
            if (v->d_rep != rep || v->d_next_check_mono > now)
                continue;
            v->d_next_check_mono = now + REVERIFY_US;
            batch_add(&b, v->d_key, v->d_keylen, 0, -1);
            if (b.n == BATCH_MAX)
                break;
        }
        /* check_batch may free entries of the list: keys are copied first. */
        struct batch copy;
        copy.n = 0;
        for (int i = 0; i < b.n; i++) {
            char *k = malloc(b.lens[i] ? b.lens[i] : 1);
            if (!k)
                continue;
            memcpy(k, b.keys[i], b.lens[i]);
            batch_add(&copy, k, b.lens[i], 0, -1);
        }
        if (copy.n)
            check_batch(d, &copy, M_RECHECK, rep);
        for (int i = 0; i < copy.n; i++)
            free((char *)copy.keys[i]);
    }
}

static int any_replica_lagging(struct detect *d)
{
    for (int i = 0; i < d->d_cfg->nreplicas; i++) {
        struct lag_view v;
        lag_get(d->d_o.lag, i, &v);
        if (v.status == STATUS_LAGGING || v.status == STATUS_STALLED)
            return 1;
    }
    return 0;
}

static void publish_progress(struct detect *d)
{
    size_t suspects = 0, open = 0;
    for (struct div *v = d->d_suspects; v; v = v->d_lnext)
        suspects++;
    for (struct div *v = d->d_open; v; v = v->d_lnext)
        open++;
    for (struct div *v = d->d_repairing; v; v = v->d_lnext)
        open++;
    pthread_mutex_lock(&d->d_pmu);
    d->d_prog.suspects = suspects;
    d->d_prog.open = open;
    if (d->d_prog.keys_in_db && d->d_prog.scan_progress < 1) {
        double p = (double)d->d_cycle_keys / (double)d->d_prog.keys_in_db;
        d->d_prog.scan_progress = p > 0.99 ? 0.99 : p;
    }
    pthread_mutex_unlock(&d->d_pmu);
}

/* When a sampler that started at `started` and found `found` keys to compare may go on. */
static uint64_t rest_until(uint64_t started, uint64_t found)
{
    return found ? 0 : started + IDLE_CYCLE_US;
}

static void *engine_main(void *arg)
{
    struct detect *d = arg;
    const struct config *cfg = d->d_cfg;
    int modes = d->d_o.one_pass ? (MODE_SCAN | MODE_REPLICA_SCAN) : cfg->modes;
    int scan_done = !(modes & MODE_SCAN), rscan_done = !(modes & MODE_REPLICA_SCAN);
    int rscan_rep = 0;
    int errors_in_row = 0;

    if (modes & MODE_SCAN)
        cycle_start(d);
    while (!d->d_stop) {
        int busy = 0;

        busy += recheck_step(d);
        busy += jobs_step(d);
        busy += verify_step(d);
        if (!d->d_o.one_pass) {
            guard_step(d);
            busy += auto_repair_step(d);
            reverify_step(d);
            if (modes & MODE_WATCH)
                busy += watch_step(d);
        }
        if (!d->d_o.one_pass && any_replica_lagging(d)) {
            /* Sampling would only find lag; wait for the replicas. */
            publish_progress(d);
            usleep(100000);
            continue;
        }
        uint64_t now = clock_mono_us();
        if ((modes & MODE_SCAN) && !scan_done && now >= d->d_scan_idle_until) {
            if (d->d_cycle_due) {
                d->d_cycle_due = 0;
                cycle_start(d);
            }
            int rc = scan_step(d, d->d_p, &d->d_pahead, &d->d_cursor, -1);
            busy++;
            if (rc == 1) {
                cycle_end(d);
                if (d->d_o.one_pass) {
                    scan_done = 1;
                } else {
                    d->d_scan_idle_until = rest_until(d->d_cycle_start_us, d->d_cycle_found);
                    d->d_cycle_due = 1;
                }
                errors_in_row = 0;
            } else if (rc < 0) {
                fetch_drain(d);
                if (d->d_o.one_pass && ++errors_in_row >= 3) {
                    pthread_mutex_lock(&d->d_pmu);
                    d->d_prog.errors++;
                    snprintf(d->d_prog.error, sizeof(d->d_prog.error), "%s", rconn_errstr(d->d_p));
                    pthread_mutex_unlock(&d->d_pmu);
                    break;
                }
                usleep(100000);
            } else {
                errors_in_row = 0;
            }
        }
        /* In one pass the replica scans run beside the primary's: each
         * key is fetched from every node when the first scan returns it. */
        if ((modes & MODE_REPLICA_SCAN) && !rscan_done && cfg->nreplicas > 0) {
            struct rstate *rs = &d->d_rs[rscan_rep];
            if (now >= rs->rs_idle_until) {
                if (!rs->rs_cursor && !rs->rs_cycle_start_us) {
                    rs->rs_cycle_start_us = now;
                    if (d->d_o.one_pass)
                        replica_size_known(d, rs->rs_conn);
                }
                int rc = scan_step(d, rs->rs_conn, &rs->rs_ahead, &rs->rs_cursor, rscan_rep);
                busy++;
                if (rc == 1) {
                    rs->rs_idle_until = rest_until(rs->rs_cycle_start_us, rs->rs_cycle_found);
                    rs->rs_cycle_found = 0;
                    rs->rs_cycle_start_us = 0;
                    rs->rs_cycle_done = 1;
                    if (d->d_o.one_pass) {
                        rscan_done = 1;
                        for (int i = 0; i < cfg->nreplicas; i++)
                            rscan_done &= d->d_rs[i].rs_cycle_done;
                    }
                }
            }
            rscan_rep = (rscan_rep + 1) % cfg->nreplicas;
            if (d->d_o.one_pass)
                while (d->d_rs[rscan_rep].rs_cycle_done && !rscan_done)
                    rscan_rep = (rscan_rep + 1) % cfg->nreplicas;
        }
        if ((modes & MODE_RANDOM) && !d->d_o.one_pass && now >= d->d_random_idle_until) {
            d->d_random_idle_until = rest_until(now, (uint64_t)random_step(d, d->d_batch / 4 + 1));
            busy++;
        }
        publish_progress(d);
        if (d->d_o.one_pass && scan_done && rscan_done && !d->d_suspects)
            break;
        if (!busy)
            usleep(10000);
    }
    pthread_mutex_lock(&d->d_pmu);
    d->d_done = 1;
    pthread_cond_broadcast(&d->d_done_cv);
    pthread_mutex_unlock(&d->d_pmu);
    return NULL;
}

/* ------------------------------------------------------------ lifecycle */

/*
 * The room every engine of a check shares for the hashes of the keys it
 * fetched (one engine per db and shard run at once): 8 bytes a slot, at most
 * three quarters full, so about 1.9M keys in all; past that the replica scans
 * ask the primary.
 */
static struct seen_pool *seen_pool(void)
{
    static struct seen_pool pool = {SEEN_BYTES / sizeof(uint64_t)};
    return &pool;
}

/* A connection to one node; replicas of a Redis Cluster get READONLY so they answer reads. */
static struct rconn *node_conn(const struct config *cfg, const struct cfg_addr *a, struct rnode *n,
                               int db, int replica)
{
    struct rconn_opts o = {.user = cfg->redis_user,
                           .password = cfg->redis_password,
                           .db = db,
                           .readonly = replica && cfg->discovery == DISCOVERY_CLUSTER,
                           .connect_timeout_ms = cfg->connect_timeout,
                           .command_timeout_ms = cfg->command_timeout,
                           .backoff_max_ms = 2000};
    return rconn_new(a, &o, n);
}

/* Frees the engine's connections, random windows and fetch state (start-up failure and stop). */
static void release_conns(struct detect *d, int nrep)
{
    if (d->d_rs)
        for (int i = 0; i < nrep; i++) {
            rconn_free(d->d_rs[i].rs_conn);
            rconn_free(d->d_rs[i].rs_ahead.a_conn);
            free(d->d_rs[i].rs_win);
        }
    rconn_free(d->d_p);
    rconn_free(d->d_pahead.a_conn);
    fetch_free(d);
}

struct detect *detect_start(const struct detect_opts *o)
{
    struct detect *d = calloc(1, sizeof(*d));
    const struct config *cfg = o->cfg;
    int nrep = cfg->nreplicas;

    if (!d)
        return NULL;
    detect_metrics_init();
    d->d_o = *o;
    d->d_cfg = cfg;
    d->d_batch = 16;
    d->d_map = calloc(MAP_BUCKETS, sizeof(*d->d_map));
    d->d_rs = calloc((size_t)(nrep ? nrep : 1), sizeof(*d->d_rs));
    d->d_nb = nrep + 1;
    d->d_buckets = calloc((size_t)d->d_nb, sizeof(*d->d_buckets));
    d->d_wq = calloc(WATCH_MAX, sizeof(*d->d_wq));
    d->d_p = node_conn(cfg, &cfg->primary, o->primary, o->db, 0);
    if (o->one_pass)
        d->d_pahead.a_conn = node_conn(cfg, &cfg->primary, o->primary, o->db, 0);
    if (!d->d_map || !d->d_rs || !d->d_buckets || !d->d_wq || !d->d_p ||
        (o->one_pass && !d->d_pahead.a_conn))
        goto fail;
    if (o->one_pass) {
        seen_init(&d->d_seen, seen_pool());
        d->d_fetch[0] = node_conn(cfg, &cfg->primary, o->primary, o->db, 0);
        d->d_fslot = calloc(2, sizeof(*d->d_fslot));
        if (!d->d_fetch[0] || !d->d_fslot)
            goto fail;
    }
    for (int i = 0; i < nrep; i++) {
        d->d_rs[i].rs_conn = node_conn(cfg, &cfg->replicas[i].addr, &o->replicas[i], o->db, 1);
        if (o->one_pass)
            d->d_rs[i].rs_ahead.a_conn =
                node_conn(cfg, &cfg->replicas[i].addr, &o->replicas[i], o->db, 1);
        if (!d->d_rs[i].rs_conn || (o->one_pass && !d->d_rs[i].rs_ahead.a_conn))
            goto fail;
        if (o->one_pass) {
            d->d_fetch[1 + i] = node_conn(cfg, &cfg->replicas[i].addr, &o->replicas[i], o->db, 1);
            if (!d->d_fetch[1 + i])
                goto fail;
        }
        if (cfg->modes & MODE_RANDOM) {
            d->d_rs[i].rs_win = calloc((size_t)cfg->random_sample_window, 1);
            if (!d->d_rs[i].rs_win)
                goto fail;
        }
    }
    /* Every repair series exists from the start at 0, so rate() and alerts
     * on them have data before the first repair. */
    for (int i = 0; i < nrep; i++) {
        static const char *const outcomes[] = {"repaired", "failed", "skipped", "dry-run"};
        const char *strategy = repair_strategy_name(cfg, &cfg->replicas[i]);
        for (size_t k = 0; k < sizeof(outcomes) / sizeof(outcomes[0]); k++)
            metrics_series(m_repairs,
                           (const char *const[]){cfg->replicas[i].name, strategy, outcomes[k]});
    }
    for (int i = 0; i < d->d_nb; i++) {
        d->d_buckets[i] = bucket_get(i == 0 ? o->primary : &o->replicas[i - 1],
                                     (double)cfg->max_commands_per_sec * 0.2);
        if (!d->d_buckets[i])
            goto fail;
    }
    pthread_mutex_init(&d->d_wmu, NULL);
    pthread_mutex_init(&d->d_pmu, NULL);
    pthread_cond_init(&d->d_done_cv, NULL);
    pthread_mutex_init(&d->d_jmu, NULL);
    pthread_cond_init(&d->d_jcv, NULL);
    d->d_repair_last_us = clock_mono_us();
    d->d_win_sec = clock_mono_us() / 1000000u;
    if ((cfg->modes & MODE_WATCH) && !o->one_pass) {
        if (pthread_create(&d->d_wthr, NULL, watch_main, d) == 0)
            d->d_wthr_started = 1;
    }
    if (pthread_create(&d->d_thr, NULL, engine_main, d) != 0) {
        d->d_stop = 1;
        if (d->d_wthr_started)
            pthread_join(d->d_wthr, NULL);
        goto fail;
    }
    return d;
fail:
    log_errorx("detect: cannot start the detection engine (out of memory)");
    release_conns(d, nrep);
    free(d->d_wq);
    for (int i = 0; d->d_buckets && i < d->d_nb; i++)
        bucket_put(d->d_buckets[i]);
    free(d->d_buckets);
    free(d->d_rs);
    free(d->d_map);
    seen_free(&d->d_seen);
    scan_pg_free(&d->d_page);
    free(d);
    return NULL;
}

int detect_wait(struct detect *d)
{
    pthread_mutex_lock(&d->d_pmu);
    while (!d->d_done)
        pthread_cond_wait(&d->d_done_cv, &d->d_pmu);
    int errors = d->d_prog.errors;
    pthread_mutex_unlock(&d->d_pmu);
    return errors ? -1 : 0;
}

int detect_done(struct detect *d)
{
    return detect_done_within(d, 0);
}

int detect_done_within(struct detect *d, int timeout_ms)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until); /* the condition variable's clock */
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->d_pmu);
    while (!d->d_done && timeout_ms > 0)
        if (pthread_cond_timedwait(&d->d_done_cv, &d->d_pmu, &until) != 0)
            break; /* timed out (or failed: the caller asks again) */
    int done = d->d_done;
    pthread_mutex_unlock(&d->d_pmu);
    return done;
}

void detect_stop(struct detect *d)
{
    if (!d)
        return;
    d->d_stop = 1;
    pthread_join(d->d_thr, NULL);
    if (d->d_wthr_started)
        pthread_join(d->d_wthr, NULL);
    for (int i = 0; i < d->d_cfg->nreplicas; i++) /* its open divergences go with it */
        for (int k = 0; k < CMP_KIND_COUNT; k++)
            if (d->d_rs[i].rs_open[k])
                metric_add(d->d_rs[i].rs_open[k], -(double)d->d_rs[i].rs_open_n[k]);
    for (size_t i = 0; i < MAP_BUCKETS; i++) {
        struct div *v = d->d_map[i], *next;
        for (; v; v = next) {
            next = v->d_next;
            free(v->d_key);
            free(v);
        }
    }
    for (size_t i = 0; i < d->d_wq_len; i++)
        free(d->d_wq[(d->d_wq_head + i) % WATCH_MAX].key);
    release_conns(d, d->d_cfg->nreplicas);
    for (int i = 0; i < JOBS_MAX; i++)
        job_free(d->d_jobs[i]);
    pthread_mutex_destroy(&d->d_wmu);
    pthread_mutex_destroy(&d->d_pmu);
    pthread_cond_destroy(&d->d_done_cv);
    pthread_mutex_destroy(&d->d_jmu);
    pthread_cond_destroy(&d->d_jcv);
    free(d->d_wq);
    for (int i = 0; d->d_buckets && i < d->d_nb; i++)
        bucket_put(d->d_buckets[i]);
    free(d->d_buckets);
    free(d->d_rs);
    free(d->d_map);
    seen_free(&d->d_seen);
    scan_pg_free(&d->d_page);
    free(d);
}

void detect_metrics_summary(const struct detect_progress *sum)
{
    metric_set(metrics_series0(m_progress), sum->scan_progress);
    metric_set(metrics_series0(m_cycle_dur), sum->cycle_seconds);
    metric_set(metrics_series0(m_watch_on), sum->watch_enabled);
}

void detect_progress(struct detect *d, struct detect_progress *p)
{
    pthread_mutex_lock(&d->d_pmu);
    *p = d->d_prog;
    pthread_mutex_unlock(&d->d_pmu);
}
