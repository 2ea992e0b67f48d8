/*
 * info -- a pure parser of Redis INFO text (no I/O, no allocation).
 *
 * INFO is a list of lines ending in "\r\n" (or "\n" when a human pasted it),
 * with "# Section" headers, blank lines between sections, and "key:value"
 * lines. Every read below is bounded by the caller's len: the text need not
 * be NUL-terminated and may be cut anywhere, even in the middle of a line.
 */
#include "info.h"

#include <limits.h>
#include <string.h>

/* One "key:value" line, pointing into the caller's text. */
struct info_kv {
    const char *key;
    size_t klen;
    const char *val;
    size_t vlen;
};

/*
 * Advances *pos over text[0..len) to the next "key:value" line and fills kv
 * with it. Blank lines, "# Section" headers and lines without a colon are
 * skipped. One trailing '\r' is stripped from the value, so CRLF and LF text
 * parse alike. The last line need not end in a newline. Returns 1 when a line
 * was found, 0 at the end of the text.
 */
static int next_kv(const char *text, size_t len, size_t *pos, struct info_kv *kv)
{
    while (*pos < len) {
        const char *line = text + *pos;
        const char *nl = memchr(line, '\n', len - *pos);
        size_t ll = nl ? (size_t)(nl - line) : len - *pos;

        *pos += ll + (nl ? 1 : 0);
        if (ll && line[ll - 1] == '\r')
            ll--;
        if (ll == 0 || line[0] == '#')
            continue;
        const char *colon = memchr(line, ':', ll);
        if (!colon)
            continue;
        kv->key = line;
        kv->klen = (size_t)(colon - line);
        kv->val = colon + 1;
        kv->vlen = ll - kv->klen - 1;
        return 1;
    }
    return 0;
}

/* True when the n bytes at s are exactly the NUL-terminated string name. */
static int is(const char *s, size_t n, const char *name)
{
    return strlen(name) == n && memcmp(s, name, n) == 0;
}

/*
 * Parses the n bytes at s as a whole decimal number with an optional '-'.
 * Returns 0 and sets *out, or -1 (empty, stray characters, overflow) leaving
 * *out alone.
 */
static int parse_num(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    unsigned long long v = 0;
    unsigned long long lim = (unsigned long long)LLONG_MAX;

    if (n > 0 && s[0] == '-') {
        neg = 1;
        lim++; /* -LLONG_MIN */
        i++;
    }
    if (i == n)
        return -1;
    for (; i < n; i++) {
        unsigned d = (unsigned char)s[i] - '0';
        if (d > 9 || v > (lim - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    if (neg)
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    else
        *out = (long long)v;
    return 0;
}

/* parse_num into a long long field; returns 1 when stored, 0 when not. */
static int set_ll(const char *s, size_t n, long long *field)
{
    return parse_num(s, n, field) == 0;
}

/* parse_num into an int field, only when the value fits; 1 stored, 0 not. */
static int set_int(const char *s, size_t n, int *field)
{
    long long v;
    if (parse_num(s, n, &v) < 0 || v < INT_MIN || v > INT_MAX)
        return 0;
    *field = (int)v;
    return 1;
}

/*
 * Copies the n bytes at s into out (outsz bytes), cut to outsz-1 bytes and
 * always NUL-terminated. Does nothing when outsz is 0.
 */
static void copy_str(char *out, size_t outsz, const char *s, size_t n)
{
    if (outsz == 0)
        return;
    if (n > outsz - 1)
        n = outsz - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

/*
 * Walks a "k1=v1,k2=v2,..." list (the value of a slaveN or dbN line) and calls
 * fn for each pair; a pair without '=' is skipped. fn's return values are
 * summed and returned.
 */
static int each_pair(const char *s, size_t n,
                     int (*fn)(void *arg, const char *k, size_t kl, const char *v, size_t vl),
                     void *arg)
{
    size_t i = 0;
    int found = 0;

    while (i < n) {
        const char *p = s + i;
        const char *comma = memchr(p, ',', n - i);
        size_t pl = comma ? (size_t)(comma - p) : n - i;
        const char *eq = memchr(p, '=', pl);

        i += pl + (comma ? 1 : 0);
        if (eq)
            found += fn(arg, p, (size_t)(eq - p), eq + 1, pl - (size_t)(eq - p) - 1);
    }
    return found;
}

/* One pair of a "slaveN:" line into struct info_slave; 1 when stored. */
static int slave_pair(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    struct info_slave *s = arg;

    if (is(k, kl, "ip")) {
        copy_str(s->ip, sizeof(s->ip), v, vl);
        return 1;
    }
    if (is(k, kl, "port"))
        return set_int(v, vl, &s->port);
    if (is(k, kl, "state")) {
        copy_str(s->state, sizeof(s->state), v, vl);
        return 1;
    }
    if (is(k, kl, "offset"))
        return set_ll(v, vl, &s->offset);
    if (is(k, kl, "lag"))
        return set_ll(v, vl, &s->lag);
    return 0;
}

/* One pair of the "db0:" line: only keys= matters here; 1 when stored. */
static int db_pair(void *arg, const char *k, size_t kl, const char *v, size_t vl)
{
    if (is(k, kl, "keys"))
        return set_ll(v, vl, arg);
    return 0;
}

/* True for "slave" followed by one or more digits (not slave_repl_offset). */
static int is_slave_key(const char *k, size_t kl)
{
    if (kl <= 5 || memcmp(k, "slave", 5) != 0)
        return 0;
    for (size_t i = 5; i < kl; i++)
        if (k[i] < '0' || k[i] > '9')
            return 0;
    return 1;
}

/*
 * Applies one "key:value" line to r. Returns 1 when it stored a value, 0 when
 * the key is not one we track or its value did not parse (the field keeps
 * what it had).
 */
static int apply_kv(struct info_repl *r, const struct info_kv *kv)
{
    const char *k = kv->key, *v = kv->val;
    size_t kl = kv->klen, vl = kv->vlen;

#define STR(name)                                                                                  \
    if (is(k, kl, #name)) {                                                                        \
        copy_str(r->name, sizeof(r->name), v, vl);                                                 \
        return 1;                                                                                  \
    }
#define LL(name)                                                                                   \
    if (is(k, kl, #name))                                                                          \
        return set_ll(v, vl, &r->name);
#define INT(name)                                                                                  \
    if (is(k, kl, #name))                                                                          \
        return set_int(v, vl, &r->name);

    STR(role)
    STR(run_id)
    STR(master_replid)
    STR(master_host)
    LL(master_repl_offset)
    LL(slave_repl_offset)
    LL(slave_read_repl_offset)
    LL(master_last_io_seconds_ago)
    LL(sync_full)
    LL(uptime_in_seconds)
    INT(master_sync_in_progress)
    INT(master_port)
    INT(connected_slaves)
#undef STR
#undef LL
#undef INT

    if (is(k, kl, "master_link_status")) {
        if (is(v, vl, "up"))
            r->master_link_up = 1;
        else if (is(v, vl, "down"))
            r->master_link_up = 0;
        else
            return 0;
        return 1;
    }
    if (is(k, kl, "db0")) {
        long long keys = -1;
        if (!each_pair(v, vl, db_pair, &keys))
            return 0;
        r->db0_keys = keys;
        return 1;
    }
    if (is_slave_key(k, kl)) {
        struct info_slave s;
        if (r->nslaves >= INFO_MAX_SLAVES)
            return 0;
        memset(&s, 0, sizeof(s));
        s.port = -1;
        s.offset = -1;
        s.lag = -1;
        if (!each_pair(v, vl, slave_pair, &s))
            return 0;
        r->slaves[r->nslaves++] = s;
        return 1;
    }
    return 0;
}

void info_repl_init(struct info_repl *r)
{
    memset(r, 0, sizeof(*r));
    r->master_repl_offset = -1;
    r->slave_repl_offset = -1;
    r->slave_read_repl_offset = -1;
    r->master_link_up = -1;
    r->master_last_io_seconds_ago = -1;
    r->master_sync_in_progress = -1;
    r->master_port = -1;
    r->connected_slaves = -1;
    r->nslaves = 0;
    r->sync_full = -1;
    r->uptime_in_seconds = -1;
    r->db0_keys = -1;
}

/*
 * Resets r to its defaults and fills in every known field found in the text.
 * A field that appears twice keeps its last value; slaveN lines are kept in
 * the order they appear, at most INFO_MAX_SLAVES, and a slaveN line with no
 * recognisable pair is dropped. Text values longer than their field are cut.
 * "Found" means stored: a known key whose value does not parse does not
 * count, so text holding only such lines returns -1.
 */
int info_parse(const char *text, size_t len, struct info_repl *r)
{
    struct info_kv kv;
    size_t pos = 0;
    int found = 0;

    info_repl_init(r);
    if (!text)
        return -1;
    while (next_kv(text, len, &pos, &kv))
        found += apply_kv(r, &kv);
    return found ? 0 : -1;
}

/*
 * Looks for the first line whose key is exactly field and copies its value
 * (without the line ending) into out, cut to outsz-1 bytes and
 * NUL-terminated; out is left alone when the field is absent or outsz is 0.
 */
int info_field(const char *text, size_t len, const char *field, char *out, size_t outsz)
{
    struct info_kv kv;
    size_t pos = 0;

    if (!text || !field)
        return 0;
    while (next_kv(text, len, &pos, &kv)) {
        if (is(kv.key, kv.klen, field)) {
            copy_str(out, outsz, kv.val, kv.vlen);
            return 1;
        }
    }
    return 0;
}
