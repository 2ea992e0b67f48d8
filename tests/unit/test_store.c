/*
 * History store: schema and migrations, the write queue and writer thread,
 * downsampling, retention, failure handling (full, read-only, deleted file)
 * and the queries -- against real SQLite files in a fresh temp directory.
 *
 * The test store_fixture_for_integration writes a known database for
 * tests/integration/test_history.py when KEYDRIFT_STORE_FIXTURE=PATH is set
 * (run as `unit-tests store_fixture`); otherwise it does nothing.
 */
#include "clock.h"
#include "schema.h"
#include "store.h"
#include "textenc.h"
#include "unit.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#define DAY_MS (86400LL * 1000)

struct tdir {
    char dir[64];
    char path[128];
};

/* A fresh temp directory with a database path in it (not created). */
static void tdir_make(struct tdir *t)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/kd-store-XXXXXX");
    if (!mkdtemp(t->dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(t->path, sizeof(t->path), "%s/history.db", t->dir);
}

/* Removes the database, its WAL files and the directory. */
static void tdir_remove(struct tdir *t)
{
    char p[160];
    const char *suffix[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", t->path, suffix[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

/* Runs a query returning one integer on its own connection; -1 on error. */
static long long sql_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else
        fprintf(stderr, "  sql_int(%s): %s\n", sql, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Runs SQL on its own read-write connection. 0 or -1. */
static int sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    char *msg = NULL;
    int rc = -1;

    if (sqlite3_open(path, &db) == SQLITE_OK && sqlite3_exec(db, sql, NULL, NULL, &msg) == 0)
        rc = 0;
    else
        fprintf(stderr, "  sql_exec(%s): %s\n", sql, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_close(db);
    return rc;
}

/* Polls cond (an expression over s) for up to ms milliseconds. */
#define WAIT_FOR(cond, ms)                                                                         \
    do {                                                                                           \
        for (int w_ = 0; w_ < (ms) / 10 && !(cond); w_++)                                          \
            usleep(10000);                                                                         \
    } while (0)

/* A divergence with sensible defaults for the fields a test does not set. */
static struct store_divergence div_make(int64_t id, const char *replica, const void *key,
                                        size_t keylen, const char *kind, const char *state,
                                        int64_t first_seen)
{
    struct store_divergence d;
    memset(&d, 0, sizeof(d));
    d.id = id;
    d.replica = replica;
    d.key = key;
    d.keylen = keylen;
    d.kind = kind;
    d.state = state;
    d.first_seen = first_seen;
    d.primary_digest = 0x0123456789abcdefULL;
    d.replica_digest = 0xfedcba9876543210ULL;
    d.primary_ttl_ms = -1;
    d.replica_ttl_ms = -2;
    d.primary_offset = 12345;
    d.found_by = "scan";
    return d;
}

static struct store *open_ok(const char *path, long long retention)
{
    char err[256] = "";
    struct store *s = store_open(path, retention, err, sizeof(err));
    if (!s)
        fprintf(stderr, "  store_open(%s): %s\n", path, err);
    return s;
}

/* Queries with f and returns the array (caller decrefs); NULL reported. */
static json_t *query(struct store *s, const struct store_filter *f)
{
    char err[256];
    json_t *a = store_query_divergences(s, f, err, sizeof(err));
    if (!a)
        fprintf(stderr, "  query: %s\n", err);
    return a;
}

static size_t query_count(struct store *s, const struct store_filter *f)
{
    json_t *a = query(s, f);
    size_t n = a ? json_array_size(a) : (size_t)-1;
    json_decref(a);
    return n;
}

TEST(store_schema_created_with_version)
{
    struct tdir t;
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    CHECK(s != NULL);
    CHECK(store_writable(s) == 1);
    CHECK(store_flush(s, 2000) == 0);
    CHECK(sql_int(t.path, "PRAGMA user_version") == store_schema_version());
    CHECK(sql_int(t.path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                          " ('nodes', 'divergences', 'repairs', 'lag_samples', 'cycles',"
                          " 'events')") == 6);
    CHECK(sql_int(t.path, "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN"
                          " ('divergences_state', 'divergences_replica', 'divergences_first_seen',"
                          " 'divergences_key')") == 4);
    store_close(s);
    /* WAL is a property of the file. */
    {
        sqlite3 *db;
        sqlite3_stmt *st;
        sqlite3_open(t.path, &db);
        sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL);
        CHECK(sqlite3_step(st) == SQLITE_ROW);
        CHECK_STR((const char *)sqlite3_column_text(st, 0), "wal");
        sqlite3_finalize(st);
        sqlite3_close(db);
    }
    /* Reopening an up-to-date file changes nothing. */
    s = open_ok(t.path, 30 * DAY_MS);
    CHECK(s != NULL);
    store_close(s);
    CHECK(sql_int(t.path, "PRAGMA user_version") == store_schema_version());
    tdir_remove(&t);
}

TEST(store_refuses_newer_schema)
{
    struct tdir t;
    char err[512] = "";
    tdir_make(&t);
    CHECK(sql_exec(t.path, "CREATE TABLE future(x); PRAGMA user_version = 999;") == 0);
    CHECK(store_open(t.path, DAY_MS, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    CHECK(strstr(err, "999") != NULL);
    err[0] = '\0';
    CHECK(store_open_readonly(t.path, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "newer") != NULL);
    /* Untouched. */
    CHECK(sql_int(t.path, "PRAGMA user_version") == 999);
    CHECK(sql_int(t.path, "SELECT count(*) FROM sqlite_master WHERE name = 'divergences'") == 0);
    tdir_remove(&t);
}

TEST(store_migrates_unversioned_database)
{
    struct tdir t;
    char err[512] = "";
    tdir_make(&t);
    /* Version 0 with a table of someone else's: migrated in place, the table kept. */
    CHECK(sql_exec(t.path, "CREATE TABLE notes(x); INSERT INTO notes VALUES (1);") == 0);
    CHECK(store_open_readonly(t.path, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "not a keydrift history database") != NULL);
    struct store *s = open_ok(t.path, DAY_MS);
    CHECK(s != NULL);
    store_close(s);
    CHECK(sql_int(t.path, "PRAGMA user_version") == store_schema_version());
    CHECK(sql_int(t.path, "SELECT count(*) FROM notes") == 1);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 0);
    tdir_remove(&t);
}

TEST(store_open_errors)
{
    char err[512] = "";
    CHECK(store_open("/nonexistent-dir/x/history.db", DAY_MS, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "cannot open") != NULL);
    err[0] = '\0';
    CHECK(store_open_readonly("/nonexistent-dir/history.db", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "No such file") != NULL);
    err[0] = '\0';
    CHECK(store_open_readonly("/tmp", err, sizeof(err)) == NULL);
    CHECK(strstr(err, "not a regular file") != NULL);
}

TEST(store_divergence_round_trip_binary_keys)
{
    struct tdir t;
    static const char k_nul[] = {'a', '\0', 'b'};
    static const char k_ff[] = {'\xff', '\xfe', 'z'};
    static const char k_nl[] = "line\nbreak";
    static const char k_bs[] = "back\\slash\"q";
    int64_t now = (int64_t)clock_wall_ms();

    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    CHECK(s != NULL);
    struct store_divergence d =
        div_make(store_next_id(s), "cache-a", k_nul, 3, "value", "confirmed", now - 3000);
    d.confirmed_at = now - 1000;
    d.note = "still open: waiting for lag";
    d.primary_digest = UINT64_MAX;
    store_put_divergence(s, &d);
    d = div_make(store_next_id(s), "cache-a", k_ff, 3, "missing", "resolved", now - 2000);
    d.resolved_at = now;
    d.resolution = "repaired";
    store_put_divergence(s, &d);
    d = div_make(store_next_id(s), "replica-1", k_nl, strlen(k_nl), "ttl", "suspect", now - 1000);
    store_put_divergence(s, &d);
    d = div_make(store_next_id(s), "replica-1", k_bs, strlen(k_bs), "type", "suspect", now);
    store_put_divergence(s, &d);
    d = div_make(store_next_id(s), "replica-1", "", 0, "extra", "suspect", now - 500);
    store_put_divergence(s, &d);
    CHECK(store_flush(s, 2000) == 0);

    json_t *a = query(s, NULL);
    CHECK(a && json_array_size(a) == 5);
    /* Newest first. */
    json_t *o = json_array_get(a, 0);
    CHECK_STR(json_string_value(json_object_get(o, "key")), "back\\\\slash\"q");
    o = json_array_get(a, 4);
    CHECK(json_integer_value(json_object_get(o, "id")) == 1);
    CHECK_STR(json_string_value(json_object_get(o, "replica")), "cache-a");
    CHECK_STR(json_string_value(json_object_get(o, "key")), "a\\x00b");
    CHECK_STR(json_string_value(json_object_get(o, "key_base64")), "YQBi");
    CHECK_STR(json_string_value(json_object_get(o, "kind")), "value");
    CHECK_STR(json_string_value(json_object_get(o, "state")), "confirmed");
    CHECK(json_integer_value(json_object_get(o, "first_seen")) == now - 3000);
    CHECK(json_integer_value(json_object_get(o, "confirmed_at")) == now - 1000);
    CHECK(json_is_null(json_object_get(o, "resolved_at")));
    CHECK(json_is_null(json_object_get(o, "resolution")));
    CHECK_STR(json_string_value(json_object_get(o, "primary_digest")), "ffffffffffffffff");
    CHECK_STR(json_string_value(json_object_get(o, "replica_digest")), "fedcba9876543210");
    CHECK(json_integer_value(json_object_get(o, "primary_ttl_ms")) == -1);
    CHECK(json_integer_value(json_object_get(o, "replica_ttl_ms")) == -2);
    CHECK(json_integer_value(json_object_get(o, "primary_offset")) == 12345);
    CHECK(json_integer_value(json_object_get(o, "db")) == 0);
    CHECK_STR(json_string_value(json_object_get(o, "found_by")), "scan");
    CHECK_STR(json_string_value(json_object_get(o, "note")), "still open: waiting for lag");
    o = json_array_get(a, 3);
    CHECK_STR(json_string_value(json_object_get(o, "key")), "\\xff\\xfez");
    CHECK_STR(json_string_value(json_object_get(o, "key_base64")), "//56");
    CHECK_STR(json_string_value(json_object_get(o, "resolution")), "repaired");
    o = json_array_get(a, 2);
    CHECK_STR(json_string_value(json_object_get(o, "key")), "line\\x0abreak");
    o = json_array_get(a, 1);
    CHECK_STR(json_string_value(json_object_get(o, "key")), "");
    CHECK_STR(json_string_value(json_object_get(o, "key_base64")), "");
    json_decref(a);

    /* The key filter matches the exact bytes: "a\0b", not "a". */
    struct store_filter f = {.key = k_nul, .keylen = 3, .has_key = 1};
    CHECK(query_count(s, &f) == 1);
    f.keylen = 1;
    CHECK(query_count(s, &f) == 0);
    f.key = "";
    f.keylen = 0;
    CHECK(query_count(s, &f) == 1);
    store_close(s);

    /* And the stored column is a BLOB with the exact bytes. */
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences WHERE key = x'610062'"
                          " AND typeof(key) = 'blob'") == 1);
    CHECK(sql_int(t.path, "SELECT primary_digest FROM divergences WHERE id = 1") == -1);
    tdir_remove(&t);
}

TEST(store_query_filters)
{
    struct tdir t;
    int64_t now = (int64_t)clock_wall_ms();
    static const char *const states[] = {"suspect", "confirmed", "repairing", "resolved",
                                         "cleared"};
    static const char *const kinds[] = {"missing", "extra", "type", "value", "ttl"};

    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    CHECK(s != NULL);
    /* 50 rows: state and kind cycle by 5, replica alternates, one per minute back. */
    for (int i = 0; i < 50; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i % 10);
        struct store_divergence d =
            div_make(store_next_id(s), i % 2 ? "cache-a" : "replica-1", key, strlen(key),
                     kinds[(i / 5) % 5], states[i % 5], now - (int64_t)i * 60000);
        store_put_divergence(s, &d);
    }
    CHECK(store_flush(s, 2000) == 0);

    struct store_filter f = {0};
    CHECK(query_count(s, &f) == 50);
    f.state = "open";
    CHECK(query_count(s, &f) == 30);
    f.state = "resolved";
    CHECK(query_count(s, &f) == 10);
    f = (struct store_filter){.replica = "cache-a"};
    CHECK(query_count(s, &f) == 25);
    f = (struct store_filter){.kind = "ttl"};
    CHECK(query_count(s, &f) == 10);
    f = (struct store_filter){.since = now - 9 * 60000};
    CHECK(query_count(s, &f) == 10);
    f = (struct store_filter){.key = "k3", .keylen = 2, .has_key = 1};
    CHECK(query_count(s, &f) == 5);
    f = (struct store_filter){.limit = 7};
    CHECK(query_count(s, &f) == 7);
    f = (struct store_filter){.id = 17};
    json_t *a = query(s, &f);
    CHECK(a && json_array_size(a) == 1);
    CHECK(json_integer_value(json_object_get(json_array_get(a, 0), "id")) == 17);
    json_decref(a);
    /* Combined: open rows of cache-a in the last 20 minutes. */
    f = (struct store_filter){.state = "open", .replica = "cache-a", .since = now - 19 * 60000};
    a = query(s, &f);
    CHECK(a && json_array_size(a) == 6);
    for (size_t i = 0; a && i < json_array_size(a); i++) {
        json_t *o = json_array_get(a, i);
        const char *st = json_string_value(json_object_get(o, "state"));
        CHECK(!strcmp(st, "suspect") || !strcmp(st, "confirmed") || !strcmp(st, "repairing"));
        CHECK_STR(json_string_value(json_object_get(o, "replica")), "cache-a");
        if (i > 0)
            CHECK(json_integer_value(json_object_get(o, "first_seen")) <=
                  json_integer_value(json_object_get(json_array_get(a, i - 1), "first_seen")));
    }
    json_decref(a);
    /* The default limit is 100 and the maximum 10000. */
    for (int i = 0; i < 80; i++) {
        struct store_divergence d =
            div_make(store_next_id(s), "r", "x", 1, "value", "suspect", now - DAY_MS);
        store_put_divergence(s, &d);
    }
    CHECK(store_flush(s, 2000) == 0);
    f = (struct store_filter){0};
    CHECK(query_count(s, &f) == 100);
    f.limit = 1000000;
    CHECK(query_count(s, &f) == 130);
    store_close(s);
    tdir_remove(&t);
}

TEST(store_upsert_replaces_same_id)
{
    struct tdir t;
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    int64_t id = store_next_id(s);
    struct store_divergence d = div_make(id, "cache-a", "k", 1, "value", "suspect", now);
    store_put_divergence(s, &d);
    d.state = "confirmed";
    d.confirmed_at = now + 10;
    store_put_divergence(s, &d);
    d.state = "resolved";
    d.resolved_at = now + 20;
    d.resolution = "self-healed";
    store_put_divergence(s, &d);
    CHECK(store_flush(s, 2000) == 0);
    struct store_filter f = {.id = id};
    json_t *a = query(s, &f);
    CHECK(a && json_array_size(a) == 1);
    json_t *o = json_array_get(a, 0);
    CHECK_STR(json_string_value(json_object_get(o, "state")), "resolved");
    CHECK_STR(json_string_value(json_object_get(o, "resolution")), "self-healed");
    CHECK(json_integer_value(json_object_get(o, "confirmed_at")) == now + 10);
    json_decref(a);
    store_close(s);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 1);

    /* Ids continue after the largest stored one. */
    s = open_ok(t.path, 30 * DAY_MS);
    CHECK(store_next_id(s) == id + 1);
    CHECK(store_next_id(s) == id + 2);
    store_close(s);
    tdir_remove(&t);
}

TEST(store_repairs_recorded_and_queried)
{
    struct tdir t;
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    for (int i = 0; i < 3; i++) {
        struct store_repair r = {.divergence_id = 7,
                                 .replica = "cache-a",
                                 .key = "k\0z",
                                 .keylen = 3,
                                 .strategy = "publish",
                                 .trigger = "auto",
                                 .requested = now + i,
                                 .finished = i == 2 ? 0 : now + i + 5,
                                 .outcome = i == 0 ? "failed" : "repaired",
                                 .error = i == 0 ? "timeout" : NULL};
        store_put_repair(s, &r);
    }
    struct store_repair other = {.divergence_id = 8,
                                 .replica = "replica-1",
                                 .key = "q",
                                 .keylen = 1,
                                 .strategy = "rewrite",
                                 .trigger = "api",
                                 .requested = now,
                                 .outcome = "dry-run"};
    store_put_repair(s, &other);
    CHECK(store_flush(s, 2000) == 0);

    char err[256];
    json_t *a = store_query_repairs(s, 7, 0, err, sizeof(err));
    CHECK(a && json_array_size(a) == 3);
    json_t *o = json_array_get(a, 0); /* newest first */
    CHECK(json_integer_value(json_object_get(o, "requested")) == now + 2);
    CHECK(json_is_null(json_object_get(o, "finished")));
    CHECK_STR(json_string_value(json_object_get(o, "key")), "k\\x00z");
    CHECK_STR(json_string_value(json_object_get(o, "strategy")), "publish");
    o = json_array_get(a, 2);
    CHECK_STR(json_string_value(json_object_get(o, "outcome")), "failed");
    CHECK_STR(json_string_value(json_object_get(o, "error")), "timeout");
    CHECK(json_integer_value(json_object_get(o, "divergence_id")) == 7);
    json_decref(a);
    a = store_query_repairs(s, 0, 0, err, sizeof(err));
    CHECK(a && json_array_size(a) == 4);
    json_decref(a);
    a = store_query_repairs(s, 0, 2, err, sizeof(err));
    CHECK(a && json_array_size(a) == 2);
    json_decref(a);
    store_close(s);
    tdir_remove(&t);
}

TEST(store_events_cycles_nodes)
{
    struct tdir t;
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    store_put_event(s, now, "link-down", "replica-1", "master_link_status down");
    store_put_event(s, now + 1, "config-reload", NULL, NULL);
    struct store_cycle c = {"scan", now - 5000, now, 1000, 3, 1};
    store_put_cycle(s, &c);
    store_put_node(s, "replica-1", "replica", "127.0.0.1:6381", "native");
    store_put_node(s, "replica-1", "primary", "127.0.0.1:6381", "native"); /* failover */
    CHECK(store_flush(s, 2000) == 0);
    store_close(s);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events") == 2);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events WHERE node IS NULL") == 1);
    CHECK(sql_int(t.path, "SELECT keys_checked + suspects + confirmed FROM cycles") == 1004);
    CHECK(sql_int(t.path, "SELECT count(*) FROM nodes") == 1);
    CHECK(sql_int(t.path, "SELECT count(*) FROM nodes WHERE role = 'primary'") == 1);
    tdir_remove(&t);
}

TEST(store_lag_downsampled_keeps_window_max)
{
    struct tdir t;
    int64_t base = ((int64_t)clock_wall_ms() / 10000) * 10000;
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    /* Three windows of 100 ms polls; window w peaks at 500 + w in its middle. */
    for (int w = 0; w < 3; w++)
        for (int i = 0; i < 100; i++) {
            double lag = (i == 50) ? 500.0 + w : (double)i;
            store_put_lag(s, "cache-a", base + w * 10000 + i * 100, lag, i * 10);
        }
    store_put_lag(s, "replica-1", base, 7.5, 100);
    CHECK(store_flush(s, 2000) == 0);
    CHECK(sql_int(s ? t.path : "", "SELECT count(*) FROM lag_samples") == 4);
    CHECK(sql_int(t.path, "SELECT count(*) FROM lag_samples WHERE replica = 'cache-a'") == 3);
    CHECK(sql_int(t.path, "SELECT sum(lag_ms) FROM lag_samples WHERE replica = 'cache-a'") == 1503);
    CHECK(sql_int(t.path, "SELECT min(lag_bytes) FROM lag_samples WHERE replica = 'cache-a'") ==
          990);
    CHECK(sql_int(t.path, "SELECT count(*) FROM lag_samples WHERE ts % 10000 != 0") == 0);
    /* A higher sample in a window already written raises the stored max... */
    store_put_lag(s, "cache-a", base + 20000 + 9999, 900.0, 0);
    /* ...a lower one, or one in an older window below its max, changes nothing. */
    store_put_lag(s, "cache-a", base + 20000 + 5, 1.0, 0);
    store_put_lag(s, "cache-a", base + 5, 2.0, 0);
    CHECK(store_flush(s, 2000) == 0);
    CHECK(sql_int(t.path, "SELECT lag_ms FROM lag_samples WHERE ts = (SELECT max(ts) FROM "
                          "lag_samples)") == 900);
    CHECK(sql_int(t.path, "SELECT lag_ms FROM lag_samples WHERE replica = 'cache-a'"
                          " ORDER BY ts LIMIT 1") == 500);
    CHECK(sql_int(t.path, "SELECT count(*) FROM lag_samples") == 4);
    store_close(s);
    tdir_remove(&t);
}

/*
 * Retention runs against a pretend clock two days ahead: rows stamped "now"
 * are then older than the one-day retention and rows stamped "now + 2 days"
 * are recent. (The writer's own pass, on the real clock, deletes nothing.)
 */
TEST(store_retention_bounded_batches)
{
    struct tdir t;
    int64_t now = (int64_t)clock_wall_ms();
    int64_t later = now + 2 * DAY_MS;
    tdir_make(&t);
    struct store *s = open_ok(t.path, DAY_MS);

    for (int i = 0; i < 2500; i++)
        store_put_event(s, now - i, "status", "cache-a", "ok");
    for (int i = 0; i < 10; i++)
        store_put_event(s, later, "status", "cache-a", "recent");
    for (int i = 0; i < 1200; i++)
        store_put_lag(s, "cache-a", now - (int64_t)i * 10000, 1.0, 1);
    store_put_lag(s, "cache-a", later, 1.0, 1);
    struct store_cycle c = {"scan", now - 100, now, 1, 0, 0};
    store_put_cycle(s, &c);
    c.started = later - 10;
    c.finished = later;
    store_put_cycle(s, &c);
    /* Old finished divergences (with repairs) go; old open and recent finished ones stay. */
    for (int i = 0; i < 1500; i++) {
        struct store_divergence d =
            div_make(store_next_id(s), "cache-a", "k", 1, "value", "resolved", now - 1000);
        d.resolved_at = now;
        store_put_divergence(s, &d);
        struct store_repair r = {.divergence_id = d.id,
                                 .replica = "cache-a",
                                 .key = "k",
                                 .keylen = 1,
                                 .strategy = "publish",
                                 .trigger = "auto",
                                 .requested = now,
                                 .outcome = "repaired"};
        store_put_repair(s, &r);
    }
    struct store_divergence cl =
        div_make(store_next_id(s), "cache-a", "c", 1, "value", "cleared", now - 1000);
    store_put_divergence(s, &cl);
    struct store_divergence open_old =
        div_make(store_next_id(s), "cache-a", "o", 1, "value", "confirmed", now - 1000);
    store_put_divergence(s, &open_old);
    struct store_divergence recent =
        div_make(store_next_id(s), "cache-a", "r", 1, "value", "resolved", now - 1000);
    recent.resolved_at = later;
    store_put_divergence(s, &recent);
    struct store_repair orphan = {
        .divergence_id = 999999, .replica = "x", .key = "k", .keylen = 1, .requested = now};
    store_put_repair(s, &orphan);
    CHECK(store_flush(s, 5000) == 0);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events") == 2510);

    uint64_t deleted = 0;
    int batches = 0;
    CHECK(store_run_retention(s, later + 1000, &deleted, &batches) == 0);
    /* 2500 events + 1200 lag + 1 cycle + 1501 divergences + 1500 repairs + 1 orphan */
    CHECK(deleted == 2500 + 1200 + 1 + 1501 + 1500 + 1);
    /* No transaction touched more than 1000 rows of a table: 3 + 2 + 1 + 2 + 1 at least. */
    CHECK(batches >= 9);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events") == 10);
    CHECK(sql_int(t.path, "SELECT count(*) FROM lag_samples") == 1);
    CHECK(sql_int(t.path, "SELECT count(*) FROM cycles") == 1);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 2);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences WHERE key IN (x'6f', x'72')") == 2);
    CHECK(sql_int(t.path, "SELECT count(*) FROM repairs") == 0);
    /* A second run finds nothing. */
    CHECK(store_run_retention(s, later + 1000, &deleted, &batches) == 0);
    CHECK(deleted == 0 && batches == 0);
    CHECK(store_errors_total(s) == 0);
    store_close(s);
    tdir_remove(&t);
}

/*
 * Disk full, simulated with max_page_count on the writer's connection: writes
 * fail cleanly, are counted, writable turns 0, the queue stays bounded; once
 * space returns, the retried batch commits and writable is 1 again.
 */
TEST(store_disk_full_then_recovers)
{
    struct tdir t;
    char err[256], note[2048];
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    CHECK(store_flush(s, 2000) == 0);
    CHECK(store_debug_pragma(s, "max_page_count=1", err, sizeof(err)) == 0);

    memset(note, 'n', sizeof(note) - 1);
    note[sizeof(note) - 1] = '\0';
    /* Queued while paused, so the writer takes all 200 as one batch. */
    store_debug_pause(s, 1);
    for (int i = 0; i < 200; i++) {
        struct store_divergence d =
            div_make(store_next_id(s), "cache-a", "k", 1, "value", "suspect", now);
        d.note = note;
        store_put_divergence(s, &d);
    }
    store_debug_pause(s, 0);
    WAIT_FOR(store_errors_total(s) > 0, 5000);
    CHECK(store_errors_total(s) > 0);
    CHECK(store_writable(s) == 0);
    CHECK(strstr(store_last_error(s), "full") != NULL);
    CHECK(store_flush(s, 50) == -1);

    /* The queue never grows past its bound; the overflow (oldest events) is
     * counted. The length includes the batch the writer holds for a retry. */
    for (int i = 0; i < 15000; i++)
        store_put_event(s, now, "status", "cache-a", "x");
    CHECK(store_queue_length(s) == 10000 + 200);
    CHECK(store_dropped_total(s) == 5000);

    CHECK(store_debug_pragma(s, "max_page_count=1073741823", err, sizeof(err)) == 0);
    WAIT_FOR(store_writable(s) == 1, 8000);
    CHECK(store_writable(s) == 1);
    WAIT_FOR(store_queue_length(s) == 0, 8000);
    CHECK(store_queue_length(s) == 0);
    store_close(s);
    /* The divergences batch was kept and retried, not lost. */
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 200);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events") > 0);
    CHECK(sql_int(t.path, "SELECT count(*) FROM pragma_integrity_check"
                          " WHERE integrity_check = 'ok'") == 1);
    tdir_remove(&t);
}

/*
 * Read-only: as root chmod does not stop writes, so query_only stands in for
 * it; as another user the file mode is tried too.
 */
TEST(store_read_only_then_writable)
{
    struct tdir t;
    char err[256];
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    CHECK(store_debug_pragma(s, "query_only=1", err, sizeof(err)) == 0);
    store_put_event(s, now, "status", "cache-a", "during");
    WAIT_FOR(store_writable(s) == 0, 5000);
    CHECK(store_writable(s) == 0);
    CHECK(store_errors_total(s) >= 1);
    CHECK(strstr(store_last_error(s), "readonly") != NULL);
    CHECK(store_debug_pragma(s, "query_only=0", err, sizeof(err)) == 0);
    WAIT_FOR(store_writable(s) == 1, 5000);
    CHECK(store_writable(s) == 1);
    CHECK(store_flush(s, 5000) == 0);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events WHERE detail = 'during'") == 1);
    store_close(s);

    if (geteuid() != 0) {
        char wal[160];
        s = open_ok(t.path, 30 * DAY_MS);
        snprintf(wal, sizeof(wal), "%s-wal", t.path);
        chmod(t.path, 0444);
        chmod(wal, 0444);
        store_close(s);
        s = open_ok(t.path, 30 * DAY_MS);
        if (s) {
            store_put_event(s, now, "status", "cache-a", "ro");
            WAIT_FOR(store_errors_total(s) > 0, 5000);
            CHECK(store_writable(s) == 0);
            chmod(t.path, 0644);
            chmod(wal, 0644);
            WAIT_FOR(store_writable(s) == 1, 8000);
            CHECK(store_writable(s) == 1);
            store_close(s);
        }
    }
    tdir_remove(&t);
}

TEST(store_queue_overflow_drops_lag_first)
{
    struct tdir t;
    char detail[16];
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    store_debug_pause(s, 1);
    for (int i = 0; i < 5; i++) {
        char r[16];
        snprintf(r, sizeof(r), "r%d", i);
        store_put_lag(s, r, now, 1.0, 1);
    }
    for (int i = 0; i < 9995 + 7; i++) {
        snprintf(detail, sizeof(detail), "%d", i);
        store_put_event(s, now, "status", "cache-a", detail);
    }
    /* 7 over: the 5 lag samples went first, then the 2 oldest events. */
    CHECK(store_queue_length(s) == 10000);
    CHECK(store_dropped_total(s) == 7);
    store_debug_pause(s, 0);
    CHECK(store_flush(s, 10000) == 0);
    store_close(s);
    CHECK(sql_int(t.path, "SELECT count(*) FROM lag_samples") == 0);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events") == 10000);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events WHERE detail IN ('0', '1')") == 0);
    CHECK(sql_int(t.path, "SELECT count(*) FROM events WHERE detail = '2'") == 1);
    tdir_remove(&t);
}

/* Producer for store_concurrent_puts_and_queries: 2000 divergences and lag samples. */
static void *put_many(void *arg)
{
    struct store *s = arg;
    int64_t now = (int64_t)clock_wall_ms();
    char replica[32];
    snprintf(replica, sizeof(replica), "r-%lu", (unsigned long)pthread_self());
    for (int i = 0; i < 2000; i++) {
        struct store_divergence d =
            div_make(store_next_id(s), replica, &i, sizeof(i), "value", "suspect", now + i);
        store_put_divergence(s, &d);
        store_put_lag(s, replica, now + (int64_t)i * 1000, (double)i, i);
    }
    return NULL;
}

/* Several threads put while another queries: nothing lost, ids unique. */
TEST(store_concurrent_puts_and_queries)
{
    struct tdir t;
    pthread_t th[4];
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, put_many, s);
    for (int i = 0; i < 20; i++) {
        struct store_filter f = {.state = "open", .limit = 50};
        CHECK(query_count(s, &f) <= 50);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    CHECK(store_flush(s, 10000) == 0);
    CHECK(store_dropped_total(s) == 0);
    store_close(s);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 8000);
    CHECK(sql_int(t.path, "SELECT count(DISTINCT id) FROM divergences") == 8000);
    /* 2000 s of samples per replica: 200 windows each. */
    CHECK(sql_int(t.path, "SELECT count(*) FROM lag_samples") == 4 * 200 ||
          sql_int(t.path, "SELECT count(*) FROM lag_samples") == 4 * 201);
    tdir_remove(&t);
}

TEST(store_close_flushes_queue)
{
    struct tdir t;
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    for (int i = 0; i < 3000; i++) {
        struct store_divergence d =
            div_make(store_next_id(s), "cache-a", &i, sizeof(i), "value", "suspect", now);
        store_put_divergence(s, &d);
    }
    store_close(s);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 3000);
    tdir_remove(&t);
}

/*
 * Deleting the file under a running store: the next write notices (the inode
 * at the path changed), logs it, and creates the database again.
 */
TEST(store_deleted_file_is_recreated)
{
    struct tdir t;
    char p[160];
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    struct store_divergence d =
        div_make(store_next_id(s), "cache-a", "a", 1, "value", "suspect", now);
    store_put_divergence(s, &d);
    CHECK(store_flush(s, 2000) == 0);
    CHECK(query_count(s, NULL) == 1);
    CHECK(unlink(t.path) == 0);
    snprintf(p, sizeof(p), "%s-wal", t.path);
    CHECK(access(p, F_OK) == 0); /* left behind, as after `rm history.db` */

    d = div_make(store_next_id(s), "cache-a", "b", 1, "value", "suspect", now);
    store_put_divergence(s, &d);
    CHECK(store_flush(s, 5000) == 0);
    CHECK(store_writable(s) == 1);
    CHECK(access(t.path, F_OK) == 0);
    /* The reader follows the new file. */
    json_t *a = query(s, NULL);
    CHECK(a && json_array_size(a) == 1);
    CHECK_STR(json_string_value(json_object_get(json_array_get(a, 0), "key")), "b");
    json_decref(a);
    store_close(s);
    CHECK(sql_int(t.path, "SELECT count(*) FROM divergences") == 1);
    CHECK(sql_int(t.path, "PRAGMA user_version") == store_schema_version());
    CHECK(sql_int(t.path, "SELECT count(*) FROM pragma_integrity_check"
                          " WHERE integrity_check = 'ok'") == 1);
    tdir_remove(&t);
}

TEST(store_readonly_open_for_cli)
{
    struct tdir t;
    char err[256];
    int64_t now = (int64_t)clock_wall_ms();
    tdir_make(&t);
    struct store *s = open_ok(t.path, 30 * DAY_MS);
    struct store_divergence d =
        div_make(store_next_id(s), "cache-a", "a", 1, "value", "suspect", now);
    store_put_divergence(s, &d);
    store_close(s);
    s = store_open_readonly(t.path, err, sizeof(err));
    CHECK(s != NULL);
    CHECK(query_count(s, NULL) == 1);
    CHECK(store_writable(s) == 0);
    store_put_event(s, now, "x", NULL, NULL); /* ignored, counted */
    CHECK(store_dropped_total(s) == 1);
    CHECK(store_queue_length(s) == 0);
    CHECK(store_flush(s, 10) == 0);
    store_close(s);
    tdir_remove(&t);
}

TEST(store_memory_database)
{
    char err[256];
    struct store *s = store_open(":memory:", DAY_MS, err, sizeof(err));
    CHECK(s != NULL);
    struct store_divergence d = div_make(store_next_id(s), "r", "k", 1, "value", "suspect", 1);
    store_put_divergence(s, &d);
    store_put_lag(s, "r", 1, 1.0, 1);
    CHECK(store_flush(s, 2000) == 0);
    CHECK(query_count(s, NULL) == 0);
    store_close(s);
}

TEST(store_key_escape_round_trip)
{
    unsigned char all[256], back[256];
    size_t n;
    for (int i = 0; i < 256; i++)
        all[i] = (unsigned char)i;
    char *e = text_escape(all, sizeof(all));
    CHECK(e != NULL);
    CHECK(text_unescape(e, back, sizeof(back), &n) == 0);
    CHECK(n == 256 && memcmp(all, back, 256) == 0);
    free(e);
    e = text_escape("a\\b\x01", 4);
    CHECK_STR(e, "a\\\\b\\x01");
    free(e);
    CHECK(text_unescape("bad\\q", back, sizeof(back), &n) == -1);
    CHECK(text_unescape("bad\\x4", back, sizeof(back), &n) == -1);
    CHECK(text_unescape("toolong", back, 3, &n) == -1);
    CHECK(text_unescape("\\x41\\X", back, sizeof(back), &n) == -1);
    CHECK(text_unescape("\\x41B", back, sizeof(back), &n) == 0 && n == 2 && !memcmp(back, "AB", 2));
}

/*
 * Not a test of its own: writes the database that the integration test of
 * `keydrift history` reads, when KEYDRIFT_STORE_FIXTURE names a path.
 */
TEST(store_fixture_for_integration)
{
    const char *path = getenv("KEYDRIFT_STORE_FIXTURE");
    char err[256];
    int64_t now = (int64_t)clock_wall_ms();
    static const char bin[] = {'b', 'i', 'n', '\0', '\xff', '\n', ',', '"', 'q'};
    struct {
        const char *replica;
        const void *key;
        size_t keylen;
        const char *kind, *state, *resolution;
        int64_t age_ms;
    } rows[] = {
        {"cache-a", "user:1", 6, "value", "confirmed", NULL, 10 * 60000},
        {"replica-1", bin, sizeof(bin), "missing", "resolved", "repaired", 2 * 3600000},
        {"cache-a", "old", 3, "ttl", "cleared", NULL, 3 * DAY_MS},
        {"replica-1", "user:1", 6, "extra", "suspect", NULL, 30000},
        {"cache-a", "back\\slash", 10, "type", "repairing", NULL, 5 * 60000},
    };

    if (!path)
        return;
    struct store *s = store_open(path, 30 * DAY_MS, err, sizeof(err));
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct store_divergence d =
            div_make(store_next_id(s), rows[i].replica, rows[i].key, rows[i].keylen, rows[i].kind,
                     rows[i].state, now - rows[i].age_ms);
        d.resolution = rows[i].resolution;
        if (rows[i].resolution)
            d.resolved_at = now - rows[i].age_ms + 1000;
        store_put_divergence(s, &d);
    }
    CHECK(store_flush(s, 5000) == 0);
    store_close(s);
}
