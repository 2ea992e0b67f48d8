/*
 * store -- divergence history in SQLite: the write queue, the writer thread,
 * retention, and the queries.
 *
 * Threads and locks:
 *
 *   callers --put--> [ queue (sto_mu) ] --batch--> writer thread --> sto_wdb
 *   queries ----------------------------------------------------> sto_rdb
 *
 * sto_mu guards the queue, the lag windows and the health fields; it is only
 * ever held for list operations, never across SQLite calls, so a put never
 * waits for the disk. sto_dbmu guards the write connection (the writer thread
 * holds it for one transaction at a time; test and maintenance hooks take it
 * too). sto_rdmu guards the read connection. Lock order: sto_dbmu, then
 * sto_rdmu; sto_mu is never held while taking either.
 *
 * A batch that fails (disk full, read-only, locked, I/O error) stays with the
 * writer and is retried with backoff up to STORE_RETRY_MAX times, then dropped
 * and counted; meanwhile the queue keeps accepting (and, when full, dropping)
 * items, so memory stays bounded by STORE_QUEUE_MAX + STORE_BATCH_MAX items.
 */
#include "store.h"
#include "textenc.h"

#include "clock.h"
#include "log.h"
#include "schema.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#define STORE_QUEUE_MAX          10000
#define STORE_BATCH_MAX          1000
#define STORE_RETRY_MAX          5
#define STORE_BUSY_TIMEOUT_MS    5000
#define STORE_CLOSE_FLUSH_MS     5000
#define STORE_RETENTION_EVERY_MS 60000
#define STORE_RETENTION_BATCH    1000
#define STORE_LAG_WINDOW_MS      10000
#define STORE_LAG_SLOTS_MAX      1024
#define STORE_LOG_EVERY_MS       10000
#define STORE_ERR_MAX            256
#define NO_SLOT                  ((size_t)-1)

enum item_type { IT_DIVERGENCE, IT_REPAIR, IT_CYCLE, IT_EVENT, IT_LAG, IT_NODE };

/*
 * One queued write. Strings and the key are copied into it_buf, after the
 * struct, so an item is one allocation.
 */
struct item {
    struct item *it_prev, *it_next;
    uint64_t it_seq; /* enqueue order, from 1 */
    enum item_type it_type;
    size_t it_slot;     /* IT_LAG: its window in sto_slots, or NO_SLOT */
    int64_t it_written; /* wall ms at put time (updated_at) */
    union {
        struct store_divergence div;
        struct store_repair rep;
        struct store_cycle cyc;
        struct {
            int64_t ts;
            const char *type, *node, *detail;
        } ev;
        struct {
            const char *replica;
            int64_t ts; /* window start */
            double lag_ms;
            int64_t lag_bytes;
        } lag;
        struct {
            const char *name, *role, *addr, *kind;
        } node;
    } it_u;
    char it_buf[];
};

/* The current downsampling window of one replica. */
struct lag_slot {
    char *ls_replica;
    int64_t ls_window; /* start of the window, ms */
    double ls_max_ms;
    int64_t ls_max_bytes;
    struct item *ls_queued; /* this window's item while still in the queue */
};

enum { ST_DIV, ST_REPAIR, ST_CYCLE, ST_EVENT, ST_LAG, ST_NODE, NSTMT };

static const char *const store_sql[NSTMT] = {
    [ST_DIV] = "INSERT OR REPLACE INTO divergences(id, replica, key, db, kind, state, first_seen,"
               " confirmed_at, resolved_at, resolution, primary_digest, replica_digest,"
               " primary_ttl_ms, replica_ttl_ms, primary_offset, found_by, note, updated_at)"
               " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
               " ?17, ?18)",
    [ST_REPAIR] = "INSERT INTO repairs(divergence_id, replica, key, strategy, trigger, requested,"
                  " finished, outcome, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    [ST_CYCLE] = "INSERT INTO cycles(mode, started, finished, keys_checked, suspects, confirmed)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_EVENT] = "INSERT INTO events(ts, type, node, detail) VALUES (?1, ?2, ?3, ?4)",
    [ST_LAG] = "INSERT INTO lag_samples(replica, ts, lag_ms, lag_bytes) VALUES (?1, ?2, ?3, ?4)"
               " ON CONFLICT(replica, ts) DO UPDATE SET lag_ms = max(lag_ms, excluded.lag_ms),"
               " lag_bytes = max(lag_bytes, excluded.lag_bytes)",
    [ST_NODE] = "INSERT INTO nodes(name, role, addr, kind, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)"
                " ON CONFLICT(name) DO UPDATE SET role = excluded.role, addr = excluded.addr,"
                " kind = excluded.kind, updated_at = excluded.updated_at",
};

struct store {
    char *sto_path;
    int sto_readonly; /* opened by store_open_readonly: no writer */
    int sto_memory;   /* ":memory:" */
    long long sto_retention_ms;

    /* Write connection (sto_dbmu). */
    pthread_mutex_t sto_dbmu;
    sqlite3 *sto_wdb; /* NULL after a failure that needs a reopen */
    sqlite3_stmt *sto_stmt[NSTMT];
    dev_t sto_dev;
    ino_t sto_ino;

    /* Read connection (sto_rdmu). */
    pthread_mutex_t sto_rdmu;
    sqlite3 *sto_rdb;
    dev_t sto_rdev;
    ino_t sto_rino;

    /* Queue and writer state (sto_mu). */
    pthread_mutex_t sto_mu;
    pthread_cond_t sto_wake; /* the writer waits here */
    pthread_cond_t sto_done; /* flushers wait here */
    struct item *sto_head, *sto_tail;
    size_t sto_qlen, sto_nlag, sto_qmax;
    uint64_t sto_seq;          /* the next item's it_seq */
    uint64_t sto_inflight_min; /* lowest it_seq of the batch being written, 0 none */
    size_t sto_nbatch;         /* items in the batch being written */
    int sto_stop, sto_paused;
    int64_t sto_next_retention; /* monotonic ms */
    struct lag_slot *sto_slots;
    size_t sto_nslots;
    char sto_last_error[STORE_ERR_MAX];
    pthread_t sto_thread;
    int sto_thread_started;

    /* Writer-thread only: log rate limit. */
    int64_t sto_last_log;
    uint64_t sto_suppressed;
    uint64_t sto_dropped_logged;

    atomic_int sto_writable;
    atomic_uint_least64_t sto_errors;
    atomic_uint_least64_t sto_dropped;
    atomic_int_least64_t sto_next_id;
};

/* ---------------------------------------------------------------- helpers */

static int64_t mono_ms(void)
{
    return (int64_t)(clock_mono_us() / 1000u);
}

/* An absolute CLOCK_MONOTONIC time ms from now, for pthread_cond_timedwait. */
static struct timespec deadline_in(int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(ms / 1000);
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Initialises a condition variable that measures timeouts on CLOCK_MONOTONIC. */
static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

static size_t str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* Copies s (may be NULL) to *p, advancing it; returns the copy. */
static const char *arena_str(char **p, const char *s)
{
    char *r;
    size_t n;

    if (!s)
        return NULL;
    n = strlen(s) + 1;
    r = *p;
    memcpy(r, s, n);
    *p += n;
    return r;
}

/* Copies n bytes to *p, advancing it; the result is never NULL. */
static const void *arena_mem(char **p, const void *m, size_t n)
{
    char *r = *p;
    if (n)
        memcpy(r, m, n);
    *p += n;
    return r;
}

static void set_text(sqlite3_stmt *st, int i, const char *s)
{
    if (s)
        sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Binds v, or NULL when v is 0 ("not yet"). */
static void set_time(sqlite3_stmt *st, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void set_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    sqlite3_bind_blob64(st, i, p ? p : "", (sqlite3_uint64)n, SQLITE_STATIC);
}

static const char *nz(const char *s)
{
    return s ? s : "";
}

/* ---------------------------------------------------------------- the queue */

/*
 * Removes it from the queue (sto_mu held) and unhooks it from its lag window.
 * The caller frees or keeps it.
 */
static void queue_unlink(struct store *s, struct item *it)
{
    if (it->it_prev)
        it->it_prev->it_next = it->it_next;
    else
        s->sto_head = it->it_next;
    if (it->it_next)
        it->it_next->it_prev = it->it_prev;
    else
        s->sto_tail = it->it_prev;
    it->it_prev = it->it_next = NULL;
    s->sto_qlen--;
    if (it->it_type == IT_LAG) {
        s->sto_nlag--;
        if (it->it_slot != NO_SLOT && s->sto_slots[it->it_slot].ls_queued == it)
            s->sto_slots[it->it_slot].ls_queued = NULL;
        it->it_slot = NO_SLOT;
    }
}

/*
 * Makes room for one item (sto_mu held): while the queue is full, drops the
 * oldest lag sample, or, when there is none, the oldest item. Each drop is
 * counted. Wakes flushers, whose items may be among those dropped.
 */
static void queue_make_room(struct store *s)
{
    int dropped = 0;

    while (s->sto_qlen >= s->sto_qmax && s->sto_head) {
        struct item *victim = s->sto_head;
        if (s->sto_nlag)
            while (victim->it_type != IT_LAG)
                victim = victim->it_next;
        queue_unlink(s, victim);
        free(victim);
        atomic_fetch_add(&s->sto_dropped, 1);
        dropped = 1;
    }
    if (dropped)
        pthread_cond_broadcast(&s->sto_done);
}

/* Appends it to the queue (sto_mu held) and wakes the writer. */
static void queue_push(struct store *s, struct item *it)
{
    queue_make_room(s);
    it->it_seq = s->sto_seq++;
    it->it_prev = s->sto_tail;
    it->it_next = NULL;
    if (s->sto_tail)
        s->sto_tail->it_next = it;
    else
        s->sto_head = it;
    s->sto_tail = it;
    s->sto_qlen++;
    if (it->it_type == IT_LAG)
        s->sto_nlag++;
    pthread_cond_signal(&s->sto_wake);
}

/* Allocates a zeroed item with extra bytes of string space; NULL counts a drop. */
static struct item *item_new(struct store *s, enum item_type type, size_t extra)
{
    struct item *it = calloc(1, sizeof(*it) + extra);
    if (!it) {
        atomic_fetch_add(&s->sto_dropped, 1);
        return NULL;
    }
    it->it_type = type;
    it->it_slot = NO_SLOT;
    it->it_written = (int64_t)clock_wall_ms();
    return it;
}

/* Queues it, or frees it if this store takes no writes. */
static void enqueue(struct store *s, struct item *it)
{
    if (s->sto_readonly) {
        atomic_fetch_add(&s->sto_dropped, 1);
        free(it);
        return;
    }
    pthread_mutex_lock(&s->sto_mu);
    queue_push(s, it);
    pthread_mutex_unlock(&s->sto_mu);
}

/* ------------------------------------------------------------ connections */

/* Closes the write connection and its statements (sto_dbmu held). */
static void wdb_close(struct store *s)
{
    for (int i = 0; i < NSTMT; i++) {
        sqlite3_finalize(s->sto_stmt[i]);
        s->sto_stmt[i] = NULL;
    }
    if (s->sto_wdb)
        sqlite3_close(s->sto_wdb);
    s->sto_wdb = NULL;
}

/* Closes the read connection (sto_rdmu held). */
static void rdb_close(struct store *s)
{
    if (s->sto_rdb)
        sqlite3_close(s->sto_rdb);
    s->sto_rdb = NULL;
}

/* Runs one pragma or statement that returns nothing we need. */
static int exec_sql(sqlite3 *db, const char *sql, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", sql, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/*
 * Opens (creating if needed) the write connection (sto_dbmu held): WAL,
 * synchronous=NORMAL, busy_timeout, migrations, prepared statements, and the
 * file's identity for detecting its deletion. 0, or -1 with err.
 */
static int wdb_open(struct store *s, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    struct stat sb;
    int rc;

    rc = sqlite3_open_v2(s->sto_path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", s->sto_path,
                 db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    if (!s->sto_memory && exec_sql(db, "PRAGMA journal_mode=WAL", err, errlen) < 0)
        goto fail;
    if (exec_sql(db, "PRAGMA synchronous=NORMAL", err, errlen) < 0)
        goto fail;
    if (store_schema_migrate(db, s->sto_path, err, errlen) < 0)
        goto fail;
    s->sto_wdb = db;
    for (int i = 0; i < NSTMT; i++) {
        if (sqlite3_prepare_v3(db, store_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->sto_stmt[i],
                               NULL) != SQLITE_OK) {
            snprintf(err, errlen, "cannot prepare a statement: %s", sqlite3_errmsg(db));
            wdb_close(s);
            return -1;
        }
    }
    if (!s->sto_memory && stat(s->sto_path, &sb) == 0) {
        s->sto_dev = sb.st_dev;
        s->sto_ino = sb.st_ino;
    }
    return 0;

fail:
    sqlite3_close(db);
    return -1;
}

/*
 * Opens the read connection (sto_rdmu held). A file store's reader is
 * read-only; a ":memory:" store's reader is its own empty database. 0 or -1.
 */
static int rdb_open(struct store *s, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    struct stat sb;
    int version;

    if (s->sto_memory) {
        if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
            store_schema_migrate(db, s->sto_path, err, errlen) < 0) {
            if (db && !*err)
                snprintf(err, errlen, "%s", sqlite3_errmsg(db));
            sqlite3_close(db);
            return -1;
        }
        s->sto_rdb = db;
        return 0;
    }
    if (stat(s->sto_path, &sb) < 0) {
        snprintf(err, errlen, "%s: %s", s->sto_path, strerror(errno));
        return -1;
    }
    if (sqlite3_open_v2(s->sto_path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open %s: %s", s->sto_path,
                 db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    sqlite3_busy_timeout(db, STORE_BUSY_TIMEOUT_MS);
    if (store_schema_read_version(db, &version, err, errlen) < 0) {
        sqlite3_close(db);
        return -1;
    }
    if (version == 0) {
        snprintf(err, errlen, "%s is not a keydrift history database (no schema)", s->sto_path);
        sqlite3_close(db);
        return -1;
    }
    if (version > store_schema_version()) {
        snprintf(err, errlen,
                 "%s has schema version %d, newer than this keydrift understands (%d); "
                 "use a newer keydrift",
                 s->sto_path, version, store_schema_version());
        sqlite3_close(db);
        return -1;
    }
    s->sto_rdb = db;
    s->sto_rdev = sb.st_dev;
    s->sto_rino = sb.st_ino;
    return 0;
}

/*
 * Returns the read connection (sto_rdmu held), (re)opening it when it is
 * closed or the file at the path is no longer the one it has open. NULL with
 * err on failure.
 */
static sqlite3 *rdb_get(struct store *s, char *err, size_t errlen)
{
    struct stat sb;

    if (s->sto_rdb && !s->sto_memory &&
        (stat(s->sto_path, &sb) < 0 || sb.st_ino != s->sto_rino || sb.st_dev != s->sto_rdev))
        rdb_close(s);
    if (!s->sto_rdb && rdb_open(s, err, errlen) < 0)
        return NULL;
    return s->sto_rdb;
}

/* -------------------------------------------------------- writer: errors */

/*
 * Records a failed write: counts it, turns writable off, keeps the message
 * for store_last_error(), and logs it at most once per STORE_LOG_EVERY_MS
 * (saying how many similar ones were suppressed). Writer side only.
 */
static void writer_error(struct store *s, const char *what, const char *msg)
{
    int64_t now = mono_ms();

    atomic_fetch_add(&s->sto_errors, 1);
    atomic_store(&s->sto_writable, 0);
    pthread_mutex_lock(&s->sto_mu);
    snprintf(s->sto_last_error, sizeof(s->sto_last_error), "%s: %s", what, msg);
    pthread_mutex_unlock(&s->sto_mu);
    if (s->sto_last_log && now - s->sto_last_log < STORE_LOG_EVERY_MS) {
        s->sto_suppressed++;
        return;
    }
    log_warnx("history database %s: %s: %s (%" PRIu64 " similar errors suppressed); "
              "monitoring continues, history writes are queued and retried -- check free "
              "space and permissions",
              s->sto_path, what, msg, s->sto_suppressed);
    s->sto_last_log = now;
    s->sto_suppressed = 0;
}

/*
 * Whether a failure with this (extended) code means the connection itself
 * is unusable and must be reopened: I/O errors, a moved/deleted file, or a
 * connection that fell back to read-only because of file permissions (it
 * would stay read-only after they are fixed).
 */
static int needs_reopen(sqlite3 *db, int rc)
{
    int primary = rc & 0xff;

    if (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_CORRUPT ||
        primary == SQLITE_NOTADB)
        return 1;
    if (rc == SQLITE_READONLY_DBMOVED || rc == SQLITE_READONLY_CANTINIT ||
        rc == SQLITE_READONLY_RECOVERY || rc == SQLITE_READONLY_CANTLOCK ||
        rc == SQLITE_READONLY_DIRECTORY)
        return 1;
    return primary == SQLITE_READONLY && db && sqlite3_db_readonly(db, "main") == 1;
}

/*
 * Makes sure the write connection is open and still on the file at the path
 * (sto_dbmu held). A deleted or replaced file is noticed by comparing the
 * inode, and the database is recreated at the path. 0 or -1 (error logged).
 */
static int wdb_ensure(struct store *s)
{
    char err[STORE_ERR_MAX];
    struct stat sb;

    if (s->sto_wdb && !s->sto_memory &&
        (stat(s->sto_path, &sb) < 0 || sb.st_ino != s->sto_ino || sb.st_dev != s->sto_dev)) {
        int gone = stat(s->sto_path, &sb) < 0 && errno == ENOENT;
        log_warnx("history database %s was %s; creating it again (earlier history is lost)",
                  s->sto_path, gone ? "deleted" : "replaced");
        /* Reader first: the last connection to close is the one that cleans up. */
        pthread_mutex_lock(&s->sto_rdmu);
        rdb_close(s);
        pthread_mutex_unlock(&s->sto_rdmu);
        wdb_close(s);
        if (gone) {
            /*
             * SQLite does not checkpoint into a deleted file, so its -wal is
             * left behind; replayed into the new file it would corrupt it.
             */
            char side[4096];
            snprintf(side, sizeof(side), "%s-wal", s->sto_path);
            unlink(side);
            snprintf(side, sizeof(side), "%s-shm", s->sto_path);
            unlink(side);
        }
    }
    if (s->sto_wdb)
        return 0;
    err[0] = '\0';
    if (wdb_open(s, err, sizeof(err)) < 0) {
        writer_error(s, "reopen", err);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------- writer: batches */

/* Binds and runs one item's statement. Returns the SQLite result code. */
static int item_write(struct store *s, struct item *it)
{
    sqlite3_stmt *st;
    int rc;

    switch (it->it_type) {
    case IT_DIVERGENCE: {
        const struct store_divergence *d = &it->it_u.div;
        st = s->sto_stmt[ST_DIV];
        sqlite3_bind_int64(st, 1, d->id);
        sqlite3_bind_text(st, 2, nz(d->replica), -1, SQLITE_STATIC);
        set_blob(st, 3, d->key, d->keylen);
        sqlite3_bind_int(st, 4, d->db);
        sqlite3_bind_text(st, 5, nz(d->kind), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, nz(d->state), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, d->first_seen);
        set_time(st, 8, d->confirmed_at);
        set_time(st, 9, d->resolved_at);
        set_text(st, 10, d->resolution);
        sqlite3_bind_int64(st, 11, (sqlite3_int64)d->primary_digest);
        sqlite3_bind_int64(st, 12, (sqlite3_int64)d->replica_digest);
        sqlite3_bind_int64(st, 13, d->primary_ttl_ms);
        sqlite3_bind_int64(st, 14, d->replica_ttl_ms);
        sqlite3_bind_int64(st, 15, d->primary_offset);
        set_text(st, 16, d->found_by);
        set_text(st, 17, d->note);
        sqlite3_bind_int64(st, 18, it->it_written);
        break;
    }
    case IT_REPAIR: {
        const struct store_repair *r = &it->it_u.rep;
        st = s->sto_stmt[ST_REPAIR];
        sqlite3_bind_int64(st, 1, r->divergence_id);
        sqlite3_bind_text(st, 2, nz(r->replica), -1, SQLITE_STATIC);
        set_blob(st, 3, r->key, r->keylen);
        set_text(st, 4, r->strategy);
        set_text(st, 5, r->trigger);
        sqlite3_bind_int64(st, 6, r->requested);
        set_time(st, 7, r->finished);
        set_text(st, 8, r->outcome);
        set_text(st, 9, r->error);
        break;
    }
    case IT_CYCLE: {
        const struct store_cycle *c = &it->it_u.cyc;
        st = s->sto_stmt[ST_CYCLE];
        sqlite3_bind_text(st, 1, nz(c->mode), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, c->started);
        sqlite3_bind_int64(st, 3, c->finished);
        sqlite3_bind_int64(st, 4, c->keys_checked);
        sqlite3_bind_int64(st, 5, c->suspects);
        sqlite3_bind_int64(st, 6, c->confirmed);
        break;
    }
    case IT_EVENT:
        st = s->sto_stmt[ST_EVENT];
        sqlite3_bind_int64(st, 1, it->it_u.ev.ts);
        sqlite3_bind_text(st, 2, nz(it->it_u.ev.type), -1, SQLITE_STATIC);
        set_text(st, 3, it->it_u.ev.node);
        set_text(st, 4, it->it_u.ev.detail);
        break;
    case IT_LAG:
        st = s->sto_stmt[ST_LAG];
        sqlite3_bind_text(st, 1, nz(it->it_u.lag.replica), -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, it->it_u.lag.ts);
        sqlite3_bind_double(st, 3, it->it_u.lag.lag_ms);
        sqlite3_bind_int64(st, 4, it->it_u.lag.lag_bytes);
        break;
    case IT_NODE:
        st = s->sto_stmt[ST_NODE];
        sqlite3_bind_text(st, 1, nz(it->it_u.node.name), -1, SQLITE_STATIC);
        set_text(st, 2, it->it_u.node.role);
        set_text(st, 3, it->it_u.node.addr);
        set_text(st, 4, it->it_u.node.kind);
        sqlite3_bind_int64(st, 5, it->it_written);
        break;
    default:
        return SQLITE_MISUSE;
    }
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? SQLITE_OK : sqlite3_extended_errcode(s->sto_wdb);
}

/*
 * Writes a batch (a list linked by it_next) in one transaction. An item that
 * the database rejects on its own (a constraint, a too-big value) is skipped
 * and counted as dropped rather than failing its neighbours. Returns 0 when
 * committed, -1 when the whole batch must be retried (error recorded).
 */
static int batch_write(struct store *s, struct item *batch)
{
    int rc;

    pthread_mutex_lock(&s->sto_dbmu);
    if (wdb_ensure(s) < 0) {
        pthread_mutex_unlock(&s->sto_dbmu);
        return -1;
    }
    rc = sqlite3_exec(s->sto_wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(s->sto_wdb);
        goto fail;
    }
    for (struct item *it = batch; it; it = it->it_next) {
        rc = item_write(s, it);
        if (rc == SQLITE_OK)
            continue;
        int primary = rc & 0xff;
        if (primary == SQLITE_CONSTRAINT || primary == SQLITE_TOOBIG ||
            primary == SQLITE_MISMATCH || primary == SQLITE_RANGE) {
            atomic_fetch_add(&s->sto_dropped, 1);
            log_warnx("history database %s: a write was rejected and dropped: %s", s->sto_path,
                      sqlite3_errmsg(s->sto_wdb));
            continue;
        }
        goto fail_rollback;
    }
    rc = sqlite3_exec(s->sto_wdb, "COMMIT", NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        rc = sqlite3_extended_errcode(s->sto_wdb);
        goto fail_rollback;
    }
    pthread_mutex_unlock(&s->sto_dbmu);
    return 0;

fail_rollback:
    writer_error(s, "write", sqlite3_errmsg(s->sto_wdb));
    if (!sqlite3_get_autocommit(s->sto_wdb))
        sqlite3_exec(s->sto_wdb, "ROLLBACK", NULL, NULL, NULL);
    goto reopen;
fail:
    writer_error(s, "begin", sqlite3_errmsg(s->sto_wdb));
reopen:
    if (needs_reopen(s->sto_wdb, rc))
        wdb_close(s);
    pthread_mutex_unlock(&s->sto_dbmu);
    return -1;
}

/* --------------------------------------------------------------- retention */

/* One bounded DELETE, or a group of them in one transaction. */
struct retention_step {
    const char *what;
    const char *sql[2]; /* ?1 = cutoff, ?2 = batch size; [1] may be NULL */
};

static const struct retention_step retention_steps[] = {
    {"lag_samples",
     {"DELETE FROM lag_samples WHERE rowid IN"
      " (SELECT rowid FROM lag_samples WHERE ts < ?1 LIMIT ?2)",
      NULL}},
    {"events",
     {"DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ?1 LIMIT ?2)", NULL}},
    {"cycles",
     {"DELETE FROM cycles WHERE id IN (SELECT id FROM cycles WHERE finished < ?1 LIMIT ?2)", NULL}},
    /* Finished divergences and their repairs go together. */
    {"divergences",
     {"DELETE FROM repairs WHERE divergence_id IN (SELECT id FROM divergences"
      " WHERE state IN ('resolved', 'cleared') AND coalesce(resolved_at, first_seen) < ?1"
      " ORDER BY id LIMIT ?2)",
      "DELETE FROM divergences WHERE id IN (SELECT id FROM divergences"
      " WHERE state IN ('resolved', 'cleared') AND coalesce(resolved_at, first_seen) < ?1"
      " ORDER BY id LIMIT ?2)"}},
    /* Repairs whose divergence is gone (or was never stored). */
    {"repairs",
     {"DELETE FROM repairs WHERE id IN (SELECT r.id FROM repairs r WHERE r.requested < ?1"
      " AND NOT EXISTS (SELECT 1 FROM divergences d WHERE d.id = r.divergence_id) LIMIT ?2)",
      NULL}},
};

#define NRETENTION ((int)(sizeof(retention_steps) / sizeof(retention_steps[0])))

/*
 * Runs one statement of a retention step (sto_dbmu held). Returns the number
 * of rows deleted, or -1 with the error recorded.
 */
static int retention_exec(struct store *s, const char *sql, int64_t cutoff)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->sto_wdb, sql, -1, &st, NULL);

    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, cutoff);
        sqlite3_bind_int(st, 2, STORE_RETENTION_BATCH);
        rc = sqlite3_step(st);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        rc = sqlite3_extended_errcode(s->sto_wdb);
        writer_error(s, "retention", sqlite3_errmsg(s->sto_wdb));
        if (needs_reopen(s->sto_wdb, rc))
            wdb_close(s);
        return -1;
    }
    return sqlite3_changes(s->sto_wdb);
}

/*
 * One pass of bounded deletes: at most STORE_RETENTION_BATCH rows from each
 * table, each table in its own short transaction, so the write lock is never
 * held long. Adds the rows deleted to *deleted and the transactions to
 * *batches. Returns 1 if a table may have more to delete, 0 if done, -1 on
 * error.
 */
static int retention_pass(struct store *s, int64_t now_ms, uint64_t *deleted, int *batches)
{
    int64_t cutoff = now_ms - s->sto_retention_ms;
    int more = 0;

    pthread_mutex_lock(&s->sto_dbmu);
    if (wdb_ensure(s) < 0) {
        pthread_mutex_unlock(&s->sto_dbmu);
        return -1;
    }
    for (int i = 0; i < NRETENTION; i++) {
        const struct retention_step *rs = &retention_steps[i];
        int n, n0 = 0;

        if (rs->sql[1]) {
            if (sqlite3_exec(s->sto_wdb, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
                writer_error(s, "retention", sqlite3_errmsg(s->sto_wdb));
                pthread_mutex_unlock(&s->sto_dbmu);
                return -1;
            }
            n0 = retention_exec(s, rs->sql[0], cutoff);
            n = n0 < 0 ? -1 : retention_exec(s, rs->sql[1], cutoff);
            if (n < 0 || sqlite3_exec(s->sto_wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
                if (n >= 0)
                    writer_error(s, "retention", sqlite3_errmsg(s->sto_wdb));
                if (s->sto_wdb && !sqlite3_get_autocommit(s->sto_wdb))
                    sqlite3_exec(s->sto_wdb, "ROLLBACK", NULL, NULL, NULL);
                pthread_mutex_unlock(&s->sto_dbmu);
                return -1;
            }
        } else {
            n = retention_exec(s, rs->sql[0], cutoff);
            if (n < 0) {
                pthread_mutex_unlock(&s->sto_dbmu);
                return -1;
            }
        }
        if (n + n0 > 0) {
            *deleted += (uint64_t)(n + n0);
            (*batches)++;
        }
        if (n >= STORE_RETENTION_BATCH)
            more = 1;
    }
    pthread_mutex_unlock(&s->sto_dbmu);
    return more;
}

int store_run_retention(struct store *s, int64_t now_ms, uint64_t *deleted, int *batches)
{
    uint64_t d = 0;
    int b = 0, rc;

    if (deleted)
        *deleted = 0;
    if (batches)
        *batches = 0;
    if (!s || s->sto_readonly)
        return -1;
    if (s->sto_retention_ms <= 0)
        return 0;
    while ((rc = retention_pass(s, now_ms, &d, &b)) == 1)
        ;
    if (deleted)
        *deleted = d;
    if (batches)
        *batches = b;
    return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------ writer thread */

/* Frees a detached batch; counts its items as dropped when drop is set. */
static void batch_free(struct store *s, struct item *batch, int drop)
{
    while (batch) {
        struct item *next = batch->it_next;
        if (drop)
            atomic_fetch_add(&s->sto_dropped, 1);
        free(batch);
        batch = next;
    }
}

/*
 * The writer thread. Takes up to STORE_BATCH_MAX queued items, writes them in
 * one transaction, and repeats; a failed batch is retried with backoff (200
 * ms, doubling) until STORE_RETRY_MAX attempts failed, and then dropped. Every
 * STORE_RETENTION_EVERY_MS it runs retention, one bounded pass per loop so
 * queued writes are interleaved. On stop it drains the queue, unless a write
 * fails, in which case what remains is dropped.
 */
static void *writer_main(void *arg)
{
    struct store *s = arg;
    struct item *batch = NULL;
    int tries = 0, retention_more = 1;

    pthread_mutex_lock(&s->sto_mu);
    for (;;) {
        int64_t now = mono_ms();
        if (!retention_more && s->sto_retention_ms > 0 && now >= s->sto_next_retention)
            retention_more = 1;
        if (!batch && !s->sto_stop && (s->sto_paused || !s->sto_head) && !retention_more) {
            int64_t wait = s->sto_next_retention - now;
            struct timespec ts = deadline_in(wait > 0 ? wait : 1);
            pthread_cond_timedwait(&s->sto_wake, &s->sto_mu, &ts);
            continue;
        }
        if (s->sto_stop && !batch && !s->sto_head)
            break;
        if (!batch && s->sto_head && (!s->sto_paused || s->sto_stop)) {
            struct item *tail = NULL;
            for (s->sto_nbatch = 0; s->sto_nbatch < STORE_BATCH_MAX && s->sto_head;
                 s->sto_nbatch++) {
                struct item *it = s->sto_head;
                queue_unlink(s, it);
                if (tail)
                    tail->it_next = it;
                else
                    batch = it;
                it->it_prev = tail;
                tail = it;
            }
            s->sto_inflight_min = batch->it_seq;
            tries = 0;
        }
        int paused = s->sto_paused && !s->sto_stop;
        pthread_mutex_unlock(&s->sto_mu);

        int failed = 0;
        if (batch)
            failed = batch_write(s, batch) < 0;
        if (retention_more && !failed && !paused) {
            uint64_t d = 0;
            int b = 0, rc;
            rc = s->sto_retention_ms > 0 ? retention_pass(s, (int64_t)clock_wall_ms(), &d, &b) : 0;
            if (rc <= 0) {
                retention_more = 0;
                s->sto_next_retention = mono_ms() + STORE_RETENTION_EVERY_MS;
            }
            failed = rc < 0;
        }

        pthread_mutex_lock(&s->sto_mu);
        if (!failed)
            atomic_store(&s->sto_writable, 1);
        /* Written, or given up on (its items counted as dropped). */
        if (batch && (!failed || ++tries >= STORE_RETRY_MAX || s->sto_stop)) {
            batch_free(s, batch, failed);
            batch = NULL;
            s->sto_inflight_min = 0;
            s->sto_nbatch = 0;
        }
        if (failed && s->sto_stop) {
            /* Closing and the disk refuses: give up on what is left. */
            while (s->sto_head) {
                struct item *it = s->sto_head;
                queue_unlink(s, it);
                batch_free(s, it, 1);
            }
        }
        pthread_cond_broadcast(&s->sto_done);
        if (atomic_load(&s->sto_dropped) != s->sto_dropped_logged &&
            mono_ms() - s->sto_last_log >= STORE_LOG_EVERY_MS) {
            s->sto_dropped_logged = atomic_load(&s->sto_dropped);
            s->sto_last_log = mono_ms();
            log_warnx("history database %s: %" PRIu64 " writes dropped so far (queue full or "
                      "retries exhausted)",
                      s->sto_path, s->sto_dropped_logged);
        }
        if (failed) {
            /* Puts signal sto_wake too; only stop cuts the backoff short. */
            int64_t until = mono_ms() + (100LL << (tries < 6 ? tries : 5));
            while (!s->sto_stop && mono_ms() < until) {
                struct timespec ts = deadline_in(until - mono_ms());
                pthread_cond_timedwait(&s->sto_wake, &s->sto_mu, &ts);
            }
        }
    }
    pthread_cond_broadcast(&s->sto_done);
    pthread_mutex_unlock(&s->sto_mu);
    return NULL;
}

/* --------------------------------------------------------------- open/close */

/* Allocates a store with its locks; NULL when out of memory. */
static struct store *store_alloc(const char *path)
{
    struct store *s = calloc(1, sizeof(*s));
    if (!s || !(s->sto_path = strdup(path))) {
        free(s);
        return NULL;
    }
    s->sto_memory = strcmp(path, ":memory:") == 0;
    s->sto_qmax = STORE_QUEUE_MAX;
    s->sto_seq = 1;
    pthread_mutex_init(&s->sto_mu, NULL);
    pthread_mutex_init(&s->sto_dbmu, NULL);
    pthread_mutex_init(&s->sto_rdmu, NULL);
    cond_init_mono(&s->sto_wake);
    cond_init_mono(&s->sto_done);
    atomic_init(&s->sto_writable, 0);
    atomic_init(&s->sto_errors, 0);
    atomic_init(&s->sto_dropped, 0);
    atomic_init(&s->sto_next_id, 1);
    return s;
}

/* Frees everything a store owns; its thread must have stopped. */
static void store_free(struct store *s)
{
    while (s->sto_head) {
        struct item *it = s->sto_head;
        queue_unlink(s, it);
        free(it);
    }
    wdb_close(s);
    rdb_close(s);
    for (size_t i = 0; i < s->sto_nslots; i++)
        free(s->sto_slots[i].ls_replica);
    free(s->sto_slots);
    pthread_mutex_destroy(&s->sto_mu);
    pthread_mutex_destroy(&s->sto_dbmu);
    pthread_mutex_destroy(&s->sto_rdmu);
    pthread_cond_destroy(&s->sto_wake);
    pthread_cond_destroy(&s->sto_done);
    free(s->sto_path);
    free(s);
}

/* Reads MAX(id) so store_next_id() continues after what is stored. */
static int64_t max_divergence_id(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    int64_t id = 0;

    if (sqlite3_prepare_v2(db, "SELECT coalesce(max(id), 0) FROM divergences", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return id;
}

struct store *store_open(const char *path, long long retention_ms, char *err, size_t errlen)
{
    struct store *s;

    if (!path || !*path) {
        snprintf(err, errlen, "no history database path");
        return NULL;
    }
    if (!(s = store_alloc(path))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->sto_retention_ms = retention_ms;
    err[0] = '\0';
    if (wdb_open(s, err, errlen) < 0) {
        store_free(s);
        return NULL;
    }
    atomic_store(&s->sto_next_id, max_divergence_id(s->sto_wdb) + 1);
    atomic_store(&s->sto_writable, 1);
    s->sto_next_retention = mono_ms() + STORE_RETENTION_EVERY_MS;
    if (pthread_create(&s->sto_thread, NULL, writer_main, s) != 0) {
        snprintf(err, errlen, "cannot start the history writer thread");
        store_free(s);
        return NULL;
    }
    s->sto_thread_started = 1;
    return s;
}

struct store *store_open_readonly(const char *path, char *err, size_t errlen)
{
    struct store *s;
    struct stat sb;

    if (!path || !*path) {
        snprintf(err, errlen, "no history database path");
        return NULL;
    }
    if (stat(path, &sb) < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        return NULL;
    }
    if (!(s = store_alloc(path))) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->sto_readonly = 1;
    err[0] = '\0';
    if (rdb_open(s, err, errlen) < 0) {
        store_free(s);
        return NULL;
    }
    atomic_store(&s->sto_next_id, max_divergence_id(s->sto_rdb) + 1);
    return s;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    if (s->sto_thread_started) {
        store_flush(s, STORE_CLOSE_FLUSH_MS);
        pthread_mutex_lock(&s->sto_mu);
        s->sto_stop = 1;
        pthread_cond_broadcast(&s->sto_wake);
        pthread_mutex_unlock(&s->sto_mu);
        pthread_join(s->sto_thread, NULL);
    }
    store_free(s);
}

/* ------------------------------------------------------------------- puts */

int64_t store_next_id(struct store *s)
{
    return atomic_fetch_add(&s->sto_next_id, 1);
}

void store_put_divergence(struct store *s, const struct store_divergence *d)
{
    struct item *it;
    char *p;

    if (!s || !d)
        return;
    it = item_new(s, IT_DIVERGENCE,
                  str_size(d->replica) + d->keylen + str_size(d->kind) + str_size(d->state) +
                      str_size(d->resolution) + str_size(d->found_by) + str_size(d->note));
    if (!it)
        return;
    p = it->it_buf;
    it->it_u.div = *d;
    it->it_u.div.replica = arena_str(&p, d->replica);
    it->it_u.div.key = arena_mem(&p, d->key, d->keylen);
    it->it_u.div.kind = arena_str(&p, d->kind);
    it->it_u.div.state = arena_str(&p, d->state);
    it->it_u.div.resolution = arena_str(&p, d->resolution);
    it->it_u.div.found_by = arena_str(&p, d->found_by);
    it->it_u.div.note = arena_str(&p, d->note);
    enqueue(s, it);
}

void store_put_repair(struct store *s, const struct store_repair *r)
{
    struct item *it;
    char *p;

    if (!s || !r)
        return;
    it = item_new(s, IT_REPAIR,
                  str_size(r->replica) + r->keylen + str_size(r->strategy) + str_size(r->trigger) +
                      str_size(r->outcome) + str_size(r->error));
    if (!it)
        return;
    p = it->it_buf;
    it->it_u.rep = *r;
    it->it_u.rep.replica = arena_str(&p, r->replica);
    it->it_u.rep.key = arena_mem(&p, r->key, r->keylen);
    it->it_u.rep.strategy = arena_str(&p, r->strategy);
    it->it_u.rep.trigger = arena_str(&p, r->trigger);
    it->it_u.rep.outcome = arena_str(&p, r->outcome);
    it->it_u.rep.error = arena_str(&p, r->error);
    enqueue(s, it);
}

void store_put_cycle(struct store *s, const struct store_cycle *c)
{
    struct item *it;
    char *p;

    if (!s || !c || !(it = item_new(s, IT_CYCLE, str_size(c->mode))))
        return;
    p = it->it_buf;
    it->it_u.cyc = *c;
    it->it_u.cyc.mode = arena_str(&p, c->mode);
    enqueue(s, it);
}

void store_put_event(struct store *s, int64_t ts, const char *type, const char *node,
                     const char *detail)
{
    struct item *it;
    char *p;

    if (!s || !(it = item_new(s, IT_EVENT, str_size(type) + str_size(node) + str_size(detail))))
        return;
    p = it->it_buf;
    it->it_u.ev.ts = ts;
    it->it_u.ev.type = arena_str(&p, type);
    it->it_u.ev.node = arena_str(&p, node);
    it->it_u.ev.detail = arena_str(&p, detail);
    enqueue(s, it);
}

void store_put_node(struct store *s, const char *name, const char *role, const char *addr,
                    const char *kind)
{
    struct item *it;
    char *p;

    if (!s || !(it = item_new(s, IT_NODE,
                              str_size(name) + str_size(role) + str_size(addr) + str_size(kind))))
        return;
    p = it->it_buf;
    it->it_u.node.name = arena_str(&p, name);
    it->it_u.node.role = arena_str(&p, role);
    it->it_u.node.addr = arena_str(&p, addr);
    it->it_u.node.kind = arena_str(&p, kind);
    enqueue(s, it);
}

/*
 * Finds (or makes) the downsampling window of replica (sto_mu held). When
 * STORE_LAG_SLOTS_MAX replicas are tracked, the one idle longest is reused.
 * Returns its index, or NO_SLOT when out of memory.
 */
static size_t lag_slot_find(struct store *s, const char *replica)
{
    size_t i, oldest = 0;
    char *name;

    for (i = 0; i < s->sto_nslots; i++)
        if (!strcmp(s->sto_slots[i].ls_replica, replica))
            return i;
    if (!(name = strdup(replica)))
        return NO_SLOT;
    if (s->sto_nslots == STORE_LAG_SLOTS_MAX) {
        for (i = 1; i < s->sto_nslots; i++)
            if (s->sto_slots[i].ls_window < s->sto_slots[oldest].ls_window)
                oldest = i;
        struct lag_slot *ls = &s->sto_slots[oldest];
        if (ls->ls_queued)
            ls->ls_queued->it_slot = NO_SLOT;
        free(ls->ls_replica);
        memset(ls, 0, sizeof(*ls));
        ls->ls_replica = name;
        ls->ls_window = INT64_MIN;
        return oldest;
    }
    if (s->sto_nslots % 16 == 0) {
        struct lag_slot *n = realloc(s->sto_slots, (s->sto_nslots + 16) * sizeof(*n));
        if (!n) {
            free(name);
            return NO_SLOT;
        }
        s->sto_slots = n;
    }
    i = s->sto_nslots++;
    memset(&s->sto_slots[i], 0, sizeof(s->sto_slots[i]));
    s->sto_slots[i].ls_replica = name;
    s->sto_slots[i].ls_window = INT64_MIN;
    return i;
}

/*
 * Downsampling: samples fall into 10 s windows (ts rounded down); each
 * replica keeps one row per window holding the window's maximum. A sample
 * that does not raise the maximum costs nothing; one that does updates the
 * window's queued item in place, or, if the writer already took it, queues an
 * upsert that keeps the larger values.
 */
void store_put_lag(struct store *s, const char *replica, int64_t ts, double lag_ms,
                   int64_t lag_bytes)
{
    int64_t window;
    size_t slot;
    struct lag_slot *ls;
    struct item *it;
    char *p;

    if (!s || !replica || s->sto_readonly)
        return;
    window = ts - ((ts % STORE_LAG_WINDOW_MS) + STORE_LAG_WINDOW_MS) % STORE_LAG_WINDOW_MS;
    pthread_mutex_lock(&s->sto_mu);
    slot = lag_slot_find(s, replica);
    if (slot == NO_SLOT) {
        atomic_fetch_add(&s->sto_dropped, 1);
        pthread_mutex_unlock(&s->sto_mu);
        return;
    }
    ls = &s->sto_slots[slot];
    if (window == ls->ls_window) {
        if (lag_ms <= ls->ls_max_ms && lag_bytes <= ls->ls_max_bytes) {
            pthread_mutex_unlock(&s->sto_mu);
            return;
        }
        if (lag_ms > ls->ls_max_ms)
            ls->ls_max_ms = lag_ms;
        if (lag_bytes > ls->ls_max_bytes)
            ls->ls_max_bytes = lag_bytes;
        if (ls->ls_queued) {
            ls->ls_queued->it_u.lag.lag_ms = ls->ls_max_ms;
            ls->ls_queued->it_u.lag.lag_bytes = ls->ls_max_bytes;
            pthread_mutex_unlock(&s->sto_mu);
            return;
        }
    } else if (window > ls->ls_window) {
        if (ls->ls_queued) /* the old window's item stays queued as it is */
            ls->ls_queued->it_slot = NO_SLOT;
        ls->ls_queued = NULL;
        ls->ls_window = window;
        ls->ls_max_ms = lag_ms;
        ls->ls_max_bytes = lag_bytes;
    }
    /* A sample older than the current window is written as an upsert of its own. */
    it = calloc(1, sizeof(*it) + strlen(replica) + 1);
    if (!it) {
        atomic_fetch_add(&s->sto_dropped, 1);
        pthread_mutex_unlock(&s->sto_mu);
        return;
    }
    p = it->it_buf;
    it->it_type = IT_LAG;
    it->it_u.lag.replica = arena_str(&p, replica);
    it->it_u.lag.ts = window;
    if (window == ls->ls_window) {
        it->it_u.lag.lag_ms = ls->ls_max_ms;
        it->it_u.lag.lag_bytes = ls->ls_max_bytes;
    } else {
        it->it_u.lag.lag_ms = lag_ms;
        it->it_u.lag.lag_bytes = lag_bytes;
    }
    queue_push(s, it);
    /* queue_push may have dropped lag items to make room; link after it. */
    if (window == ls->ls_window) {
        it->it_slot = slot;
        ls->ls_queued = it;
    } else {
        it->it_slot = NO_SLOT;
    }
    pthread_mutex_unlock(&s->sto_mu);
}

/* ------------------------------------------------------------------ health */

/* True when no item queued before target is still queued or being written. */
static int flushed(const struct store *s, uint64_t target)
{
    return (s->sto_inflight_min == 0 || s->sto_inflight_min >= target) &&
           (!s->sto_head || s->sto_head->it_seq >= target);
}

/*
 * Waits until every item queued before the call has been written or dropped.
 * Returns 0 if they were and nothing was dropped or failed meanwhile, -1
 * otherwise (timed out, dropped, or the store is not writable).
 */
int store_flush(struct store *s, long long timeout_ms)
{
    struct timespec ts = deadline_in(timeout_ms > 0 ? timeout_ms : 0);
    uint64_t target, dropped0, errors0;
    int rc = 0;

    if (!s || s->sto_readonly)
        return 0;
    dropped0 = atomic_load(&s->sto_dropped);
    errors0 = atomic_load(&s->sto_errors);
    pthread_mutex_lock(&s->sto_mu);
    target = s->sto_seq;
    pthread_cond_signal(&s->sto_wake);
    while (!flushed(s, target)) {
        if (!s->sto_thread_started ||
            pthread_cond_timedwait(&s->sto_done, &s->sto_mu, &ts) == ETIMEDOUT) {
            rc = flushed(s, target) ? 0 : -1;
            break;
        }
    }
    pthread_mutex_unlock(&s->sto_mu);
    if (rc == 0 && (atomic_load(&s->sto_dropped) != dropped0 ||
                    atomic_load(&s->sto_errors) != errors0 || !atomic_load(&s->sto_writable)))
        rc = -1;
    return rc;
}

int store_writable(const struct store *s)
{
    return s && !s->sto_readonly && atomic_load(&((struct store *)s)->sto_writable);
}

/*
 * The last write error, "" when none. The text is copied into a per-thread
 * buffer under the lock, so it stays valid until this thread calls again.
 */
const char *store_last_error(const struct store *s)
{
    static _Thread_local char copy[STORE_ERR_MAX];
    struct store *m = (struct store *)s;

    if (!s)
        return "";
    pthread_mutex_lock(&m->sto_mu);
    memcpy(copy, m->sto_last_error, sizeof(copy));
    pthread_mutex_unlock(&m->sto_mu);
    return copy;
}

uint64_t store_errors_total(const struct store *s)
{
    return s ? atomic_load(&((struct store *)s)->sto_errors) : 0;
}

uint64_t store_dropped_total(const struct store *s)
{
    return s ? atomic_load(&((struct store *)s)->sto_dropped) : 0;
}

size_t store_queue_length(const struct store *s)
{
    struct store *m = (struct store *)s;
    size_t n;

    if (!s)
        return 0;
    pthread_mutex_lock(&m->sto_mu);
    n = m->sto_qlen + m->sto_nbatch;
    pthread_mutex_unlock(&m->sto_mu);
    return n;
}

/* ------------------------------------------------------------- test hooks */

int store_debug_pragma(struct store *s, const char *pragma, char *err, size_t errlen)
{
    char sql[256];
    int rc = -1;

    snprintf(sql, sizeof(sql), "PRAGMA %s", pragma);
    pthread_mutex_lock(&s->sto_dbmu);
    if (s->sto_wdb)
        rc = exec_sql(s->sto_wdb, sql, err, errlen);
    else
        snprintf(err, errlen, "the write connection is closed");
    pthread_mutex_unlock(&s->sto_dbmu);
    return rc;
}

void store_debug_pause(struct store *s, int paused)
{
    pthread_mutex_lock(&s->sto_mu);
    s->sto_paused = paused;
    pthread_cond_broadcast(&s->sto_wake);
    pthread_mutex_unlock(&s->sto_mu);
}

/* ----------------------------------------------------------------- queries */

/* Column i as a JSON integer, or null when NULL. */
static json_t *col_int(sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    return json_integer((json_int_t)sqlite3_column_int64(st, i));
}

/* A text column as a JSON string (escaped if it is not UTF-8), or null. */
static json_t *col_text(sqlite3_stmt *st, int i)
{
    const char *t;
    json_t *j;
    char *esc;

    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    t = (const char *)sqlite3_column_text(st, i);
    if ((j = json_string(t ? t : "")))
        return j;
    if (!(esc = text_escape(t, (size_t)sqlite3_column_bytes(st, i))))
        return NULL;
    j = json_string(esc);
    free(esc);
    return j;
}

/* A 64-bit digest column as 16 hex digits, or null. */
static json_t *col_digest(sqlite3_stmt *st, int i)
{
    char hex[17];
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return json_null();
    snprintf(hex, sizeof(hex), "%016" PRIx64, (uint64_t)sqlite3_column_int64(st, i));
    return json_string(hex);
}

/* Sets "key" (escaped) and "key_base64" on o from a BLOB column. -1 on OOM. */
static int col_key(json_t *o, sqlite3_stmt *st, int i)
{
    const void *k = sqlite3_column_blob(st, i);
    size_t n = (size_t)sqlite3_column_bytes(st, i);
    char *esc = text_escape(k ? k : "", n);
    char *b64 = text_base64(k ? k : (const void *)"", n);
    int rc = -1;

    if (esc && b64) {
        json_object_set_new(o, "key", json_string(esc));
        json_object_set_new(o, "key_base64", json_string(b64));
        rc = 0;
    }
    free(esc);
    free(b64);
    return rc;
}

/*
 * Runs a prepared query (sto_rdmu held) and converts each row with row_fn.
 * Returns the array (new reference) or NULL with err.
 */
static json_t *query_rows(sqlite3 *db, sqlite3_stmt *st, json_t *(*row_fn)(sqlite3_stmt *),
                          char *err, size_t errlen)
{
    json_t *arr = json_array();
    int rc;

    while (arr && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = row_fn(st);
        if (!o || json_array_append_new(arr, o) < 0) {
            snprintf(err, errlen, "out of memory");
            json_decref(arr);
            return NULL;
        }
    }
    if (!arr) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "query failed: %s", sqlite3_errmsg(db));
        json_decref(arr);
        return NULL;
    }
    return arr;
}

#define DIV_COLUMNS                                                                                \
    "id, replica, key, db, kind, state, first_seen, confirmed_at, resolved_at, resolution,"        \
    " primary_digest, replica_digest, primary_ttl_ms, replica_ttl_ms, primary_offset,"             \
    " found_by, note"

/* One divergences row (DIV_COLUMNS order) as a JSON object. */
static json_t *divergence_row(sqlite3_stmt *st)
{
    json_t *o = json_object();

    if (!o)
        return NULL;
    json_object_set_new(o, "id", col_int(st, 0));
    json_object_set_new(o, "replica", col_text(st, 1));
    json_object_set_new(o, "db", col_int(st, 3));
    if (col_key(o, st, 2) < 0) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "kind", col_text(st, 4));
    json_object_set_new(o, "state", col_text(st, 5));
    json_object_set_new(o, "first_seen", col_int(st, 6));
    json_object_set_new(o, "confirmed_at", col_int(st, 7));
    json_object_set_new(o, "resolved_at", col_int(st, 8));
    json_object_set_new(o, "resolution", col_text(st, 9));
    json_object_set_new(o, "primary_digest", col_digest(st, 10));
    json_object_set_new(o, "replica_digest", col_digest(st, 11));
    json_object_set_new(o, "primary_ttl_ms", col_int(st, 12));
    json_object_set_new(o, "replica_ttl_ms", col_int(st, 13));
    json_object_set_new(o, "primary_offset", col_int(st, 14));
    json_object_set_new(o, "found_by", col_text(st, 15));
    json_object_set_new(o, "note", col_text(st, 16));
    return o;
}

/* The filter's limit: 100 when unset, at most 10000. */
static int clamp_limit(int limit)
{
    if (limit <= 0)
        return 100;
    return limit > 10000 ? 10000 : limit;
}

json_t *store_query_divergences(struct store *s, const struct store_filter *f, char *err,
                                size_t errlen)
{
    char sql[1024];
    size_t n;
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    json_t *arr = NULL;
    int open_state = f && f->state && !strcmp(f->state, "open");

    n = (size_t)snprintf(sql, sizeof(sql), "SELECT " DIV_COLUMNS " FROM divergences WHERE 1");
#define ADD(cond) n += (size_t)snprintf(sql + n, sizeof(sql) - n, "%s", cond)
    if (f && open_state)
        ADD(" AND state IN ('suspect', 'confirmed', 'repairing')");
    else if (f && f->state)
        ADD(" AND state = ?1");
    if (f && f->replica)
        ADD(" AND replica = ?2");
    if (f && f->kind)
        ADD(" AND kind = ?3");
    if (f && f->has_key)
        ADD(" AND key = ?4");
    if (f && f->since)
        ADD(" AND first_seen >= ?5");
    if (f && f->id)
        ADD(" AND id = ?6");
    ADD(" ORDER BY first_seen DESC, id DESC LIMIT ?7");
#undef ADD

    err[0] = '\0';
    pthread_mutex_lock(&s->sto_rdmu);
    if (!(db = rdb_get(s, err, errlen)))
        goto out;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (f && f->state && !open_state)
        sqlite3_bind_text(st, 1, f->state, -1, SQLITE_STATIC);
    if (f && f->replica)
        sqlite3_bind_text(st, 2, f->replica, -1, SQLITE_STATIC);
    if (f && f->kind)
        sqlite3_bind_text(st, 3, f->kind, -1, SQLITE_STATIC);
    if (f && f->has_key)
        set_blob(st, 4, f->key, f->keylen);
    if (f && f->since)
        sqlite3_bind_int64(st, 5, f->since);
    if (f && f->id)
        sqlite3_bind_int64(st, 6, f->id);
    sqlite3_bind_int(st, 7, clamp_limit(f ? f->limit : 0));
    arr = query_rows(db, st, divergence_row, err, errlen);
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->sto_rdmu);
    return arr;
}

/* One repairs row as a JSON object. */
static json_t *repair_row(sqlite3_stmt *st)
{
    json_t *o = json_object();

    if (!o)
        return NULL;
    json_object_set_new(o, "id", col_int(st, 0));
    json_object_set_new(o, "divergence_id", col_int(st, 1));
    json_object_set_new(o, "replica", col_text(st, 2));
    if (col_key(o, st, 3) < 0) {
        json_decref(o);
        return NULL;
    }
    json_object_set_new(o, "strategy", col_text(st, 4));
    json_object_set_new(o, "trigger", col_text(st, 5));
    json_object_set_new(o, "requested", col_int(st, 6));
    json_object_set_new(o, "finished", col_int(st, 7));
    json_object_set_new(o, "outcome", col_text(st, 8));
    json_object_set_new(o, "error", col_text(st, 9));
    return o;
}

json_t *store_query_repairs(struct store *s, int64_t divergence_id, int limit, char *err,
                            size_t errlen)
{
    const char *sql = divergence_id
                          ? "SELECT id, divergence_id, replica, key, strategy, trigger, requested,"
                            " finished, outcome, error FROM repairs WHERE divergence_id = ?1"
                            " ORDER BY requested DESC, id DESC LIMIT ?2"
                          : "SELECT id, divergence_id, replica, key, strategy, trigger, requested,"
                            " finished, outcome, error FROM repairs"
                            " ORDER BY requested DESC, id DESC LIMIT ?2";
    sqlite3 *db;
    sqlite3_stmt *st = NULL;
    json_t *arr = NULL;

    err[0] = '\0';
    pthread_mutex_lock(&s->sto_rdmu);
    if (!(db = rdb_get(s, err, errlen)))
        goto out;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "query failed: %s", sqlite3_errmsg(db));
        goto out;
    }
    if (divergence_id)
        sqlite3_bind_int64(st, 1, divergence_id);
    sqlite3_bind_int(st, 2, clamp_limit(limit));
    arr = query_rows(db, st, repair_row, err, errlen);
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->sto_rdmu);
    return arr;
}
