/*
 * info -- a pure parser of Redis INFO text (no I/O), for the replication and
 * server sections. Tested and fuzzed without a server.
 */
#ifndef KD_INFO_H
#define KD_INFO_H

#include <stddef.h>

#define INFO_MAX_SLAVES 32

struct info_slave { /* one "slaveN:ip=...,port=...,state=...,offset=...,lag=..." line */
    char ip[64];
    int port;
    char state[24];
    long long offset;
    long long lag;
};

struct info_repl {
    /* fields absent from the text keep these defaults: -1 for numbers, "" for text */
    char role[16];   /* "master" | "slave" */
    char run_id[48]; /* from "run_id" (server section) */
    char master_replid[48];
    long long master_repl_offset;
    long long slave_repl_offset;      /* replica */
    long long slave_read_repl_offset; /* replica (7.0+) */
    int master_link_up;               /* replica: master_link_status up=1 down=0, -1 absent */
    long long master_last_io_seconds_ago;
    int master_sync_in_progress;
    char master_host[64];
    int master_port;
    int connected_slaves;
    struct info_slave slaves[INFO_MAX_SLAVES];
    int nslaves;
    long long sync_full;         /* stats section: full resyncs served */
    long long uptime_in_seconds; /* server section */
    long long db0_keys;          /* keyspace: keys in db0, -1 absent */
};

/* Sets every field to its "absent" default. */
void info_repl_init(struct info_repl *r);

/*
 * Parses INFO output (any sections; unknown lines ignored) of len bytes, not
 * necessarily NUL-terminated. Returns 0 when at least one known field was
 * found, -1 when the text holds none (garbage or empty). Never reads past len.
 */
int info_parse(const char *text, size_t len, struct info_repl *r);

/*
 * Finds one field's raw value in INFO text ("field:value\r\n"); copies at most
 * outsz-1 bytes. Returns 1 found, 0 absent.
 */
int info_field(const char *text, size_t len, const char *field, char *out, size_t outsz);

#endif
