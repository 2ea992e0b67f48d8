/*
 * config -- the keydrift configuration: one declarative option table.
 *
 * Each row of cfg_options names an option, its type, the field it sets, its
 * bounds and its default (as text, parsed by the same code as user input, so
 * every default goes through validation). Parsing, rendering, the reload diff
 * and the docs test all walk this one table.
 */
#include "config.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum cfg_type {
    T_STR,      /* char * */
    T_INT,      /* long long, plain number */
    T_DURATION, /* long long milliseconds: 100ms 2s 5m 1h 30d, bare = ms */
    T_SIZE,     /* long long bytes: 512, 64kb, 32mb, 1gb */
    T_BOOL,     /* int: yes|no */
    T_ENUM,     /* int (an enum): one of names */
    T_ADDR,     /* struct cfg_addr: host:port */
    T_RATIO,    /* double in [0,1]: 0.05 or 5% */
    T_CUSTOM,   /* parse/render functions */
};

struct cfg_option;
typedef int (*cfg_parse_fn)(struct config *c, int argc, const char **argv, char *why, size_t wl);
typedef void (*cfg_render_fn)(const struct config *c, char *buf, size_t len);

struct cfg_option {
    const char *name;
    enum cfg_type type;
    size_t off;
    long long min, max;
    const char *def;
    const char *const *names; /* T_ENUM */
    cfg_parse_fn parse;       /* T_CUSTOM */
    cfg_render_fn render;     /* T_CUSTOM */
    int multi;                /* T_CUSTOM that accumulates (replica) */
};

#define FIELD(f) offsetof(struct config, f)

static const char *const fmt_names[] = {"key", "json", NULL};
static const char *const repair_names[] = {"off", "manual", "auto", NULL};
static const char *const pubsub_strategy_names[] = {"publish", "write", NULL};
static const char *const logt_names[] = {"stderr", "syslog", NULL};
static const char *const kind_names[] = {"native", "pubsub", NULL};
static const char *const disc_names[] = {"static", "sentinel", "cluster", NULL};
static const char *const mode_names[] = {"scan", "replica-scan", "random", "watch", NULL};

static int parse_replica(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_replica(const struct config *c, char *buf, size_t len);
static int parse_discovery(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_discovery(const struct config *c, char *buf, size_t len);
static int parse_addrmap(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_addrmap(const struct config *c, char *buf, size_t len);
static int parse_dbs(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_dbs(const struct config *c, char *buf, size_t len);
static int parse_modes(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_modes(const struct config *c, char *buf, size_t len);
static int parse_shard(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_shard(const struct config *c, char *buf, size_t len);
static int parse_loglevel(struct config *c, int argc, const char **argv, char *why, size_t wl);
static void render_loglevel(const struct config *c, char *buf, size_t len);

#define MS_DAY (86400LL * 1000)

/* clang-format off */
static const struct cfg_option cfg_options[] = {
    /* topology */
    {"primary", T_ADDR, FIELD(primary), 0, 0, "127.0.0.1:6379", NULL, NULL, NULL, 0},
    {"replica", T_CUSTOM, 0, 0, 0, "", NULL, parse_replica, render_replica, 1},
    {"discovery", T_CUSTOM, 0, 0, 0, "static", NULL, parse_discovery, render_discovery, 0},
    {"address-map", T_CUSTOM, 0, 0, 0, "", NULL, parse_addrmap, render_addrmap, 1},
    {"shard-index", T_CUSTOM, 0, 0, 0, "1/1", NULL, parse_shard, render_shard, 0},
    {"db", T_CUSTOM, 0, 0, 0, "0", NULL, parse_dbs, render_dbs, 0},
    {"redis-user", T_STR, FIELD(redis_user), 0, 0, "", NULL, NULL, NULL, 0},
    {"redis-password-file", T_STR, FIELD(redis_password_file), 0, 0, "", NULL, NULL, NULL, 0},
    {"sentinel-user", T_STR, FIELD(sentinel_user), 0, 0, "", NULL, NULL, NULL, 0},
    {"sentinel-password-file", T_STR, FIELD(sentinel_password_file), 0, 0, "", NULL, NULL, NULL, 0},
    {"discovery-interval", T_DURATION, FIELD(discovery_interval), 100, 3600000, "10s", NULL, NULL, NULL, 0},
    {"connect-timeout", T_DURATION, FIELD(connect_timeout), 10, 60000, "1s", NULL, NULL, NULL, 0},
    {"command-timeout", T_DURATION, FIELD(command_timeout), 10, 600000, "5s", NULL, NULL, NULL, 0},
    /* sync channel */
    {"channel", T_STR, FIELD(channel), 1, 0, "cache_update", NULL, NULL, NULL, 0},
    {"message-format", T_ENUM, FIELD(message_format), 0, 0, "key", fmt_names, NULL, NULL, 0},
    {"cache", T_ADDR, FIELD(cache), 0, 0, "127.0.0.1:6380", NULL, NULL, NULL, 0},
    {"sync-batch", T_INT, FIELD(sync_batch), 1, 100000, "512", NULL, NULL, NULL, 0},
    {"sync-metrics-listen", T_STR, FIELD(sync_metrics_listen), 0, 0, "", NULL, NULL, NULL, 0},
    /* lag */
    {"agent-id", T_STR, FIELD(agent_id), 0, 0, "", NULL, NULL, NULL, 0},
    {"heartbeat-interval", T_DURATION, FIELD(heartbeat_interval), 10, 60000, "20ms", NULL, NULL, NULL, 0},
    {"lag-poll-interval", T_DURATION, FIELD(lag_poll_interval), 5, 60000, "20ms", NULL, NULL, NULL, 0},
    {"lag-warn", T_DURATION, FIELD(lag_warn), 1, MS_DAY, "1s", NULL, NULL, NULL, 0},
    {"status-window", T_INT, FIELD(status_window), 2, 10000, "10", NULL, NULL, NULL, 0},
    /* detection */
    {"sample-modes", T_CUSTOM, 0, 0, 0, "scan replica-scan random watch", NULL, parse_modes, render_modes, 0},
    {"key-pattern", T_STR, FIELD(key_pattern), 0, 0, "*", NULL, NULL, NULL, 0},
    {"exclude-pattern", T_STR, FIELD(exclude_pattern), 0, 0, "", NULL, NULL, NULL, 0},
    {"scan-count", T_INT, FIELD(scan_count), 1, 100000, "100", NULL, NULL, NULL, 0},
    {"max-commands-per-sec", T_INT, FIELD(max_commands_per_sec), 10, 100000000, "5000", NULL, NULL, NULL, 0},
    {"batch-time-slice", T_DURATION, FIELD(batch_time_slice), 1, 10000, "20ms", NULL, NULL, NULL, 0},
    {"max-value-bytes", T_SIZE, FIELD(max_value_bytes), 1, 1LL << 40, "1mb", NULL, NULL, NULL, 0},
    {"ttl-tolerance", T_DURATION, FIELD(ttl_tolerance), 0, MS_DAY, "1s", NULL, NULL, NULL, 0},
    {"confirm-timeout", T_DURATION, FIELD(confirm_timeout), 10, 3600000, "5s", NULL, NULL, NULL, 0},
    {"watch-grace", T_DURATION, FIELD(watch_grace), 0, 600000, "200ms", NULL, NULL, NULL, 0},
    {"random-sample-window", T_INT, FIELD(random_sample_window), 10, 100000000, "10000", NULL, NULL, NULL, 0},
    /* repair */
    {"repair", T_ENUM, FIELD(repair), 0, 0, "manual", repair_names, NULL, NULL, 0},
    {"repair-max-per-sec", T_INT, FIELD(repair_max_per_sec), 1, 1000000, "100", NULL, NULL, NULL, 0},
    {"repair-pubsub-strategy", T_ENUM, FIELD(repair_pubsub_strategy), 0, 0, "publish",
     pubsub_strategy_names, NULL, NULL, 0},
    {"repair-verify-timeout", T_DURATION, FIELD(repair_verify_timeout), 100, 600000, "5s", NULL,
     NULL, NULL, 0},
    {"repair-dry-run", T_BOOL, FIELD(repair_dry_run), 0, 0, "no", NULL, NULL, NULL, 0},
    {"repair-max-share", T_RATIO, FIELD(repair_max_share), 0, 0, "5%", NULL, NULL, NULL, 0},
    /* storage */
    {"history-db", T_STR, FIELD(history_db), 0, 0, "/var/lib/keydrift/keydrift.db", NULL, NULL, NULL, 0},
    {"retention", T_DURATION, FIELD(retention), 60000, 3650 * MS_DAY, "30d", NULL, NULL, NULL, 0},
    /* http */
    {"http-listen", T_STR, FIELD(http_listen), 0, 0, "127.0.0.1:9643", NULL, NULL, NULL, 0},
    {"http-token-file", T_STR, FIELD(http_token_file), 0, 0, "", NULL, NULL, NULL, 0},
    {"http-max-connections", T_INT, FIELD(http_max_connections), 1, 65536, "1024", NULL, NULL, NULL, 0},
    {"http-per-ip-connections", T_INT, FIELD(http_per_ip_connections), 1, 65536, "1024", NULL, NULL, NULL, 0},
    {"http-timeout", T_DURATION, FIELD(http_timeout), 1000, 3600000, "10s", NULL, NULL, NULL, 0},
    {"http-max-body", T_SIZE, FIELD(http_max_body), 64, 64LL << 20, "64kb", NULL, NULL, NULL, 0},
    {"webhook-url", T_STR, FIELD(webhook_url), 0, 0, "", NULL, NULL, NULL, 0},
    /* logging */
    {"log-level", T_CUSTOM, 0, 0, 0, "info", NULL, parse_loglevel, render_loglevel, 0},
    {"log-target", T_ENUM, FIELD(log_target), 0, 0, "stderr", logt_names, NULL, NULL, 0},
};
/* clang-format on */

#define NOPTIONS ((int)(sizeof(cfg_options) / sizeof(cfg_options[0])))

int cfg_option_count(void)
{
    return NOPTIONS;
}

const char *cfg_option_name(int i)
{
    return cfg_options[i].name;
}

const char *cfg_option_default(int i)
{
    return cfg_options[i].def;
}

/* ---------------------------------------------------------------- lexer */

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

int cfg_split(const char *line, size_t len, char **argv, size_t *argl, int maxargs, char *buf,
              size_t bufsz, const char **why)
{
    size_t i = 0, o = 0;
    int argc = 0;

    *why = NULL;
    for (;;) {
        while (i < len && isspace((unsigned char)line[i]))
            i++;
        if (i >= len || line[i] == '#')
            return argc;
        if (argc >= maxargs) {
            *why = "too many arguments";
            return -1;
        }
        size_t start = o;
        char q = 0;
        if (line[i] == '"' || line[i] == '\'')
            q = line[i++];
        for (;;) {
            if (o + 1 >= bufsz) {
                *why = "line too long";
                return -1;
            }
            if (i >= len) {
                if (q) {
                    *why = "unbalanced quotes";
                    return -1;
                }
                break;
            }
            char ch = line[i];
            if (!q && isspace((unsigned char)ch))
                break;
            if (q && ch == q) {
                i++;
                /* A closing quote must be followed by a space or the end. */
                if (i < len && !isspace((unsigned char)line[i])) {
                    *why = "closing quote must be followed by a space";
                    return -1;
                }
                break;
            }
            if (q == '"' && ch == '\\' && i + 1 < len) {
                char e = line[i + 1];
                int hi, lo;
                i += 2;
                switch (e) {
                case 'n':
                    buf[o++] = '\n';
                    break;
                case 'r':
                    buf[o++] = '\r';
                    break;
                case 't':
                    buf[o++] = '\t';
                    break;
                case 'b':
                    buf[o++] = '\b';
                    break;
                case 'a':
                    buf[o++] = '\a';
                    break;
                case 'x':
                    if (i + 1 < len && (hi = hexval(line[i])) >= 0 &&
                        (lo = hexval(line[i + 1])) >= 0) {
                        buf[o++] = (char)(hi * 16 + lo);
                        i += 2;
                    } else {
                        *why = "bad \\x escape (want \\xHH)";
                        return -1;
                    }
                    break;
                default:
                    buf[o++] = e;
                    break;
                }
                continue;
            }
            if (q == '\'' && ch == '\\' && i + 1 < len && line[i + 1] == '\'') {
                buf[o++] = '\'';
                i += 2;
                continue;
            }
            buf[o++] = ch;
            i++;
        }
        buf[o++] = '\0';
        argv[argc] = buf + start;
        if (argl)
            argl[argc] = o - 1 - start;
        argc++;
    }
}

/* --------------------------------------------------------- value parsers */

static int parse_ll(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        return -1;
    *out = v;
    return 0;
}

int cfg_parse_duration_ms(const char *s, long long *out)
{
    char *end;
    double v;
    double mul;

    errno = 0;
    if (!*s || isspace((unsigned char)*s) || *s == '-' || *s == '+')
        return -1;
    v = strtod(s, &end);
    if (errno || end == s || v != v)
        return -1;
    if (!strcmp(end, "") || !strcmp(end, "ms"))
        mul = 1;
    else if (!strcmp(end, "us"))
        mul = 0.001;
    else if (!strcmp(end, "s"))
        mul = 1000;
    else if (!strcmp(end, "m"))
        mul = 60000;
    else if (!strcmp(end, "h"))
        mul = 3600000;
    else if (!strcmp(end, "d"))
        mul = 86400000;
    else
        return -1;
    v *= mul;
    if (v > 9.0e15)
        return -1;
    *out = (long long)(v + 0.5);
    return 0;
}

static int parse_size(const char *s, long long *out)
{
    char *end;
    long long mul = 1;

    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "b"))
        mul = 1;
    else if (!strcasecmp(end, "k") || !strcasecmp(end, "kb"))
        mul = 1024;
    else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb"))
        mul = 1024 * 1024;
    else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb"))
        mul = 1024LL * 1024 * 1024;
    else
        return -1;
    if (v > (unsigned long long)LLONG_MAX / (unsigned long long)mul)
        return -1;
    *out = (long long)v * mul;
    return 0;
}

int cfg_parse_addr(const char *s, struct cfg_addr *a)
{
    const char *colon = strrchr(s, ':');
    const char *h = s;
    size_t hl;
    long long port;

    if (!colon || colon == s)
        return -1;
    hl = (size_t)(colon - s);
    if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']') { /* [::1]:6379 */
        h = s + 1;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(a->host))
        return -1;
    if (parse_ll(colon + 1, &port) < 0 || port < 1 || port > 65535)
        return -1;
    for (size_t i = 0; i < hl; i++)
        if (isspace((unsigned char)h[i]) || h[i] == '/')
            return -1;
    memcpy(a->host, h, hl);
    a->host[hl] = '\0';
    a->port = (int)port;
    return 0;
}

static void render_addr(const struct cfg_addr *a, char *buf, size_t len)
{
    if (strchr(a->host, ':'))
        snprintf(buf, len, "[%s]:%d", a->host, a->port);
    else
        snprintf(buf, len, "%s:%d", a->host, a->port);
}

static int parse_name(const char *s, char *out, size_t outsz)
{
    size_t n = strlen(s);
    if (n == 0 || n >= outsz)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!isalnum((unsigned char)ch) && ch != '-' && ch != '_' && ch != '.')
            return -1;
    }
    memcpy(out, s, n + 1);
    return 0;
}

static int enum_index(const char *const *names, const char *s)
{
    for (int i = 0; names[i]; i++)
        if (!strcmp(names[i], s))
            return i;
    return -1;
}

static void enum_list(const char *const *names, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; names[i] && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? "|" : "", names[i]);
}

/* ------------------------------------------------------- custom options */

static int parse_replica(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    struct cfg_replica r;

    if (argc == 0) /* the empty default: no replicas */
        return 0;
    if (argc < 3) {
        snprintf(why, wl, "wants NAME HOST:PORT native|pubsub [missing-is-divergence yes|no]");
        return -1;
    }
    memset(&r, 0, sizeof(r));
    r.missing_is_divergence = 1;
    if (parse_name(argv[0], r.name, sizeof(r.name)) < 0) {
        snprintf(why, wl, "'%s' is not a valid name (1-63 of A-Z a-z 0-9 - _ .)", argv[0]);
        return -1;
    }
    if (cfg_parse_addr(argv[1], &r.addr) < 0) {
        snprintf(why, wl, "'%s' is not HOST:PORT", argv[1]);
        return -1;
    }
    int k = enum_index(kind_names, argv[2]);
    if (k < 0) {
        snprintf(why, wl, "kind '%s' is not one of native|pubsub", argv[2]);
        return -1;
    }
    r.kind = (enum replica_kind)k;
    for (int i = 3; i < argc; i += 2) {
        if (!strcmp(argv[i], "missing-is-divergence") && i + 1 < argc) {
            if (!strcmp(argv[i + 1], "yes"))
                r.missing_is_divergence = 1;
            else if (!strcmp(argv[i + 1], "no"))
                r.missing_is_divergence = 0;
            else {
                snprintf(why, wl, "missing-is-divergence wants yes|no, not '%s'", argv[i + 1]);
                return -1;
            }
        } else {
            snprintf(why, wl,
                     "unknown replica setting '%s' (allowed: missing-is-divergence yes|no)",
                     argv[i]);
            return -1;
        }
    }
    for (int i = 0; i < c->nreplicas; i++) {
        if (!strcmp(c->replicas[i].name, r.name)) {
            snprintf(why, wl, "replica name '%s' is used twice", r.name);
            return -1;
        }
    }
    if (c->nreplicas >= CFG_MAX_REPLICAS) {
        snprintf(why, wl, "at most %d replicas", CFG_MAX_REPLICAS);
        return -1;
    }
    c->replicas[c->nreplicas++] = r;
    return 0;
}

static void render_replica(const struct config *c, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < c->nreplicas && o < len; i++) {
        char a[CFG_HOST_MAX + 16];
        const struct cfg_replica *r = &c->replicas[i];
        render_addr(&r->addr, a, sizeof(a));
        o += (size_t)snprintf(buf + o, len - o, "%s%s %s %s%s", i ? "; " : "", r->name, a,
                              kind_names[r->kind],
                              r->missing_is_divergence ? "" : " missing-is-divergence no");
    }
}

static int parse_discovery(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    int d = argc ? enum_index(disc_names, argv[0]) : -1;
    if (d < 0) {
        snprintf(why, wl,
                 "wants static | sentinel MASTER-NAME HOST:PORT... | cluster HOST:PORT...");
        return -1;
    }
    c->discovery = (enum discovery)d;
    c->discovery_master[0] = '\0';
    c->ndiscovery_addrs = 0;
    if (d == DISCOVERY_STATIC) {
        if (argc != 1) {
            snprintf(why, wl, "static takes no arguments");
            return -1;
        }
        return 0;
    }
    int first = 1;
    if (d == DISCOVERY_SENTINEL) {
        if (argc < 3) {
            snprintf(why, wl, "sentinel wants MASTER-NAME HOST:PORT...");
            return -1;
        }
        if (parse_name(argv[1], c->discovery_master, sizeof(c->discovery_master)) < 0) {
            snprintf(why, wl, "'%s' is not a valid master name", argv[1]);
            return -1;
        }
        first = 2;
    } else if (argc < 2) {
        snprintf(why, wl, "cluster wants HOST:PORT... of one or more seed nodes");
        return -1;
    }
    for (int i = first; i < argc; i++) {
        if (c->ndiscovery_addrs >= CFG_MAX_SENTINEL) {
            snprintf(why, wl, "at most %d addresses", CFG_MAX_SENTINEL);
            return -1;
        }
        if (cfg_parse_addr(argv[i], &c->discovery_addrs[c->ndiscovery_addrs]) < 0) {
            snprintf(why, wl, "'%s' is not HOST:PORT", argv[i]);
            return -1;
        }
        c->ndiscovery_addrs++;
    }
    return 0;
}

static void render_discovery(const struct config *c, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "%s", disc_names[c->discovery]);
    if (c->discovery == DISCOVERY_SENTINEL && o < len)
        o += (size_t)snprintf(buf + o, len - o, " %s", c->discovery_master);
    for (int i = 0; i < c->ndiscovery_addrs && o < len; i++) {
        char a[CFG_HOST_MAX + 16];
        render_addr(&c->discovery_addrs[i], a, sizeof(a));
        o += (size_t)snprintf(buf + o, len - o, " %s", a);
    }
}

static int parse_addrmap(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    struct cfg_addr_map m;

    if (argc == 0) /* the empty default: no map */
        return 0;
    if (argc != 2) {
        snprintf(why, wl, "wants DISCOVERED-HOST:PORT REACHED-AT-HOST:PORT");
        return -1;
    }
    for (int i = 0; i < 2; i++) {
        if (cfg_parse_addr(argv[i], i ? &m.to : &m.from) < 0) {
            snprintf(why, wl, "'%s' is not HOST:PORT", argv[i]);
            return -1;
        }
    }
    for (int i = 0; i < c->naddr_map; i++) {
        if (!strcmp(c->addr_map[i].from.host, m.from.host) &&
            c->addr_map[i].from.port == m.from.port) {
            snprintf(why, wl, "'%s' is mapped twice", argv[0]);
            return -1;
        }
    }
    if (c->naddr_map >= CFG_MAX_ADDR_MAP) {
        snprintf(why, wl, "at most %d address-map lines", CFG_MAX_ADDR_MAP);
        return -1;
    }
    c->addr_map[c->naddr_map++] = m;
    return 0;
}

static void render_addrmap(const struct config *c, char *buf, size_t len)
{
    size_t o = 0;

    buf[0] = '\0';
    for (int i = 0; i < c->naddr_map && o < len; i++) {
        char f[CFG_HOST_MAX + 16], t[CFG_HOST_MAX + 16];
        render_addr(&c->addr_map[i].from, f, sizeof(f));
        render_addr(&c->addr_map[i].to, t, sizeof(t));
        o += (size_t)snprintf(buf + o, len - o, "%s%s %s", i ? "; " : "", f, t);
    }
}

static int parse_dbs(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    if (argc < 1 || argc > CFG_MAX_DBS) {
        snprintf(why, wl, "wants 1 to %d database numbers", CFG_MAX_DBS);
        return -1;
    }
    for (int i = 0; i < argc; i++) {
        long long v;
        if (parse_ll(argv[i], &v) < 0 || v < 0 || v > 65535) {
            snprintf(why, wl, "'%s' is not a database number (0..65535)", argv[i]);
            return -1;
        }
        for (int j = 0; j < i; j++) {
            if (c->dbs[j] == v) {
                snprintf(why, wl, "database %lld is listed twice", v);
                return -1;
            }
        }
        c->dbs[i] = (int)v;
    }
    c->ndbs = argc;
    return 0;
}

static void render_dbs(const struct config *c, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int i = 0; i < c->ndbs && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%d", i ? " " : "", c->dbs[i]);
}

static int parse_modes(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    int m = 0;
    if (argc < 1) {
        snprintf(why, wl, "wants one or more of scan replica-scan random watch, or none");
        return -1;
    }
    if (argc == 1 && !strcmp(argv[0], "none")) {
        c->modes = 0;
        return 0;
    }
    for (int i = 0; i < argc; i++) {
        int k = enum_index(mode_names, argv[i]);
        if (k < 0) {
            snprintf(why, wl, "'%s' is not one of scan replica-scan random watch", argv[i]);
            return -1;
        }
        m |= 1 << k;
    }
    c->modes = m;
    return 0;
}

static void render_modes(const struct config *c, char *buf, size_t len)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int k = 0; mode_names[k] && o < len; k++)
        if (c->modes & (1 << k))
            o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? " " : "", mode_names[k]);
    if (!c->modes)
        snprintf(buf, len, "none");
}

static int parse_shard(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    int i, n, used = 0;
    if (argc != 1 || sscanf(argv[0], "%d/%d%n", &i, &n, &used) != 2 || argv[0][used] || n < 1 ||
        n > 1024 || i < 1 || i > n) {
        snprintf(why, wl, "wants I/N with 1 <= I <= N <= 1024, e.g. 1/2");
        return -1;
    }
    c->shard_index = i;
    c->shard_count = n;
    return 0;
}

static void render_shard(const struct config *c, char *buf, size_t len)
{
    snprintf(buf, len, "%d/%d", c->shard_index, c->shard_count);
}

static int parse_loglevel(struct config *c, int argc, const char **argv, char *why, size_t wl)
{
    enum log_level l;
    if (argc != 1 || log_level_parse(argv[0], &l) < 0) {
        snprintf(why, wl, "wants one of debug|info|notice|warning|error");
        return -1;
    }
    free(c->log_level);
    c->log_level = strdup(argv[0]);
    return 0;
}

static void render_loglevel(const struct config *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s", c->log_level ? c->log_level : "");
}

/* ------------------------------------------------------------ the table */

static const struct cfg_option *find_option(const char *name)
{
    for (int i = 0; i < NOPTIONS; i++)
        if (!strcasecmp(cfg_options[i].name, name))
            return &cfg_options[i];
    return NULL;
}

static int apply(struct config *c, const struct cfg_option *o, int argc, const char **argv,
                 char *why, size_t wl)
{
    char *base = (char *)c;
    char list[256];

    if (o->type == T_CUSTOM)
        return o->parse(c, argc, argv, why, wl);
    if (o->type == T_STR && argc == 0) { /* "" default */
        if (o->min > 0) {
            snprintf(why, wl, "must not be empty");
            return -1;
        }
        char **sp = (char **)(base + o->off);
        free(*sp);
        *sp = strdup("");
        return 0;
    }
    if (argc != 1) {
        snprintf(why, wl, "wants exactly one value, got %d", argc);
        return -1;
    }
    const char *v = argv[0];
    switch (o->type) {
    case T_STR: {
        char **sp = (char **)(base + o->off);
        if (o->min > 0 && !*v) {
            snprintf(why, wl, "must not be empty");
            return -1;
        }
        free(*sp);
        *sp = strdup(v);
        return 0;
    }
    case T_INT: {
        long long x;
        if (parse_ll(v, &x) < 0 || x < o->min || x > o->max) {
            snprintf(why, wl, "'%s' is not a whole number from %lld to %lld", v, o->min, o->max);
            return -1;
        }
        *(long long *)(base + o->off) = x;
        return 0;
    }
    case T_DURATION: {
        long long x;
        if (cfg_parse_duration_ms(v, &x) < 0 || x < o->min || x > o->max) {
            snprintf(why, wl,
                     "'%s' is not a duration from %lldms to %lldms (e.g. 250ms, 2s, 5m, 1h, 30d)",
                     v, o->min, o->max);
            return -1;
        }
        *(long long *)(base + o->off) = x;
        return 0;
    }
    case T_SIZE: {
        long long x;
        if (parse_size(v, &x) < 0 || x < o->min || x > o->max) {
            snprintf(why, wl, "'%s' is not a size from %lld to %lld bytes (e.g. 512kb, 1mb)", v,
                     o->min, o->max);
            return -1;
        }
        *(long long *)(base + o->off) = x;
        return 0;
    }
    case T_BOOL:
        if (!strcmp(v, "yes"))
            *(int *)(base + o->off) = 1;
        else if (!strcmp(v, "no"))
            *(int *)(base + o->off) = 0;
        else {
            snprintf(why, wl, "'%s' is not yes|no", v);
            return -1;
        }
        return 0;
    case T_ENUM: {
        int k = enum_index(o->names, v);
        if (k < 0) {
            enum_list(o->names, list, sizeof(list));
            snprintf(why, wl, "'%s' is not one of %s", v, list);
            return -1;
        }
        *(int *)(base + o->off) = k;
        return 0;
    }
    case T_ADDR:
        if (cfg_parse_addr(v, (struct cfg_addr *)(base + o->off)) < 0) {
            snprintf(why, wl, "'%s' is not HOST:PORT (port 1..65535)", v);
            return -1;
        }
        return 0;
    case T_RATIO: {
        char *end;
        double x;
        errno = 0;
        x = strtod(v, &end);
        if (end != v && !strcmp(end, "%"))
            x /= 100;
        else if (end == v || *end)
            x = -1;
        if (errno || !(x >= 0 && x <= 1)) {
            snprintf(why, wl, "'%s' is not a share from 0 to 1 (e.g. 0.05 or 5%%)", v);
            return -1;
        }
        *(double *)(base + o->off) = x;
        return 0;
    }
    case T_CUSTOM:
        break;
    }
    return -1;
}

int cfg_set(struct config *c, const char *where, int argc, const char **argv, char *err,
            size_t errlen)
{
    char why[CFG_ERR_MAX];
    const struct cfg_option *o;
    char name[80];

    if (argc < 1) {
        snprintf(err, errlen, "%s: no option name", where);
        return -1;
    }
    log_escape(name, sizeof(name), argv[0], strlen(argv[0]));
    o = find_option(argv[0]);
    if (!o) {
        snprintf(err, errlen, "%s: unknown option '%s' (see docs/config.md)", where, name);
        return -1;
    }
    why[0] = '\0';
    if (apply(c, o, argc - 1, argv + 1, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: option '%s': %s", where, o->name, why);
        return -1;
    }
    return 0;
}

void cfg_init(struct config *c)
{
    char err[CFG_ERR_MAX];

    memset(c, 0, sizeof(*c));
    for (int i = 0; i < NOPTIONS; i++) {
        const struct cfg_option *o = &cfg_options[i];
        char *argv[16];
        char buf[512];
        const char *why;
        int argc = cfg_split(o->def, strlen(o->def), argv, NULL, 16, buf, sizeof(buf), &why);
        if (argc < 0 || apply(c, o, argc, (const char **)argv, err, sizeof(err)) < 0)
            fatalx("bad default for option '%s': %s", o->name, err);
    }
}

void cfg_free(struct config *c)
{
    for (int i = 0; i < NOPTIONS; i++) {
        if (cfg_options[i].type == T_STR) {
            char **sp = (char **)((char *)c + cfg_options[i].off);
            free(*sp);
            *sp = NULL;
        }
    }
    free(c->log_level);
    c->log_level = NULL;
    free(c->redis_password);
    c->redis_password = NULL;
    free(c->sentinel_password);
    c->sentinel_password = NULL;
    free(c->http_token);
    c->http_token = NULL;
}

int cfg_parse_text(struct config *c, const char *name, const char *text, size_t len, char *err,
                   size_t errlen)
{
    size_t pos = 0;
    int lineno = 0;

    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        char where[300];
        char *argv[64];
        const char *why;
        char *buf;

        pos += ll + (nl ? 1 : 0);
        lineno++;
        if (ll && line[ll - 1] == '\r')
            ll--;
        snprintf(where, sizeof(where), "%s:%d", name, lineno);
        if (memchr(line, '\0', ll)) {
            snprintf(err, errlen, "%s: NUL byte in line", where);
            return -1;
        }
        buf = malloc(ll + 65);
        if (!buf) {
            snprintf(err, errlen, "%s: out of memory", where);
            return -1;
        }
        int argc = cfg_split(line, ll, argv, NULL, 64, buf, ll + 65, &why);
        if (argc < 0) {
            snprintf(err, errlen, "%s: %s", where, why);
            free(buf);
            return -1;
        }
        int rc = argc ? cfg_set(c, where, argc, (const char **)argv, err, errlen) : 0;
        free(buf);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static char *read_secret(const char *path, char *err, size_t errlen, const char *what)
{
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n;

    if (!f) {
        snprintf(err, errlen, "%s '%s': %s", what, path, strerror(errno));
        return NULL;
    }
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        buf[--n] = '\0';
    if (n == 0) {
        snprintf(err, errlen, "%s '%s' is empty", what, path);
        return NULL;
    }
    return strdup(buf);
}

int cfg_finish(struct config *c, char *err, size_t errlen)
{
    const char *env;

    if (c->agent_id == NULL || !*c->agent_id) {
        char host[128];
        if (gethostname(host, sizeof(host)) < 0)
            snprintf(host, sizeof(host), "agent");
        host[sizeof(host) - 1] = '\0';
        free(c->agent_id);
        c->agent_id = strdup(host);
    }
    for (int i = 0; i < c->nreplicas; i++) {
        const struct cfg_replica *r = &c->replicas[i];
        if (!strcmp(r->addr.host, c->primary.host) && r->addr.port == c->primary.port &&
            c->discovery == DISCOVERY_STATIC) {
            snprintf(err, errlen, "option 'replica': replica '%s' has the primary's address",
                     r->name);
            return -1;
        }
    }
    /* A Redis Cluster has only database 0. */
    if (c->discovery == DISCOVERY_CLUSTER && (c->ndbs != 1 || c->dbs[0] != 0)) {
        snprintf(err, errlen, "option 'db': a Redis Cluster has only database 0");
        return -1;
    }
    if (c->lag_poll_interval > c->heartbeat_interval * 10) {
        snprintf(err, errlen,
                 "option 'lag-poll-interval': %lldms is more than ten heartbeat intervals",
                 c->lag_poll_interval);
        return -1;
    }
    free(c->redis_password);
    c->redis_password = NULL;
    if (c->redis_password_file && *c->redis_password_file) {
        c->redis_password =
            read_secret(c->redis_password_file, err, errlen, "option 'redis-password-file':");
        if (!c->redis_password)
            return -1;
    } else if ((env = getenv("KEYDRIFT_REDIS_PASSWORD")) != NULL && *env) {
        c->redis_password = strdup(env);
    }
    free(c->sentinel_password);
    c->sentinel_password = NULL;
    if (c->sentinel_password_file && *c->sentinel_password_file) {
        c->sentinel_password =
            read_secret(c->sentinel_password_file, err, errlen, "option 'sentinel-password-file':");
        if (!c->sentinel_password)
            return -1;
    } else if ((env = getenv("KEYDRIFT_SENTINEL_PASSWORD")) != NULL && *env) {
        c->sentinel_password = strdup(env);
    }
    free(c->http_token);
    c->http_token = NULL;
    if (c->http_token_file && *c->http_token_file) {
        c->http_token = read_secret(c->http_token_file, err, errlen, "option 'http-token-file':");
        if (!c->http_token)
            return -1;
    }
    return 0;
}

int cfg_load(struct config *c, const char *path, int argc, char **argv, char *err, size_t errlen)
{
    cfg_init(c);
    if (path) {
        FILE *f = fopen(path, "rb");
        char *text = NULL;
        size_t cap = 0, n = 0;
        if (!f) {
            snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
            return -1;
        }
        for (;;) {
            if (n == cap) {
                if (cap >= (16u << 20)) {
                    snprintf(err, errlen, "%s: larger than 16 MB", path);
                    fclose(f);
                    free(text);
                    return -1;
                }
                cap = cap ? cap * 2 : 8192;
                char *t = realloc(text, cap);
                if (!t) {
                    fclose(f);
                    free(text);
                    snprintf(err, errlen, "%s: out of memory", path);
                    return -1;
                }
                text = t;
            }
            size_t r = fread(text + n, 1, cap - n, f);
            if (r == 0)
                break;
            n += r;
        }
        int ferr = ferror(f);
        fclose(f);
        if (ferr) {
            free(text);
            snprintf(err, errlen, "%s: read error", path);
            return -1;
        }
        int rc = cfg_parse_text(c, path, text, n, err, errlen);
        free(text);
        if (rc < 0)
            return -1;
    }
    /* Command-line overrides: --name value... up to the next --option. */
    for (int i = 0; i < argc;) {
        char where[64];
        const char *args[64];
        int n = 0;

        snprintf(where, sizeof(where), "command line argument %d", i + 1);
        if (strncmp(argv[i], "--", 2) != 0 || !argv[i][2]) {
            snprintf(err, errlen, "%s: expected --option, got '%s'", where, argv[i]);
            return -1;
        }
        args[n++] = argv[i] + 2;
        i++;
        while (i < argc && n < 64 && strncmp(argv[i], "--", 2) != 0)
            args[n++] = argv[i++];
        if (cfg_set(c, where, n, args, err, errlen) < 0)
            return -1;
    }
    return cfg_finish(c, err, errlen);
}

void cfg_option_render(const struct config *c, int i, char *buf, size_t len)
{
    const struct cfg_option *o = &cfg_options[i];
    const char *base = (const char *)c;

    switch (o->type) {
    case T_STR: {
        const char *s = *(char *const *)(base + o->off);
        snprintf(buf, len, "%s", s ? s : "");
        break;
    }
    case T_INT:
        snprintf(buf, len, "%lld", *(const long long *)(base + o->off));
        break;
    case T_DURATION:
        snprintf(buf, len, "%lldms", *(const long long *)(base + o->off));
        break;
    case T_SIZE:
        snprintf(buf, len, "%lld", *(const long long *)(base + o->off));
        break;
    case T_BOOL:
        snprintf(buf, len, "%s", *(const int *)(base + o->off) ? "yes" : "no");
        break;
    case T_ENUM:
        snprintf(buf, len, "%s", o->names[*(const int *)(base + o->off)]);
        break;
    case T_ADDR:
        render_addr((const struct cfg_addr *)(base + o->off), buf, len);
        break;
    case T_RATIO:
        snprintf(buf, len, "%.17g", *(const double *)(base + o->off));
        break;
    case T_CUSTOM:
        o->render(c, buf, len);
        break;
    }
}

int cfg_log_changes(const struct config *a, const struct config *b)
{
    int n = 0;
    for (int i = 0; i < NOPTIONS; i++) {
        char va[2048], vb[2048], ea[512], eb[512];
        cfg_option_render(a, i, va, sizeof(va));
        cfg_option_render(b, i, vb, sizeof(vb));
        if (strcmp(va, vb) != 0) {
            log_notice("config: %s changed from \"%s\" to \"%s\"", cfg_options[i].name,
                       log_escape(ea, sizeof(ea), va, strlen(va)),
                       log_escape(eb, sizeof(eb), vb, strlen(vb)));
            n++;
        }
    }
    return n;
}

const char *cfg_replica_kind_name(enum replica_kind k)
{
    return kind_names[k];
}

const char *cfg_format_name(enum msg_format f)
{
    return fmt_names[f];
}

const struct cfg_replica *cfg_find_replica(const struct config *c, const char *name)
{
    for (int i = 0; i < c->nreplicas; i++)
        if (!strcmp(c->replicas[i].name, name))
            return &c->replicas[i];
    return NULL;
}
