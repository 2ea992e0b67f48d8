/*
 * history -- `keydrift history`: the divergence history from SQLite, as a
 * table, CSV or JSON. Reads the database read-only, so it is safe beside a
 * running agent.
 */
#include "clock.h"
#include "cmds.h"
#include "config.h"
#include "store.h"
#include "textenc.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <jansson.h>

enum history_format { HF_TABLE, HF_JSON, HF_CSV };

static const char *const history_states[] = {"open",     "suspect", "confirmed", "repairing",
                                             "resolved", "cleared", NULL};
static const char *const history_kinds[] = {"missing", "extra", "type", "value", "ttl", NULL};

static void history_usage(FILE *f)
{
    fprintf(f, "usage: keydrift history [--db PATH] [--config FILE] [--since DURATION|UNIX_MS]\n"
               "                        [--key KEY] [--replica NAME] [--state STATE|open]\n"
               "                        [--kind KIND] [--limit N] [--format table|json|csv]\n"
               "\n"
               "Lists recorded divergences, newest first, from the history database.\n"
               "\n"
               "  --db PATH        the database (default: history-db from --config, else\n"
               "                   /var/lib/keydrift/keydrift.db)\n"
               "  --config FILE    read history-db from this keydrift config file\n"
               "  --since WHEN     first seen within a duration (30m, 1h, 2d) or at/after a\n"
               "                   Unix time in milliseconds\n"
               "  --key KEY        one key, written as shown in the output: \\xNN for a byte,\n"
               "                   \\\\ for a backslash\n"
               "  --replica NAME   one replica\n"
               "  --state STATE    suspect|confirmed|repairing|resolved|cleared, or open\n"
               "                   (suspect, confirmed or repairing)\n"
               "  --kind KIND      missing|extra|type|value|ttl\n"
               "  --limit N        at most N rows, 1..10000 (default 100)\n"
               "  --format FMT     table (default), json ({\"divergences\":[...]}) or csv\n"
               "\n"
               "Exit status: 0 ok, 2 bad arguments or an unreadable database.\n");
}

/* Whether s is one of the NULL-terminated list. */
static int history_one_of(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (!strcmp(s, *list))
            return 1;
    return 0;
}

/*
 * Parses --since: all digits is a Unix time in ms; otherwise a duration
 * (30m, 1h, 2d, ...) counted back from now. 0 or -1.
 */
static int history_parse_since(const char *v, int64_t *out)
{
    long long d;
    char *end;

    if (*v && strspn(v, "0123456789") == strlen(v)) {
        errno = 0;
        long long ms = strtoll(v, &end, 10);
        if (errno || *end)
            return -1;
        *out = ms;
        return 0;
    }
    if (cfg_parse_duration_ms(v, &d) < 0 || d <= 0)
        return -1;
    *out = (int64_t)clock_wall_ms() - d;
    return 0;
}

/* Formats Unix ms as "YYYY-MM-DDTHH:MM:SSZ" (UTC); "" for null. */
static void history_time(json_t *v, char *buf, size_t len)
{
    struct tm tm;
    time_t t;

    buf[0] = '\0';
    if (!json_is_integer(v))
        return;
    t = (time_t)(json_integer_value(v) / 1000);
    if (!gmtime_r(&t, &tm))
        return;
    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* A string member, or dflt when absent or null. */
static const char *history_str(json_t *o, const char *name, const char *dflt)
{
    const char *s = json_string_value(json_object_get(o, name));
    return s ? s : dflt;
}

/* Prints the rows as aligned columns, the (escaped) key last. */
static void history_table(json_t *rows)
{
    static const char *const head[] = {"ID",    "FIRST SEEN (UTC)", "REPLICA", "KIND",
                                       "STATE", "RESOLUTION",       "KEY"};
    enum { NCOL = 7 };
    size_t w[NCOL], i;
    json_t *o;
    char idb[32], tb[32];

    if (json_array_size(rows) == 0) {
        printf("no divergences match\n");
        return;
    }
    for (int c = 0; c < NCOL; c++)
        w[c] = strlen(head[c]);
    json_array_foreach(rows, i, o)
    {
        const char *cells[NCOL];
        snprintf(idb, sizeof(idb), "%lld", (long long)json_integer_value(json_object_get(o, "id")));
        history_time(json_object_get(o, "first_seen"), tb, sizeof(tb));
        cells[0] = idb;
        cells[1] = tb;
        cells[2] = history_str(o, "replica", "");
        cells[3] = history_str(o, "kind", "");
        cells[4] = history_str(o, "state", "");
        cells[5] = history_str(o, "resolution", "-");
        cells[6] = history_str(o, "key", "");
        for (int c = 0; c < NCOL - 1; c++)
            if (strlen(cells[c]) > w[c])
                w[c] = strlen(cells[c]);
    }
    printf("%*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", (int)w[0], head[0], (int)w[1], head[1],
           (int)w[2], head[2], (int)w[3], head[3], (int)w[4], head[4], (int)w[5], head[5], head[6]);
    json_array_foreach(rows, i, o)
    {
        snprintf(idb, sizeof(idb), "%lld", (long long)json_integer_value(json_object_get(o, "id")));
        history_time(json_object_get(o, "first_seen"), tb, sizeof(tb));
        printf("%*s  %-*s  %-*s  %-*s  %-*s  %-*s  %s\n", (int)w[0], idb, (int)w[1], tb, (int)w[2],
               history_str(o, "replica", ""), (int)w[3], history_str(o, "kind", ""), (int)w[4],
               history_str(o, "state", ""), (int)w[5], history_str(o, "resolution", "-"),
               history_str(o, "key", ""));
    }
}

/* Writes one CSV field per RFC 4180: quoted when it holds , " CR or LF. */
static void history_csv_field(const char *s, int last)
{
    if (strpbrk(s, ",\"\r\n")) {
        putchar('"');
        for (; *s; s++) {
            if (*s == '"')
                putchar('"');
            putchar(*s);
        }
        putchar('"');
    } else {
        fputs(s, stdout);
    }
    fputs(last ? "\r\n" : ",", stdout);
}

/* Prints the rows as CSV with a header line; times as UTC ISO 8601. */
static void history_csv(json_t *rows)
{
    static const char *const cols[] = {"id",         "first_seen", "confirmed_at", "resolved_at",
                                       "replica",    "db",         "kind",         "state",
                                       "resolution", "found_by",   "key",          "key_base64"};
    enum { NCOL = sizeof(cols) / sizeof(cols[0]) };
    size_t i;
    json_t *o;

    for (size_t c = 0; c < NCOL; c++)
        history_csv_field(cols[c], c == NCOL - 1);
    json_array_foreach(rows, i, o)
    {
        for (size_t c = 0; c < NCOL; c++) {
            json_t *v = json_object_get(o, cols[c]);
            char buf[64];
            const char *text;
            if (!strcmp(cols[c], "first_seen") || !strcmp(cols[c], "confirmed_at") ||
                !strcmp(cols[c], "resolved_at")) {
                history_time(v, buf, sizeof(buf));
                text = buf;
            } else if (json_is_integer(v)) {
                snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
                text = buf;
            } else {
                text = json_is_string(v) ? json_string_value(v) : "";
            }
            history_csv_field(text, c == NCOL - 1);
        }
    }
}

/* Returns the value after flag argv[*i], advancing *i; NULL (reported) if none. */
static const char *history_arg(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc) {
        fprintf(stderr, "keydrift history: %s needs a value (see --help)\n", argv[*i]);
        return NULL;
    }
    return argv[++*i];
}

int cmd_history(int argc, char **argv)
{
    const char *db = NULL, *config = NULL, *format = "table";
    struct store_filter f;
    enum history_format fmt;
    unsigned char *key = NULL;
    char err[CFG_ERR_MAX];
    char *dbpath = NULL;
    struct store *s = NULL;
    json_t *rows = NULL;
    struct stat sb;
    int rc = 2;

    memset(&f, 0, sizeof(f));
    f.limit = 100;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            history_usage(stdout);
            rc = 0;
            goto out;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "keydrift history: unexpected argument '%s' (see --help)\n", a);
            goto out;
        }
        if (!(v = history_arg(argc, argv, &i)))
            goto out;
        if (!strcmp(a, "--db")) {
            db = v;
        } else if (!strcmp(a, "--config")) {
            config = v;
        } else if (!strcmp(a, "--since")) {
            if (history_parse_since(v, &f.since) < 0) {
                fprintf(stderr,
                        "keydrift history: --since '%s' is neither a duration (30m, 1h, 2d) "
                        "nor a Unix time in ms\n",
                        v);
                goto out;
            }
        } else if (!strcmp(a, "--key")) {
            size_t n = strlen(v);
            free(key);
            if (!(key = malloc(n ? n : 1)) || text_unescape(v, key, n, &f.keylen) < 0) {
                fprintf(stderr,
                        "keydrift history: --key '%s' has a bad escape (use \\xNN or \\\\)\n", v);
                goto out;
            }
            f.key = key;
            f.has_key = 1;
        } else if (!strcmp(a, "--replica")) {
            f.replica = v;
        } else if (!strcmp(a, "--state")) {
            if (!history_one_of(v, history_states)) {
                fprintf(stderr,
                        "keydrift history: --state '%s' is not one of open, suspect, confirmed, "
                        "repairing, resolved, cleared\n",
                        v);
                goto out;
            }
            f.state = v;
        } else if (!strcmp(a, "--kind")) {
            if (!history_one_of(v, history_kinds)) {
                fprintf(stderr,
                        "keydrift history: --kind '%s' is not one of missing, extra, type, "
                        "value, ttl\n",
                        v);
                goto out;
            }
            f.kind = v;
        } else if (!strcmp(a, "--limit")) {
            char *end;
            errno = 0;
            long n = strtol(v, &end, 10);
            if (errno || end == v || *end || n < 1 || n > 10000) {
                fprintf(stderr, "keydrift history: --limit '%s' is not a number from 1 to 10000\n",
                        v);
                goto out;
            }
            f.limit = (int)n;
        } else if (!strcmp(a, "--format")) {
            format = v;
        } else {
            fprintf(stderr, "keydrift history: unknown option '%s' (see --help)\n", a);
            goto out;
        }
    }
    if (!strcmp(format, "table")) {
        fmt = HF_TABLE;
    } else if (!strcmp(format, "json")) {
        fmt = HF_JSON;
    } else if (!strcmp(format, "csv")) {
        fmt = HF_CSV;
    } else {
        fprintf(stderr, "keydrift history: --format '%s' is not table, json or csv\n", format);
        goto out;
    }

    /* The database: --db, else history-db from the config file, else the default. */
    if (db) {
        dbpath = strdup(db);
    } else {
        struct config cfg;
        if (!config) {
            cfg_init(&cfg); /* the default history-db */
        } else if (cfg_load(&cfg, config, 0, NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "keydrift history: %s\n", err);
            cfg_free(&cfg);
            goto out;
        }
        dbpath = cfg.history_db ? strdup(cfg.history_db) : NULL;
        cfg_free(&cfg);
    }
    if (!dbpath) {
        fprintf(stderr, "keydrift history: out of memory\n");
        goto out;
    }
    if (stat(dbpath, &sb) < 0) {
        fprintf(stderr,
                "keydrift history: no history database at %s (%s); give --db PATH, or "
                "--config FILE with history-db\n",
                dbpath, strerror(errno));
        goto out;
    }
    if (!(s = store_open_readonly(dbpath, err, sizeof(err)))) {
        fprintf(stderr, "keydrift history: %s\n", err);
        goto out;
    }
    if (!(rows = store_query_divergences(s, &f, err, sizeof(err)))) {
        fprintf(stderr, "keydrift history: %s: %s\n", dbpath, err);
        goto out;
    }

    switch (fmt) {
    case HF_TABLE:
        history_table(rows);
        break;
    case HF_CSV:
        history_csv(rows);
        break;
    case HF_JSON: {
        json_t *doc = json_pack("{sO}", "divergences", rows);
        if (!doc || json_dumpf(doc, stdout, JSON_INDENT(2)) < 0) {
            fprintf(stderr, "keydrift history: cannot write JSON\n");
            json_decref(doc);
            goto out;
        }
        putchar('\n');
        json_decref(doc);
        break;
    }
    }
    rc = fflush(stdout) == 0 ? 0 : 2;
out:
    json_decref(rows);
    store_close(s);
    free(dbpath);
    free(key);
    return rc;
}
