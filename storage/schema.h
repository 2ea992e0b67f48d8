/*
 * schema -- the history database's tables and their forward migrations.
 *
 * The schema version lives in PRAGMA user_version. Migration i (1-based)
 * takes a database from version i-1 to version i, each in one transaction.
 * Internal to storage/; callers use store.h.
 */
#ifndef KD_SCHEMA_H
#define KD_SCHEMA_H

#include <stddef.h>

#include <sqlite3.h>

/* The schema version this build creates and understands. */
int store_schema_version(void);

/* Reads PRAGMA user_version into *version. 0 ok, -1 with a reason in err. */
int store_schema_read_version(sqlite3 *db, int *version, char *err, size_t errlen);

/*
 * Brings db up to store_schema_version(), one transaction per migration.
 * Refuses (returns -1, reason in err) a database whose version is newer than
 * this build knows, and leaves it untouched. 0 on success.
 */
int store_schema_migrate(sqlite3 *db, const char *path, char *err, size_t errlen);

#endif
