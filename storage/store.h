/*
 * store -- divergence history in SQLite.
 *
 * One database file in WAL mode (synchronous=NORMAL, busy_timeout), schema
 * version in PRAGMA user_version with forward migrations. Writes are queued
 * (a bounded queue; when full, the oldest low-value items -- lag samples --
 * are dropped first and counted) and applied in batched transactions by one
 * writer thread, so a slow or failing disk never stalls the caller. If the
 * file cannot be written (read-only, disk full, locked, deleted), the error is
 * logged, counted, and store_writable() turns 0 until a write succeeds again.
 * Reads (queries) use their own connection and may be called from any thread.
 *
 * Times are integer Unix milliseconds. Keys are BLOBs.
 */
#ifndef KD_STORE_H
#define KD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct store;

/*
 * Opens (creating and migrating) the database at path and starts the writer
 * thread. retention_ms: rows older than this are deleted in bounded batches.
 * Returns NULL with a reason in err. The database may be ":memory:" only for
 * tests of the writer (queries then see nothing).
 */
struct store *store_open(const char *path, long long retention_ms, char *err, size_t errlen);
/* Flushes the queue (bounded wait) and closes. */
void store_close(struct store *s);

/* A divergence row. id is assigned by the caller (store_next_id). */
struct store_divergence {
    int64_t id;
    const char *replica;
    const void *key;
    size_t keylen;
    int db;
    const char *kind;  /* missing | extra | type | value | ttl */
    const char *state; /* suspect | confirmed | repairing | resolved | cleared */
    int64_t first_seen;
    int64_t confirmed_at;   /* 0 = not yet */
    int64_t resolved_at;    /* 0 = not yet */
    const char *resolution; /* NULL, or repaired | self-healed | expired | deleted */
    uint64_t primary_digest;
    uint64_t replica_digest;
    int64_t primary_ttl_ms; /* -1 no expiry, -2 no key */
    int64_t replica_ttl_ms;
    int64_t primary_offset;
    const char *found_by; /* scan | replica-scan | random | watch | check */
    const char *note;     /* NULL, or why it is still open */
};

struct store_repair {
    int64_t divergence_id;
    const char *replica;
    const void *key;
    size_t keylen;
    const char *strategy; /* publish | write | rewrite */
    const char *trigger;  /* auto | api | cli */
    int64_t requested;
    int64_t finished;
    const char *outcome; /* repaired | failed | skipped | dry-run */
    const char *error;   /* NULL when none */
};

struct store_cycle {
    const char *mode;
    int64_t started, finished;
    int64_t keys_checked, suspects, confirmed;
};

/* A fresh divergence id, unique in this database (monotonic, thread-safe). */
int64_t store_next_id(struct store *s);

/* Queue writes; they never block. All strings and the key are copied. */
void store_put_divergence(struct store *s,
                          const struct store_divergence *d); /* insert or replace */
void store_put_repair(struct store *s, const struct store_repair *r);
void store_put_cycle(struct store *s, const struct store_cycle *c);
void store_put_event(struct store *s, int64_t ts, const char *type, const char *node,
                     const char *detail);
/* Lag samples are downsampled: at most one per replica every 10 s is kept. */
void store_put_lag(struct store *s, const char *replica, int64_t ts, double lag_ms,
                   int64_t lag_bytes);
void store_put_node(struct store *s, const char *name, const char *role, const char *addr,
                    const char *kind);

/* Waits (up to timeout_ms) until everything queued so far is written. 0 ok, -1 timed out. */
int store_flush(struct store *s, long long timeout_ms);

/* Health, for /readyz and metrics. */
int store_writable(const struct store *s);
const char *store_last_error(const struct store *s); /* "" when none; copy it out */
uint64_t store_errors_total(const struct store *s);
uint64_t store_dropped_total(const struct store *s);
/* Writes not in the database yet: queued, plus the batch being written. */
size_t store_queue_length(const struct store *s);

/* Query filter for divergences; zero/NULL fields do not filter. */
struct store_filter {
    const char *state; /* a state, or "open" = suspect|confirmed|repairing */
    const char *replica;
    const char *kind;
    const void *key;
    size_t keylen;
    int has_key;
    int64_t since; /* first_seen >= since (ms) */
    int64_t id;    /* one divergence */
    int limit;     /* default 100, max 10000 */
};

/*
 * Divergences matching f, newest first, as a JSON array of objects with the
 * fields of struct store_divergence (key as an escaped string "key" and as
 * "key_base64"; digests as 16-hex-digit strings). Returns a new reference, or
 * NULL on error (reason in err).
 */
json_t *store_query_divergences(struct store *s, const struct store_filter *f, char *err,
                                size_t errlen);
json_t *store_query_repairs(struct store *s, int64_t divergence_id, int limit, char *err,
                            size_t errlen);

/*
 * Opens a database read-only for `keydrift history` (no writer thread).
 * Returns NULL with a reason.
 */
struct store *store_open_readonly(const char *path, char *err, size_t errlen);

/*
 * Runs retention now, synchronously on the write connection, as if the time
 * were now_ms, until nothing older than the retention is left. Reports the
 * rows deleted and the transactions used. 0, or -1 on a database error.
 * The writer thread does the same every minute on its own.
 */
int store_run_retention(struct store *s, int64_t now_ms, uint64_t *deleted, int *batches);

/*
 * Test hooks. store_debug_pragma runs "PRAGMA <pragma>" on the write
 * connection (e.g. "max_page_count=20" to simulate a full disk, or
 * "query_only=1" a read-only one); a reopen after an I/O error forgets it.
 * store_debug_pause stops the writer from taking queued items (1) or lets it
 * go on (0).
 */
int store_debug_pragma(struct store *s, const char *pragma, char *err, size_t errlen);
void store_debug_pause(struct store *s, int paused);

#endif
