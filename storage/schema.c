/*
 * schema -- the history database's tables and their forward migrations.
 *
 * To change the schema, append a migration to store_migrations[]; never edit
 * one that has shipped. Each runs inside one transaction together with the
 * user_version bump, so a crash leaves the database at the old or the new
 * version, never between.
 */
#include "schema.h"

#include <stdio.h>

/*
 * Version 1. Times are Unix milliseconds; NULL means "not yet" / "none".
 * Digests are 64-bit hashes stored as signed INTEGER (the same bits).
 */
static const char schema_v1[] =
    "CREATE TABLE nodes ("
    "  name TEXT PRIMARY KEY,"
    "  role TEXT,"
    "  addr TEXT,"
    "  kind TEXT,"
    "  updated_at INTEGER NOT NULL);"

    "CREATE TABLE divergences ("
    "  id INTEGER PRIMARY KEY,"
    "  replica TEXT NOT NULL,"
    "  key BLOB NOT NULL,"
    "  db INTEGER NOT NULL DEFAULT 0,"
    "  kind TEXT NOT NULL,"
    "  state TEXT NOT NULL,"
    "  first_seen INTEGER NOT NULL,"
    "  confirmed_at INTEGER,"
    "  resolved_at INTEGER,"
    "  resolution TEXT,"
    "  primary_digest INTEGER,"
    "  replica_digest INTEGER,"
    "  primary_ttl_ms INTEGER,"
    "  replica_ttl_ms INTEGER,"
    "  primary_offset INTEGER,"
    "  found_by TEXT,"
    "  note TEXT,"
    "  updated_at INTEGER NOT NULL);"
    "CREATE INDEX divergences_state ON divergences(state, first_seen);"
    "CREATE INDEX divergences_replica ON divergences(replica, first_seen);"
    "CREATE INDEX divergences_first_seen ON divergences(first_seen);"
    "CREATE INDEX divergences_key ON divergences(key);"
    /* Retention's lookup: finished rows by the time they finished. */
    "CREATE INDEX divergences_ended ON divergences(coalesce(resolved_at, first_seen))"
    "  WHERE state IN ('resolved', 'cleared');"

    "CREATE TABLE repairs ("
    "  id INTEGER PRIMARY KEY,"
    "  divergence_id INTEGER NOT NULL,"
    "  replica TEXT NOT NULL,"
    "  key BLOB NOT NULL,"
    "  strategy TEXT,"
    "  trigger TEXT,"
    "  requested INTEGER NOT NULL,"
    "  finished INTEGER,"
    "  outcome TEXT,"
    "  error TEXT);"
    "CREATE INDEX repairs_divergence ON repairs(divergence_id);"
    "CREATE INDEX repairs_requested ON repairs(requested);"

    /* One row per replica per 10 s window (ts = window start), max lag in it. */
    "CREATE TABLE lag_samples ("
    "  replica TEXT NOT NULL,"
    "  ts INTEGER NOT NULL,"
    "  lag_ms REAL NOT NULL,"
    "  lag_bytes INTEGER NOT NULL,"
    "  UNIQUE (replica, ts));"
    "CREATE INDEX lag_samples_ts ON lag_samples(ts);"

    "CREATE TABLE cycles ("
    "  id INTEGER PRIMARY KEY,"
    "  mode TEXT NOT NULL,"
    "  started INTEGER NOT NULL,"
    "  finished INTEGER NOT NULL,"
    "  keys_checked INTEGER NOT NULL,"
    "  suspects INTEGER NOT NULL,"
    "  confirmed INTEGER NOT NULL);"
    "CREATE INDEX cycles_finished ON cycles(finished);"

    "CREATE TABLE events ("
    "  id INTEGER PRIMARY KEY,"
    "  ts INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  node TEXT,"
    "  detail TEXT);"
    "CREATE INDEX events_ts ON events(ts);";

static const char *const store_migrations[] = {
    schema_v1,
};

#define NMIGRATIONS ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

int store_schema_version(void)
{
    return NMIGRATIONS;
}

int store_schema_read_version(sqlite3 *db, int *version, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);

    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        *version = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        return 0;
    }
    snprintf(err, errlen, "cannot read the schema version: %s", sqlite3_errmsg(db));
    sqlite3_finalize(st);
    return -1;
}

/*
 * Applies migration number `to` (1-based) and sets user_version to it, in
 * one IMMEDIATE transaction (so two processes opening a fresh file at once
 * serialise, and the second sees the first's version). Returns 0 or -1.
 */
static int schema_apply(sqlite3 *db, int to, char *err, size_t errlen)
{
    char sql[64];
    char *msg = NULL;
    int cur;

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    /* Someone else may have migrated while we waited for the lock. */
    if (store_schema_read_version(db, &cur, err, errlen) < 0) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (cur >= to) {
        sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
        return 0;
    }
    if (sqlite3_exec(db, store_migrations[to - 1], NULL, NULL, &msg) != SQLITE_OK)
        goto fail_rollback;
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", to);
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        goto fail_rollback;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
        goto fail_rollback;
    return 0;

fail_rollback:
    snprintf(err, errlen, "schema migration to version %d failed: %s", to,
             msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
fail:
    snprintf(err, errlen, "schema migration to version %d failed: %s", to,
             msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    return -1;
}

int store_schema_migrate(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int v;

    if (store_schema_read_version(db, &v, err, errlen) < 0)
        return -1;
    if (v > NMIGRATIONS) {
        snprintf(err, errlen,
                 "%s has schema version %d, newer than this keydrift understands (%d); "
                 "use a newer keydrift or another history-db",
                 path, v, NMIGRATIONS);
        return -1;
    }
    for (int to = v + 1; to <= NMIGRATIONS; to++)
        if (schema_apply(db, to, err, errlen) < 0)
            return -1;
    return 0;
}
