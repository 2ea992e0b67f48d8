/*
 * config -- the keydrift configuration: one declarative option table.
 *
 * A config file is redis.conf-style: one option a line, "name value...",
 * '#' starts a comment, values may be "double" (with \n \t \xHH escapes) or
 * 'single' quoted. Every option can also be given on the command line as
 * "--name value...". A file is parsed into a fresh struct config; callers
 * swap it in only when cfg_load() succeeded.
 */
#ifndef KD_CONFIG_H
#define KD_CONFIG_H

#include <stddef.h>

#define CFG_MAX_REPLICAS 32
#define CFG_MAX_DBS      16
#define CFG_MAX_SENTINEL 8
#define CFG_MAX_ADDR_MAP 32
#define CFG_NAME_MAX     64
#define CFG_HOST_MAX     256
#define CFG_ERR_MAX      512

struct cfg_addr {
    char host[CFG_HOST_MAX];
    int port;
};

enum replica_kind { REPLICA_NATIVE, REPLICA_PUBSUB };
enum msg_format { FMT_KEY, FMT_JSON };
enum discovery { DISCOVERY_STATIC, DISCOVERY_SENTINEL, DISCOVERY_CLUSTER };
enum repair_policy { REPAIR_OFF, REPAIR_MANUAL, REPAIR_AUTO };
enum pubsub_strategy { PUBSUB_PUBLISH, PUBSUB_WRITE };
enum log_target { LOGT_STDERR, LOGT_SYSLOG };

/* Sampling modes, a bit set. */
#define MODE_SCAN         0x1
#define MODE_REPLICA_SCAN 0x2
#define MODE_RANDOM       0x4
#define MODE_WATCH        0x8

struct cfg_replica {
    char name[CFG_NAME_MAX];
    struct cfg_addr addr;
    enum replica_kind kind;
    int missing_is_divergence; /* 1 unless "missing-is-divergence no" */
};

struct config {
    /* topology */
    struct cfg_addr primary;
    struct cfg_replica replicas[CFG_MAX_REPLICAS];
    int nreplicas;
    enum discovery discovery;
    char discovery_master[CFG_NAME_MAX];
    struct cfg_addr discovery_addrs[CFG_MAX_SENTINEL];
    int ndiscovery_addrs;
    int shard_index, shard_count;
    int dbs[CFG_MAX_DBS];
    int ndbs;
    char *redis_user;
    char *redis_password_file;
    char *redis_password; /* from the file or KEYDRIFT_REDIS_PASSWORD */
    char *sentinel_user;
    char *sentinel_password_file;
    char *sentinel_password; /* from the file or KEYDRIFT_SENTINEL_PASSWORD */
    /* address-map: a discovered node at from is reached at to (a local
     * stunnel, a NAT) */
    struct cfg_addr_map {
        struct cfg_addr from, to;
    } addr_map[CFG_MAX_ADDR_MAP];
    int naddr_map;
    long long discovery_interval;
    long long connect_timeout;
    long long command_timeout;

    /* sync channel */
    char *channel;
    enum msg_format message_format;
    struct cfg_addr cache; /* keydrift sync: the cache it serves */
    long long sync_batch;
    char *sync_metrics_listen;

    /* lag */
    char *agent_id;
    long long heartbeat_interval;
    long long lag_poll_interval;
    long long lag_warn;
    long long status_window;

    /* detection */
    int modes;
    char *key_pattern;
    char *exclude_pattern;
    long long scan_count;
    long long max_commands_per_sec;
    long long batch_time_slice;
    long long max_value_bytes;
    long long ttl_tolerance;
    long long confirm_timeout;
    long long watch_grace;
    long long random_sample_window;

    /* repair */
    enum repair_policy repair;
    long long repair_max_per_sec;
    enum pubsub_strategy repair_pubsub_strategy;
    long long repair_verify_timeout;
    int repair_dry_run;
    double repair_max_share;

    /* storage */
    char *history_db;
    long long retention;

    /* http */
    char *http_listen;
    char *http_token_file;
    char *http_token; /* read from http_token_file */
    long long http_max_connections;
    long long http_per_ip_connections;
    long long http_timeout;
    long long http_max_body;
    char *webhook_url;

    /* logging */
    char *log_level;
    enum log_target log_target;
};

/* Sets every option to its default. */
void cfg_init(struct config *c);
/* Frees what the struct owns (strings); the struct itself is the caller's. */
void cfg_free(struct config *c);

/*
 * Parses a config file (path may be NULL) and then command-line overrides
 * argv[0..argc) ("--name value ..."), on top of the defaults, into c, then
 * checks the whole and reads secret files. Returns 0, or -1 with a message
 * "FILE:LINE: option 'name': what is wrong" in err.
 */
int cfg_load(struct config *c, const char *path, int argc, char **argv, char *err, size_t errlen);

/* Parses config text (from a file named name) into c; no final checks. */
int cfg_parse_text(struct config *c, const char *name, const char *text, size_t len, char *err,
                   size_t errlen);

/* Applies one option by name with its arguments; where names the source. */
int cfg_set(struct config *c, const char *where, int argc, const char **argv, char *err,
            size_t errlen);

/* Checks cross-option rules and reads secret files. */
int cfg_finish(struct config *c, char *err, size_t errlen);

/*
 * Splits a config line into arguments the way redis.conf does. Writes at most
 * maxargs pointers into argv, each a NUL-terminated copy held in buf (bufsz
 * bytes, at least len+maxargs). Returns the number of args, or -1 with a
 * reason in *why (unbalanced quotes, too many args, bad escape).
 */
int cfg_split(const char *line, size_t len, char **argv, size_t *argl, int maxargs, char *buf,
              size_t bufsz, const char **why);

/* Option table access, for docs, round-trip tests and reload diffs. */
int cfg_option_count(void);
const char *cfg_option_name(int i);
const char *cfg_option_default(int i);
/* Renders option i's current value in config syntax (may be "" for unset). */
void cfg_option_render(const struct config *c, int i, char *buf, size_t len);
/* Logs each option whose rendered value differs between a and b. Returns the count. */
int cfg_log_changes(const struct config *a, const struct config *b);

/* Helpers used elsewhere. */
int cfg_parse_addr(const char *s, struct cfg_addr *a);
int cfg_parse_duration_ms(const char *s, long long *out);
const char *cfg_replica_kind_name(enum replica_kind k);
const char *cfg_format_name(enum msg_format f);
const struct cfg_replica *cfg_find_replica(const struct config *c, const char *name);

#endif
