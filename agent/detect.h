/*
 * detect -- divergence detection: sampling, comparison, confirmation.
 *
 * One engine thread owns all detection state: it walks the primary with SCAN
 * (mode scan), each replica with SCAN (replica-scan: keys only there), draws
 * RANDOMKEY samples (random), and verifies keys the primary reports written
 * (watch: keyspace notifications, read by a second thread), all under one
 * per-node command budget. A mismatch is a suspect until it is re-checked
 * once the replica has caught up with the primary as of the first look; only
 * a mismatch that persists against an unchanged primary is confirmed.
 */
#ifndef KD_DETECT_H
#define KD_DETECT_H

#include <stddef.h>
#include <stdint.h>

#include "compare.h"
#include "config.h"
#include "rconn.h"

struct lag;
struct store;

/*
 * The life of a divergence (one key on one replica):
 *
 *   (mismatch) --> SUSPECT --(re-checked after the replica caught up:
 *                     |       still differs, primary unchanged)--> CONFIRMED
 *                     |                                              |   ^
 *                     +--(equal again, or the primary changed:       |   | (repair failed)
 *                     |   the key is re-sampled)--> CLEARED          v   |
 *                     |                                          REPAIRING
 *                     |                                              |
 *   CONFIRMED or REPAIRING --(equal again / deleted / expired)--> RESOLVED
 */
enum div_state { DIV_SUSPECT, DIV_CONFIRMED, DIV_REPAIRING, DIV_RESOLVED, DIV_CLEARED };

const char *detect_state_name(enum div_state s);

/* A confirmed divergence, as reported to callbacks and `keydrift check`. */
struct detect_finding {
    int64_t id;
    const char *replica;
    const char *key;
    size_t keylen;
    int db;
    enum cmp_kind kind;
    enum div_state state;
    const char *resolution; /* NULL while open */
    uint64_t primary_digest, replica_digest;
    long long primary_ttl_ms, replica_ttl_ms;
    const char *found_by;
    uint64_t first_seen_ms, confirmed_ms;
};

typedef void (*detect_finding_fn)(const struct detect_finding *f, void *arg);

struct detect_opts {
    const struct config *cfg;
    struct rnode *primary;
    struct rnode *replicas;         /* cfg->nreplicas of them */
    struct lag *lag;                /* for lag and catch-up markers; required */
    struct store *store;            /* may be NULL */
    int one_pass;                   /* keydrift check: one scan cycle, then settle and stop */
    int db;                         /* the logical database to check */
    detect_finding_fn on_confirmed; /* may be NULL; called on the engine thread */
    void *arg;
};

struct detect;

struct detect *detect_start(const struct detect_opts *o);
/* One pass: returns when the cycle is done and every suspect settled (check). */
int detect_wait(struct detect *d);
/* True once a one-pass run has finished. */
int detect_done(struct detect *d);
/* The same, waiting up to timeout_ms for it (and returning as soon as it is). */
int detect_done_within(struct detect *d, int timeout_ms);
void detect_stop(struct detect *d);

/* Progress for the API and `check`. */
struct detect_progress {
    uint64_t cycles;
    double scan_progress; /* 0..1 of the current cycle */
    uint64_t keys_checked;
    uint64_t keys_in_db; /* DBSIZE at the cycle's start */
    uint64_t suspects;   /* now */
    uint64_t open;       /* confirmed or repairing now */
    int watch_enabled;
    double cycle_seconds; /* the last completed scan cycle's duration, 0 before one */
    /* One pass: keys the replicas' scans returned so far, and how many
     * they hold (DBSIZE as each scan starts; keys_in_db before) */
    uint64_t replica_scanned, replica_keys;
    int errors; /* the primary could not be read */
    char error[160];
};
void detect_progress(struct detect *d, struct detect_progress *p);

/*
 * Sets the gauges that speak for detection as a whole
 * (keydrift_scan_progress_ratio, keydrift_scan_cycle_duration_seconds,
 * keydrift_watch_enabled) from a summary of every engine (see
 * topo_units_progress): one engine per db and shard, and each would
 * otherwise overwrite the others'.
 */
void detect_metrics_summary(const struct detect_progress *sum);

/*
 * The random sampler's window for the engine's replica rep: samples in it
 * and how many of them were divergent (0 and 0 without `random` mode).
 */
void detect_random_window(struct detect *d, int rep, long *n, long *divergent);

/*
 * The share k / n and its 95 % Wilson score interval [lo, hi]; for n <= 0,
 * 0 in [0, 1]. Pure.
 */
void detect_wilson(long n, long k, double *p, double *lo, double *hi);

/*
 * Sets keydrift_divergence_ratio{replica} from a window of n samples, of
 * which divergent were divergent (summed over every engine that samples the
 * replica: see topo_units_ratio). Nothing while n is 0.
 */
void detect_ratio_publish(const char *replica, long n, long divergent);

/*
 * Redis-style glob match over bytes (*, ?, [abc], [^a-z], \x), as SCAN MATCH
 * does, so exclude-pattern means what key-pattern means. Pure.
 */
int detect_glob_match(const char *pat, size_t plen, const char *s, size_t slen);

/* Registers the detection metric families (once). */
void detect_metrics_init(void);
void detect_metrics_reset(void);

#endif
