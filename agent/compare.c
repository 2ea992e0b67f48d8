/*
 * compare -- is a key the same on the primary and on a replica?
 *
 * Three layers: cmp_fetch() reads what one node holds (PTTL, MEMORY USAGE,
 * DUMP) for a batch of keys in two pipelined rounds; cmp_judge() decides from
 * two such sides without I/O; cmp_deep() looks at the values themselves when
 * the DUMP payloads differ or were not fetched, so that two encodings of one
 * logical value are equal.
 *
 * Canonical values. The deep comparison digests a value as a stream of
 * length-prefixed items: the type name, then the elements in a canonical
 * order (by field or member for hashes, sets and sorted sets; as stored for
 * lists and streams). Scores are hashed as doubles, not as the server's text,
 * because servers of different versions print the same double differently.
 *
 * Large values (MEMORY USAGE above max-value-bytes) are never fetched whole:
 * the length is compared, then a bounded sample of elements, taken from both
 * sides for the set-like types so that an element present on only one side can
 * be found from either.
 */
#include "compare.h"
#include "clock.h"
#include "log.h"
#include "replyrd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define CMP_TRAILER         10          /* 2-byte RDB version + 8-byte CRC64 */
#define CMP_CHUNK           256         /* keys per pipelined round or script call */
#define CMP_MAX_CHUNKS      4           /* script calls per node in flight in cmp_fetch_many */
#define CMP_SAMPLES         16          /* elements sampled from each side of a large value */
#define CMP_RANGE_BYTES     4096        /* bytes per sampled range of a large string */
#define CMP_ELEM_MAX        (64 * 1024) /* a sampled hash value longer than this: length only */
#define CMP_SAMPLE_EPOCH_MS (10 * 60 * 1000) /* a key's sampled places stay put this long */
#define CMP_ELEM_BYTES      16 /* lower bound of an element's size, to size unknowns */

static const char *const kind_names[CMP_KIND_COUNT] = {
    [CMP_EQUAL] = "equal", [CMP_MISSING] = "missing", [CMP_EXTRA] = "extra",
    [CMP_TYPE] = "type",   [CMP_VALUE] = "value",     [CMP_TTL] = "ttl",
    [CMP_GONE] = "gone",   [CMP_SKIPPED] = "skipped", [CMP_ERROR] = "error",
};

const char *cmp_kind_name(enum cmp_kind k)
{
    if ((unsigned)k >= CMP_KIND_COUNT)
        return "unknown";
    return kind_names[k];
}

int cmp_is_divergence(enum cmp_kind k)
{
    return k == CMP_MISSING || k == CMP_EXTRA || k == CMP_TYPE || k == CMP_VALUE || k == CMP_TTL;
}

/*
 * Resets a side to "nothing known" (exists = -1) and frees its DUMP payload.
 */
void cmp_side_clear(struct cmp_side *s)
{
    free(s->dump);
    memset(s, 0, sizeof(*s));
    s->exists = -1;
    s->pttl = -2;
    s->mem = -1;
}

/*
 * The part of a DUMP payload that describes the value: everything but the
 * 10-byte trailer. A payload shorter than the trailer is not a valid DUMP;
 * it is then compared whole, so that cmp_dump_equal and cmp_dump_digest agree.
 */
static size_t dump_body(size_t len)
{
    return len < CMP_TRAILER ? len : len - CMP_TRAILER;
}

int cmp_dump_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t al = dump_body(alen), bl = dump_body(blen);

    if (!a || !b)
        return 0;
    return al == bl && memcmp(a, b, al) == 0;
}

/* 0 means "unknown" in struct cmp_side, so a real hash of 0 becomes 1. */
static uint64_t nonzero(uint64_t h)
{
    return h ? h : 1;
}

uint64_t cmp_dump_digest(const char *a, size_t alen)
{
    if (!a)
        return 0;
    return nonzero(XXH3_64bits(a, dump_body(alen)));
}

/*
 * TTL verdict for two sides holding the same value: CMP_TTL when one has an
 * expiry and the other none (unless the expiring one is within the tolerance
 * of expiring anyway), or when both expire and differ by more than the
 * tolerance plus the replica's current lag; else CMP_EQUAL.
 */
enum cmp_kind cmp_judge_ttl(const struct cmp_side *p, const struct cmp_side *r,
                            const struct cmp_opts *o)
{
    long long tol = o->ttl_tolerance_ms, lag = o->lag_ms > 0 ? o->lag_ms : 0;

    if (p->pttl >= 0 && r->pttl < 0)
        return p->pttl < tol ? CMP_EQUAL : CMP_TTL;
    if (r->pttl >= 0 && p->pttl < 0)
        return r->pttl < tol ? CMP_EQUAL : CMP_TTL;
    if (p->pttl >= 0 && r->pttl >= 0) {
        long long d = p->pttl > r->pttl ? p->pttl - r->pttl : r->pttl - p->pttl;
        if (d > tol + lag)
            return CMP_TTL;
    }
    return CMP_EQUAL;
}

/*
 * The verdict from two fetched sides, in order: an unknown side is an error;
 * presence decides gone, extra and missing (a primary key within the TTL
 * tolerance of expiring, or any key under missing-is-divergence no, is not
 * missing); types known from the fetch decide a type mismatch; payloads that
 * differ or were not fetched need the deep comparison; equal payloads leave
 * only the TTL rule.
 */
enum cmp_kind cmp_judge(const struct cmp_side *p, const struct cmp_side *r,
                        const struct cmp_opts *o, int *needs_deep)
{
    if (needs_deep)
        *needs_deep = 0;
    if (p->exists < 0 || r->exists < 0)
        return CMP_ERROR;
    if (!p->exists && !r->exists)
        return CMP_GONE;
    if (!p->exists)
        return CMP_EXTRA;
    if (!r->exists) {
        if (!o->missing_is_divergence)
            return CMP_EQUAL;
        if (p->pttl >= 0 && p->pttl < o->ttl_tolerance_ms)
            return CMP_EQUAL; /* about to expire: the replica may be right already */
        return CMP_MISSING;
    }
    /* Both present. Types known from the fetch (large keys) settle a type mismatch. */
    if (p->type[0] && r->type[0] && strcmp(p->type, r->type) != 0)
        return CMP_TYPE;
    if (p->large || r->large || !p->dump || !r->dump ||
        !cmp_dump_equal(p->dump, p->dumplen, r->dump, r->dumplen)) {
        if (needs_deep)
            *needs_deep = 1;
        return CMP_VALUE;
    }
    return cmp_judge_ttl(p, r, o);
}

/* ------------------------------------------------------------------ fetch */

/* Copies a status or string reply into a fixed buffer, truncating. */
static void copy_str(char *dst, size_t dstsz, const redisReply *r)
{
    size_t n = r->len < dstsz - 1 ? (size_t)r->len : dstsz - 1;
    memcpy(dst, r->str, n);
    dst[n] = '\0';
}

/*
 * Reads the PTTL and MEMORY USAGE replies of one key into s. A PTTL error
 * leaves the key unknown; a MEMORY USAGE error (disabled by ACL, say) only
 * leaves the size unknown. Returns -1 when the connection failed.
 */
static int read_round1(struct rconn *c, struct cmp_side *s, long long max_value_bytes)
{
    redisReply *t = rconn_reply(c), *m;

    if (!t)
        return -1;
    m = rconn_reply(c);
    if (!m) {
        freeReplyObject(t);
        return -1;
    }
    if (t->type == REDIS_REPLY_INTEGER) {
        s->exists = t->integer != -2;
        s->pttl = t->integer;
    } else {
        s->exists = -1;
    }
    if (m->type == REDIS_REPLY_INTEGER) {
        s->mem = m->integer;
    } else if (m->type == REDIS_REPLY_NIL && s->exists == 1) {
        s->exists = 0; /* deleted between PTTL and MEMORY USAGE */
        s->pttl = -2;
    }
    s->large = s->exists == 1 && max_value_bytes > 0 && s->mem > max_value_bytes;
    freeReplyObject(t);
    freeReplyObject(m);
    return 0;
}

/*
 * Reads the second-round reply of one key: DUMP for a small value (a copy of
 * the payload goes to s->dump, owned by s), TYPE for a large one. A nil or
 * "none" means the key was deleted since the first round.
 */
static int read_round2(struct rconn *c, struct cmp_side *s)
{
    redisReply *d = rconn_reply(c);

    if (!d)
        return -1;
    if (d->type == REDIS_REPLY_NIL ||
        (s->large && d->type == REDIS_REPLY_STATUS && strcmp(d->str, "none") == 0)) {
        s->exists = 0;
        s->pttl = -2;
        s->large = 0;
    } else if (s->large && d->type == REDIS_REPLY_STATUS) {
        copy_str(s->type, sizeof(s->type), d);
    } else if (!s->large && d->type == REDIS_REPLY_STRING) {
        s->dump = malloc(d->len ? (size_t)d->len : 1);
        if (s->dump) {
            memcpy(s->dump, d->str, (size_t)d->len);
            s->dumplen = (size_t)d->len;
            s->digest = cmp_dump_digest(s->dump, s->dumplen);
        }
    }
    /* An error reply (DUMP denied by ACL, ...) leaves the payload unknown. */
    freeReplyObject(d);
    return 0;
}

/* One pipelined chunk of the command path: two rounds over n keys. */
static int fetch_chunk(struct rconn *c, const char *const *keys, const size_t *lens, size_t n,
                       long long max_value_bytes, struct cmp_side *out)
{
    for (size_t i = 0; i < n; i++) {
        const char *a1[2] = {"PTTL", keys[i]};
        const char *a2[3] = {"MEMORY", "USAGE", keys[i]};
        size_t l1[2] = {4, lens[i]}, l2[3] = {6, 5, lens[i]};
        if (rconn_append_argv(c, 2, a1, l1) < 0 || rconn_append_argv(c, 3, a2, l2) < 0)
            return -1;
    }
    for (size_t i = 0; i < n; i++)
        if (read_round1(c, &out[i], max_value_bytes) < 0)
            return -1;

    size_t sent = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i].exists != 1)
            continue;
        const char *a[2] = {out[i].large ? "TYPE" : "DUMP", keys[i]};
        size_t l[2] = {4, lens[i]};
        if (rconn_append_argv(c, 2, a, l) < 0)
            return -1;
        sent++;
    }
    for (size_t i = 0; i < n && sent; i++) {
        if (out[i].exists != 1)
            continue;
        if (read_round2(c, &out[i]) < 0)
            return -1;
        sent--;
    }
    return 0;
}

/* The command path over n keys, in chunks of CMP_CHUNK. */
static int fetch_commands(struct rconn *c, const char *const *keys, const size_t *lens, size_t n,
                          long long max_value_bytes, struct cmp_side *out)
{
    for (size_t at = 0; at < n; at += CMP_CHUNK) {
        size_t m = n - at < CMP_CHUNK ? n - at : CMP_CHUNK;
        if (fetch_chunk(c, keys + at, lens + at, m, max_value_bytes, out + at) < 0)
            return -1;
    }
    return 0;
}

/*
 * The script path. Three commands per key are what the servers spend their
 * time on (each one parsed, dispatched and answered on its own) and what the
 * agent spends its time formatting and parsing; one script per chunk runs
 * the same three (PTTL, MEMORY USAGE, then DUMP or TYPE) inside the server:
 * measured on redis 7.0, 256 keys per call, about 2.5 times the keys per
 * second of the pipelined commands on the server side. It also reads a key
 * atomically: no deletion between its size and its payload.
 *
 * The reply is flat, three items per key: PTTL, MEMORY USAGE (-1 when
 * absent) and the DUMP payload, or the type name when the value is larger
 * than ARGV[1] (0: no limit), or "" when absent. It stops after the key that
 * brings the DUMP bytes to ARGV[2], so a reply (and the script's memory on
 * the server) stays bounded whatever the values; the caller sends the rest
 * again. `no-writes` lets it run on a read-only replica and under maxmemory
 * (and needs redis >= 7.0: older servers refuse it and get the command
 * path). It is sent whole with EVAL: the server hashes the 600 bytes and
 * finds it in its script cache, which measured the same as EVALSHA, and needs
 * no NOSCRIPT handling after a SCRIPT FLUSH or a restart.
 */
static const char fetch_script[] =
    "#!lua flags=no-writes\n"
    "local max, budget = tonumber(ARGV[1]), tonumber(ARGV[2])\n"
    "local out, used = {}, 0\n"
    "for i, k in ipairs(KEYS) do\n"
    "  if i > 1 and used >= budget then break end\n"
    "  local t = redis.call('PTTL', k)\n"
    "  local m, v = -1, ''\n"
    "  if t ~= -2 then\n"
    "    m = redis.call('MEMORY', 'USAGE', k)\n"
    "    if not m then t, m = -2, -1\n"
    "    elseif max > 0 and m > max then v = redis.call('TYPE', k)['ok']\n"
    "    else\n"
    "      v = redis.call('DUMP', k)\n"
    "      if not v then t, m, v = -2, -1, '' end\n"
    "      used = used + #v\n"
    "    end\n"
    "  end\n"
    "  out[3 * i - 2], out[3 * i - 1], out[3 * i] = t, m, v\n"
    "end\n"
    "return out\n";

#define CMP_SCRIPT_BYTES    (4 * 1024 * 1024) /* DUMP bytes per script reply, then it stops */
#define CMP_SCRIPT_RETRY_US 60000000u         /* after a refusal, the command path this long */

/* The connection's tags (see rconn_tag): what a server refused, until when. */
enum { TAG_SCRIPT, TAG_DIGEST };

/*
 * Whether to try what tag i stands for on c: its tag is 0 (also after a
 * reconnect: new link, maybe new permissions), or the monotonic time before
 * which not to try it again has passed.
 */
static int tag_usable(struct rconn *c, int i)
{
    uint64_t t = rconn_tag(c, i);
    if (!t)
        return 1;
    if (clock_mono_us() >= t) {
        rconn_set_tag(c, i, 0);
        return 1;
    }
    return 0;
}

static int script_usable(struct rconn *c)
{
    return tag_usable(c, TAG_SCRIPT);
}

/* Sends one script call for keys [0, n). */
static int script_send(struct rconn *c, const char *const *keys, const size_t *lens, size_t n,
                       long long max_value_bytes, const char **argv, size_t *argl)
{
    char nk[24], mx[24], bud[24];
    size_t a = 0;

    snprintf(nk, sizeof(nk), "%zu", n);
    snprintf(mx, sizeof(mx), "%lld", max_value_bytes > 0 ? max_value_bytes : 0);
    snprintf(bud, sizeof(bud), "%d", CMP_SCRIPT_BYTES);
    argv[a] = "EVAL", argl[a++] = 4;
    argv[a] = fetch_script, argl[a++] = sizeof(fetch_script) - 1;
    argv[a] = nk, argl[a++] = strlen(nk);
    for (size_t i = 0; i < n; i++)
        argv[a] = keys[i], argl[a++] = lens[i];
    argv[a] = mx, argl[a++] = strlen(mx);
    argv[a] = bud, argl[a++] = strlen(bud);
    return rconn_append_argv(c, (int)a, argv, argl);
}

/*
 * Reads one script reply for at most n keys into out[0..) (out == NULL:
 * drops it). Returns the number of keys it covers (>= 1), 0 when the reply
 * is not a well-formed answer (an error: scripting refused, MEMORY or DUMP
 * denied or renamed, ...; out[0..n) cleared), -1 when the connection failed.
 * *calls gets the commands the script ran for those keys.
 */
static long script_read(struct rconn *c, size_t n, long long max_value_bytes, struct cmp_side *out,
                        unsigned *calls)
{
    struct fetch_rd rd = {.out = out, .n = n, .max = max_value_bytes};
    size_t m;

    if (rconn_reply_with(c, &fetch_rd_fns, &rd) < 0)
        rd.bad = 1;
    m = fetch_rd_finish(&rd, calls);
    if (!rconn_connected(c))
        return -1;
    if (!m && out && rd.err[0])
        log_debug("compare: script refused by %s:%d: %s", rconn_addr(c)->host, rconn_addr(c)->port,
                  rd.err);
    return (long)m;
}

/*
 * Fetches n keys from each of nc nodes. Every node gets its script calls
 * (one per chunk) before any reply is read, so the servers work at the same
 * time while the agent waits once; then the replies are read node by node.
 * A node that refuses the script (or answers it badly) is read with the
 * command path instead, and keeps to it for CMP_SCRIPT_RETRY_US.
 */
int cmp_fetch_many(struct rconn *const *c, size_t nc, const char *const *keys, const size_t *lens,
                   size_t n, long long max_value_bytes, struct cmp_side *const *out, int *rc)
{
    size_t at[CMP_MAX_NODES], sent[CMP_MAX_NODES][CMP_MAX_CHUNKS];
    size_t nsent[CMP_MAX_NODES];
    int script[CMP_MAX_NODES];
    const char **argv = NULL;
    size_t *argl = NULL;

    if (nc > CMP_MAX_NODES)
        return -1;
    for (size_t j = 0; j < nc; j++) {
        for (size_t i = 0; i < n; i++) {
            out[j][i].dump = NULL;
            cmp_side_clear(&out[j][i]);
        }
        rc[j] = 0;
        at[j] = 0;
        script[j] = n > 0 && script_usable(c[j]);
    }
    if (n) {
        size_t per = (n < CMP_CHUNK ? n : CMP_CHUNK) + 5;
        argv = malloc(per * sizeof(*argv));
        argl = malloc(per * sizeof(*argl));
        if (!argv || !argl)
            for (size_t j = 0; j < nc; j++)
                script[j] = 0;
    }
    for (;;) {
        /* Send: the rest of every node still on the script, in chunks. */
        int any = 0;
        for (size_t j = 0; j < nc; j++) {
            nsent[j] = 0;
            if (!script[j] || rc[j] || at[j] >= n)
                continue;
            for (size_t a = at[j]; a < n && nsent[j] < CMP_MAX_CHUNKS; a += CMP_CHUNK) {
                size_t m = n - a < CMP_CHUNK ? n - a : CMP_CHUNK;
                if (script_send(c[j], keys + a, lens + a, m, max_value_bytes, argv, argl) < 0) {
                    rc[j] = -1;
                    break;
                }
                sent[j][nsent[j]++] = m;
            }
            if (nsent[j] && !rc[j] && rconn_flush(c[j]) < 0)
                rc[j] = -1;
            any |= nsent[j] > 0;
        }
        if (!any)
            break;
        /* Read: a short reply (the byte bound) leaves the rest for the next turn. */
        for (size_t j = 0; j < nc; j++) {
            size_t a = at[j];
            int complete = 1;
            for (size_t s = 0; s < nsent[j]; s++) {
                int keep = complete && script[j];
                unsigned calls = 0;
                long got = script_read(c[j], sent[j][s], max_value_bytes, keep ? out[j] + a : NULL,
                                       &calls);
                if (got < 0) {
                    rc[j] = -1;
                    break;
                }
                if (keep && !got) {
                    rconn_set_tag(c[j], TAG_SCRIPT, clock_mono_us() + CMP_SCRIPT_RETRY_US);
                    script[j] = 0;
                }
                if (!complete || !script[j])
                    continue; /* drain the replies already asked for */
                rconn_count(c[j], calls);
                a += (size_t)got;
                at[j] = a;
                if ((size_t)got < sent[j][s])
                    complete = 0; /* the next chunks' keys start later: resend */
            }
        }
    }
    free(argv);
    free(argl);
    /* The command path for the nodes (and keys) the script did not cover. */
    for (size_t j = 0; j < nc; j++) {
        if (!rc[j] && at[j] < n)
            rc[j] = fetch_commands(c[j], keys + at[j], lens + at[j], n - at[j], max_value_bytes,
                                   out[j] + at[j]);
        if (rc[j] < 0) {
            log_debug("compare: fetch failed: %s", rconn_errstr(c[j]));
            for (size_t i = 0; i < n; i++)
                cmp_side_clear(&out[j][i]);
        }
    }
    for (size_t j = 0; j < nc; j++)
        if (rc[j] < 0)
            return -1;
    return 0;
}

int cmp_fetch_send(struct rconn *const *c, size_t nc, const char *const *keys, const size_t *lens,
                   size_t n, long long max_value_bytes, struct cmp_sent *p)
{
    const char *argv[CMP_CHUNK + 5];
    size_t argl[CMP_CHUNK + 5];

    memset(p, 0, sizeof(*p));
    if (nc > CMP_MAX_NODES || n > CMP_SEND_MAX)
        return -1;
    p->nc = nc;
    p->n = n;
    for (size_t j = 0; j < nc && n; j++) {
        if (!script_usable(c[j]))
            continue; /* cmp_fetch_recv reads it on fb[j] */
        for (size_t a = 0; a < n; a += CMP_CHUNK) {
            size_t m = n - a < CMP_CHUNK ? n - a : CMP_CHUNK;
            if (script_send(c[j], keys + a, lens + a, m, max_value_bytes, argv, argl) < 0)
                break;
            p->nchunks[j]++;
        }
        /* A failure closed the connection: nothing of it is in flight, and
         * cmp_fetch_recv reads these keys on fb[j]. */
        if (!rconn_connected(c[j]) || (p->nchunks[j] && rconn_flush(c[j]) < 0))
            p->nchunks[j] = 0;
    }
    return 0;
}

int cmp_fetch_recv(struct rconn *const *c, struct rconn *const *fb, const char *const *keys,
                   const size_t *lens, long long max_value_bytes, const struct cmp_sent *p,
                   struct cmp_side *const *out, int *rc)
{
    size_t n = p->n;
    int ret = 0;

    for (size_t j = 0; j < p->nc; j++) {
        size_t at = 0;
        int complete = 1, script = 1;

        for (size_t i = 0; i < n; i++) {
            out[j][i].dump = NULL;
            cmp_side_clear(&out[j][i]);
        }
        rc[j] = 0;
        for (unsigned s = 0; s < p->nchunks[j] && !rc[j]; s++) {
            size_t want = n - s * CMP_CHUNK < CMP_CHUNK ? n - s * CMP_CHUNK : CMP_CHUNK;
            int keep = complete && script;
            unsigned calls = 0;
            long got = script_read(c[j], want, max_value_bytes, keep ? out[j] + at : NULL, &calls);
            if (got < 0) {
                rc[j] = -1;
                break;
            }
            if (keep && !got) {
                rconn_set_tag(c[j], TAG_SCRIPT, clock_mono_us() + CMP_SCRIPT_RETRY_US);
                script = 0;
            }
            if (!complete || !script)
                continue; /* drain the replies already asked for */
            rconn_count(c[j], calls);
            at += (size_t)got;
            if ((size_t)got < want)
                complete = 0;
        }
        if (!rc[j] && at < n) {
            struct cmp_side *rest = out[j] + at;
            cmp_fetch_many(&fb[j], 1, keys + at, lens + at, n - at, max_value_bytes, &rest, &rc[j]);
        }
        if (rc[j] < 0) {
            log_debug("compare: fetch failed: %s", rconn_errstr(c[j]));
            for (size_t i = 0; i < n; i++)
                cmp_side_clear(&out[j][i]);
            ret = -1;
        }
    }
    return ret;
}

/*
 * On a connection failure every side becomes unknown, not just the chunk's,
 * so a caller never mixes a half-read batch with stale data.
 */
int cmp_fetch(struct rconn *c, const char *const *keys, const size_t *lens, size_t n,
              long long max_value_bytes, struct cmp_side *out)
{
    int rc;
    return cmp_fetch_many(&c, 1, keys, lens, n, max_value_bytes, &out, &rc);
}

/* ------------------------------------------------------------ canonical form */

/* The digest of a canonical value, fed item by item. */
struct canon {
    XXH3_state_t *st;
};

static int canon_init(struct canon *cn)
{
    cn->st = XXH3_createState();
    if (!cn->st)
        return -1;
    XXH3_64bits_reset(cn->st);
    return 0;
}

static void canon_free(struct canon *cn)
{
    if (cn->st)
        XXH3_freeState(cn->st);
    cn->st = NULL;
}

static void canon_u64(struct canon *cn, uint64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(v >> (8 * i));
    XXH3_64bits_update(cn->st, b, sizeof(b));
}

static void canon_str(struct canon *cn, const char *s, size_t len)
{
    canon_u64(cn, len);
    XXH3_64bits_update(cn->st, s, len);
}

/*
 * Parses a score as Redis prints it ("1", "0.10000000000000001", "inf") into
 * the bits of the double, with -0 folded into 0, so equal scores hash equal
 * whatever the server's formatting.
 */
static uint64_t score_bits(const char *s, size_t len)
{
    char buf[64];
    double d;
    uint64_t u;

    if (len >= sizeof(buf))
        len = sizeof(buf) - 1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    d = strtod(buf, NULL);
    if (d == 0)
        d = 0;
    memcpy(&u, &d, sizeof(u));
    return u;
}

/*
 * Feeds a reply into a canonical digest: a tag for its type, then its content;
 * arrays recursively. With numeric set, strings are scores (see score_bits).
 */
static void canon_reply(struct canon *cn, const redisReply *r, int numeric)
{
    canon_u64(cn, (uint64_t)r->type);
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        if (numeric && r->type == REDIS_REPLY_STRING)
            canon_u64(cn, score_bits(r->str, (size_t)r->len));
        else
            canon_str(cn, r->str, (size_t)r->len);
        break;
    case REDIS_REPLY_INTEGER:
        canon_u64(cn, (uint64_t)r->integer);
        break;
    case REDIS_REPLY_ARRAY:
        canon_u64(cn, r->elements);
        for (size_t i = 0; i < r->elements; i++)
            canon_reply(cn, r->element[i], numeric);
        break;
    default:
        break;
    }
}

/* Two replies with the same content (see canon_reply for numeric). */
static int reply_equal(const redisReply *a, const redisReply *b, int numeric)
{
    if (a->type != b->type)
        return 0;
    switch (a->type) {
    case REDIS_REPLY_STRING:
        if (numeric)
            return score_bits(a->str, (size_t)a->len) == score_bits(b->str, (size_t)b->len);
        /* fall through */
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        return a->len == b->len && memcmp(a->str, b->str, (size_t)a->len) == 0;
    case REDIS_REPLY_INTEGER:
        return a->integer == b->integer;
    case REDIS_REPLY_ARRAY:
        if (a->elements != b->elements)
            return 0;
        for (size_t i = 0; i < a->elements; i++)
            if (!reply_equal(a->element[i], b->element[i], numeric))
                return 0;
        return 1;
    default:
        return 1;
    }
}

/* memcmp order of two strings of different lengths; the shorter prefix first. */
static int bin_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* qsort comparator of groups of elements (see canon_unordered): by the first. */
static int group_cmp(const void *x, const void *y)
{
    const redisReply *a = (*(redisReply * *const *)x)[0], *b = (*(redisReply * *const *)y)[0];
    return bin_cmp(a->str, (size_t)a->len, b->str, (size_t)b->len);
}

/*
 * Feeds an unordered collection into cn in canonical order: the reply's
 * elements taken in groups of width (1 for a set, 2 for field/value or
 * member/score pairs), sorted by the group's first element. With numeric set,
 * the second element of each pair is a score. Returns -1 on allocation failure.
 */
static int canon_unordered(struct canon *cn, const redisReply *r, size_t width, int numeric)
{
    size_t n = r->elements / width;
    redisReply ***g = malloc((n ? n : 1) * sizeof(*g));

    if (!g)
        return -1;
    for (size_t i = 0; i < n; i++)
        g[i] = &r->element[i * width];
    qsort(g, n, sizeof(*g), group_cmp);
    canon_u64(cn, n);
    for (size_t i = 0; i < n; i++)
        for (size_t w = 0; w < width; w++)
            canon_reply(cn, g[i][w], numeric && w == 1);
    free(g);
    return 0;
}

/* ------------------------------------------------------------------ deep */

#define CMP_ARGV_MAX (2 * CMP_SAMPLES + 2)

/* One command with its binary-safe argv, pointing into caller-owned memory. */
struct cmd {
    int argc;
    const char *argv[CMP_ARGV_MAX];
    size_t lens[CMP_ARGV_MAX];
};

/* Text behind *why for messages built at run time; valid until the next call. */
static _Thread_local char why_buf[192];

static void cmd_add(struct cmd *c, const char *s, size_t len)
{
    if (c->argc < CMP_ARGV_MAX) {
        c->argv[c->argc] = s;
        c->lens[c->argc] = len;
        c->argc++;
    }
}

/* Starts a command "NAME key". */
static void cmd_key(struct cmd *c, const char *name, const char *key, size_t len)
{
    c->argc = 0;
    cmd_add(c, name, strlen(name));
    cmd_add(c, key, len);
}

static void cmd_add_ll(struct cmd *c, char *buf, size_t bufsz, long long v)
{
    int n = snprintf(buf, bufsz, "%lld", v);
    cmd_add(c, buf, (size_t)n);
}

/*
 * The places a large string or list is sampled at: drawn (xorshift64*) from
 * the key and the current CMP_SAMPLE_EPOCH_MS window, so that both looks of a
 * confirmation compare the same ranges (other places would read as the value
 * changing, and such a divergence would never be confirmed), while the next
 * window samples other places.
 */
static uint64_t sample_seed(const char *key, size_t len)
{
    return (XXH3_64bits(key, len) ^ (clock_wall_ms() / CMP_SAMPLE_EPOCH_MS)) | 1;
}

/* A uniform-enough integer in [0, n) for n > 0; advances *s. */
static long long rng_below(uint64_t *s, long long n)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return (long long)((*s * 0x2545F4914F6CDD1Dull) % (uint64_t)n);
}

static void free_replies(redisReply **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (v[i])
            freeReplyObject(v[i]);
        v[i] = NULL;
    }
}

/* Reads and drops whatever a connection still owes us. */
static void drain(struct rconn *c)
{
    while (rconn_pending(c) > 0) {
        redisReply *x = rconn_reply(c);
        if (!x)
            break;
        freeReplyObject(x);
    }
}

/*
 * Sends the same n commands to the primary and the replica, pipelined on
 * each, and reads the replies into pr[] and rr[] (the caller frees them with
 * free_replies). Returns 0; or -1 when a connection failed, with every reply
 * freed and *why set. Error replies are replies: see first_error().
 */
static int pair_run(struct rconn *p, struct rconn *r, struct cmd *cmds, size_t n, redisReply **pr,
                    redisReply **rr, const char **why)
{
    struct rconn *bad = NULL;

    memset(pr, 0, n * sizeof(*pr));
    memset(rr, 0, n * sizeof(*rr));
    for (size_t i = 0; i < n && !bad; i++)
        if (rconn_append_argv(p, cmds[i].argc, cmds[i].argv, cmds[i].lens) < 0)
            bad = p;
    for (size_t i = 0; i < n && !bad; i++)
        if (rconn_append_argv(r, cmds[i].argc, cmds[i].argv, cmds[i].lens) < 0)
            bad = r;
    for (size_t i = 0; i < n && !bad; i++)
        if (!(pr[i] = rconn_reply(p)))
            bad = p;
    for (size_t i = 0; i < n && !bad; i++)
        if (!(rr[i] = rconn_reply(r)))
            bad = r;
    if (!bad)
        return 0;
    snprintf(why_buf, sizeof(why_buf), "%s", rconn_errstr(bad));
    *why = why_buf;
    drain(p);
    drain(r);
    free_replies(pr, n);
    free_replies(rr, n);
    return -1;
}

/*
 * The first error reply among pr[] and rr[] (WRONGTYPE when the key changed
 * under us, a command denied by ACL, ...): sets *why and returns 1; else 0.
 */
static int first_error(redisReply **pr, redisReply **rr, size_t n, const char **why)
{
    for (size_t i = 0; i < 2 * n; i++) {
        const redisReply *x = i < n ? pr[i] : rr[i - n];
        if (x->type == REDIS_REPLY_ERROR) {
            snprintf(why_buf, sizeof(why_buf), "%s: %.*s", i < n ? "primary" : "replica",
                     (int)(x->len > 150 ? 150 : x->len), x->str);
            *why = why_buf;
            return 1;
        }
    }
    return 0;
}

/* The data types the deep comparison understands. */
enum dtype { DT_STRING, DT_HASH, DT_SET, DT_ZSET, DT_LIST, DT_STREAM, DT_COUNT };

static const struct dtype_info {
    const char *name;   /* as TYPE says */
    const char *lencmd; /* O(1) length */
    int argc;           /* the whole-value read, with the key as argv[1] */
    const char *argv[5];
    size_t width; /* 0 ordered; else sorted groups of this many elements */
    int numeric;  /* pairs' second element is a score */
} dtypes[DT_COUNT] = {
    [DT_STRING] = {"string", "STRLEN", 2, {"GET"}, 0, 0},
    [DT_HASH] = {"hash", "HLEN", 2, {"HGETALL"}, 2, 0},
    [DT_SET] = {"set", "SCARD", 2, {"SMEMBERS"}, 1, 0},
    [DT_ZSET] = {"zset", "ZCARD", 5, {"ZRANGE", NULL, "0", "-1", "WITHSCORES"}, 2, 1},
    [DT_LIST] = {"list", "LLEN", 4, {"LRANGE", NULL, "0", "-1"}, 0, 0},
    [DT_STREAM] = {"stream", "XLEN", 4, {"XRANGE", NULL, "-", "+"}, 0, 0},
};

/*
 * Reads the whole value on both nodes and digests its canonical form into pc
 * and rc (already holding the type and length). Returns CMP_EQUAL or
 * CMP_VALUE, or CMP_ERROR with *why set.
 */
static enum cmp_kind deep_whole(struct rconn *p, struct rconn *r, const char *key, size_t len,
                                const struct dtype_info *t, struct canon *pc, struct canon *rc,
                                const char **why)
{
    struct cmd c = {0};
    redisReply *pr[1], *rr[1];
    enum cmp_kind k = CMP_EQUAL;

    for (int i = 0; i < t->argc; i++) {
        if (i == 1)
            cmd_add(&c, key, len);
        else
            cmd_add(&c, t->argv[i], strlen(t->argv[i]));
    }
    if (pair_run(p, r, &c, 1, pr, rr, why) < 0)
        return CMP_ERROR;
    if (first_error(pr, rr, 1, why)) {
        k = CMP_ERROR;
    } else if (t->width) {
        if (canon_unordered(pc, pr[0], t->width, t->numeric) < 0 ||
            canon_unordered(rc, rr[0], t->width, t->numeric) < 0) {
            *why = "out of memory";
            k = CMP_ERROR;
        }
    } else {
        canon_reply(pc, pr[0], 0);
        canon_reply(rc, rr[0], 0);
        if (!reply_equal(pr[0], rr[0], 0))
            k = CMP_VALUE;
    }
    free_replies(pr, 1);
    free_replies(rr, 1);
    return k;
}

/*
 * Runs n probe commands on both nodes, feeds the replies into the digests and
 * compares them pairwise. Returns CMP_EQUAL, CMP_VALUE, or CMP_ERROR.
 */
static enum cmp_kind probe(struct rconn *p, struct rconn *r, struct cmd *cmds, size_t n,
                           int numeric, struct canon *pc, struct canon *rc, const char **why)
{
    redisReply *pr[2 * CMP_SAMPLES], *rr[2 * CMP_SAMPLES];
    enum cmp_kind k = CMP_EQUAL;

    if (n > 2 * CMP_SAMPLES)
        n = 2 * CMP_SAMPLES;
    if (pair_run(p, r, cmds, n, pr, rr, why) < 0)
        return CMP_ERROR;
    if (first_error(pr, rr, n, why)) {
        k = CMP_ERROR;
    } else {
        for (size_t i = 0; i < n; i++) {
            canon_reply(pc, pr[i], numeric);
            canon_reply(rc, rr[i], numeric);
            if (!reply_equal(pr[i], rr[i], numeric))
                k = CMP_VALUE;
        }
    }
    free_replies(pr, n);
    free_replies(rr, n);
    return k;
}

/*
 * Samples of a large string or list: ranges of bytes (GETRANGE) or elements
 * (LINDEX) at the start, the end and places drawn by sample_seed, the same on
 * both nodes.
 */
static enum cmp_kind sample_positions(struct rconn *p, struct rconn *r, const char *key, size_t len,
                                      int is_list, long long n, struct canon *pc, struct canon *rc,
                                      const char **why)
{
    struct cmd *cmds = calloc(CMP_SAMPLES, sizeof(*cmds));
    char nums[CMP_SAMPLES][2][24];
    long long unit = is_list ? 1 : CMP_RANGE_BYTES;
    long long slots = (n + unit - 1) / unit; /* positions there are to sample */
    uint64_t seed = sample_seed(key, len);
    size_t m = 0;
    enum cmp_kind k;

    if (!cmds) {
        *why = "out of memory";
        return CMP_ERROR;
    }
    for (long long i = 0; i < CMP_SAMPLES && i < slots; i++) {
        long long at = i == 0 ? 0 : i == 1 ? slots - 1 : rng_below(&seed, slots);
        struct cmd *c = &cmds[m];
        if (is_list) {
            cmd_key(c, "LINDEX", key, len);
            cmd_add_ll(c, nums[m][0], sizeof(nums[m][0]), at);
        } else {
            cmd_key(c, "GETRANGE", key, len);
            cmd_add_ll(c, nums[m][0], sizeof(nums[m][0]), at * unit);
            cmd_add_ll(c, nums[m][1], sizeof(nums[m][1]), at * unit + unit - 1);
        }
        m++;
    }
    k = probe(p, r, cmds, m, 0, pc, rc, why);
    free(cmds);
    return k;
}

/*
 * The fields of one HSCAN page of a large hash, at most ARGV[2] of them, from
 * cursor ARGV[1]. The page's values stay in the server: HSCAN has no way to
 * leave them out before redis 7.4 (NOVALUES), and one of them may be as
 * large as the whole key.
 */
static const char hash_fields_script[] =
    "#!lua flags=no-writes\n"
    "local page, want = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])[2], "
    "tonumber(ARGV[2])\n"
    "local out = {}\n"
    "for i = 1, #page, 2 do\n"
    "  if #out >= want then break end\n"
    "  out[#out + 1] = page[i]\n"
    "end\n"
    "return out\n";

/*
 * Samples of a large hash, set or zset: members from each node, then, for
 * their union, on both nodes: hash value lengths (HSTRLEN) and the values
 * short enough to fetch (HMGET); set membership (SMISMEMBER); scores
 * (ZMSCORE). The members are one SSCAN / ZSCAN / HSCAN page from a cursor
 * drawn by sample_seed: the same members at both looks of a confirmation
 * while the value stays as it was (random members would read as the value
 * changing, and a difference would never be confirmed). A hash's page is
 * read by hash_fields_script, so that its values are not fetched; where the
 * script is refused its fields are random (HRANDFIELD), and a difference
 * only in sampled fields of an equal-length hash is found but not
 * confirmed.
 */
/* An error reply other than the key having changed type meanwhile. */
static int refused(const redisReply *x)
{
    return x->type == REDIS_REPLY_ERROR && strncmp(x->str, "WRONGTYPE", 9) != 0;
}

static enum cmp_kind sample_members(struct rconn *p, struct rconn *r, const char *key, size_t len,
                                    enum dtype dt, struct canon *pc, struct canon *rc,
                                    const char **why)
{
    static const char *const drawcmd[DT_COUNT] = {[DT_SET] = "SSCAN", [DT_ZSET] = "ZSCAN"};
    struct cmd *cmds = calloc(2 * CMP_SAMPLES + 1, sizeof(*cmds));
    redisReply *pr[1] = {NULL}, *rr[1] = {NULL};
    redisReply *lp[2 * CMP_SAMPLES], *lr[2 * CMP_SAMPLES];
    const redisReply *mem[2 * CMP_SAMPLES];
    char count[24], cursor[24];
    size_t nm = 0;
    int script = dt == DT_HASH && script_usable(p) && script_usable(r);
    enum cmp_kind k = CMP_ERROR;

    if (!cmds) {
        *why = "out of memory";
        return CMP_ERROR;
    }
    /* Any cursor is valid: the server masks it to its table's size. */
    snprintf(cursor, sizeof(cursor), "%llu", (unsigned long long)(sample_seed(key, len) >> 1));
    snprintf(count, sizeof(count), "%d", CMP_SAMPLES);
draw:
    if (script) {
        cmds[0].argc = 0;
        cmd_add(&cmds[0], "EVAL", 4);
        cmd_add(&cmds[0], hash_fields_script, sizeof(hash_fields_script) - 1);
        cmd_add(&cmds[0], "1", 1);
        cmd_add(&cmds[0], key, len);
        cmd_add(&cmds[0], cursor, strlen(cursor));
        cmd_add(&cmds[0], count, strlen(count));
    } else if (dt == DT_HASH) {
        cmd_key(&cmds[0], "HRANDFIELD", key, len);
        cmd_add(&cmds[0], count, strlen(count));
    } else {
        cmd_key(&cmds[0], drawcmd[dt], key, len);
        cmd_add(&cmds[0], cursor, strlen(cursor));
        cmd_add(&cmds[0], "COUNT", 5);
        cmd_add(&cmds[0], count, strlen(count));
    }
    if (pair_run(p, r, cmds, 1, pr, rr, why) < 0)
        goto out;
    if (script && (refused(pr[0]) || refused(rr[0]))) {
        /* Refused (HSCAN not allowed, ...): random fields this time. Not
         * the connection's script tag: the fetch script may still be fine. */
        for (int s = 0; s < 2; s++) {
            redisReply *e = s ? rr[0] : pr[0];
            if (refused(e))
                log_debug("compare: hash-field script refused: %.200s", e->str);
        }
        free_replies(pr, 1);
        free_replies(rr, 1);
        script = 0;
        goto draw;
    }
    if (first_error(pr, rr, 1, why))
        goto out;
    for (size_t s = 0; s < 2; s++) {
        const redisReply *a = s ? rr[0] : pr[0];
        if (drawcmd[dt] && a->type == REDIS_REPLY_ARRAY && a->elements == 2)
            a = a->element[1]; /* [next cursor, page] */
        if (a->type != REDIS_REPLY_ARRAY) {
            *why = "unexpected reply to a member-sampling command";
            goto out;
        }
        /* A page may hold more than COUNT; a zset's alternates member, score. */
        size_t step = dt == DT_ZSET ? 2 : 1, took = 0;
        for (size_t i = 0; i < a->elements && took < CMP_SAMPLES; i += step)
            if (a->element[i]->type == REDIS_REPLY_STRING) {
                mem[nm++] = a->element[i];
                took++;
            }
    }

    if (dt == DT_SET || dt == DT_ZSET) {
        cmd_key(&cmds[0], dt == DT_SET ? "SMISMEMBER" : "ZMSCORE", key, len);
        for (size_t i = 0; i < nm; i++)
            cmd_add(&cmds[0], mem[i]->str, (size_t)mem[i]->len);
        k = nm ? probe(p, r, cmds, 1, dt == DT_ZSET, pc, rc, why) : CMP_EQUAL;
        goto out;
    }

    /* Hash: the lengths first, then the values that are not too long to fetch. */
    for (size_t i = 0; i < nm; i++) {
        cmd_key(&cmds[i], "HSTRLEN", key, len);
        cmd_add(&cmds[i], mem[i]->str, (size_t)mem[i]->len);
    }
    if (pair_run(p, r, cmds, nm, lp, lr, why) < 0)
        goto out;
    k = first_error(lp, lr, nm, why) ? CMP_ERROR : CMP_EQUAL;
    cmd_key(&cmds[0], "HMGET", key, len);
    for (size_t i = 0; i < nm && k == CMP_EQUAL; i++) {
        canon_reply(pc, lp[i], 0);
        canon_reply(rc, lr[i], 0);
        if (!reply_equal(lp[i], lr[i], 0))
            k = CMP_VALUE;
        else if (lp[i]->type == REDIS_REPLY_INTEGER && lp[i]->integer <= CMP_ELEM_MAX)
            cmd_add(&cmds[0], mem[i]->str, (size_t)mem[i]->len);
    }
    free_replies(lp, nm);
    free_replies(lr, nm);
    if (k == CMP_EQUAL && cmds[0].argc > 2)
        k = probe(p, r, cmds, 1, 0, pc, rc, why);
out:
    free_replies(pr, 1);
    free_replies(rr, 1);
    free(cmds);
    return k;
}

/* The first and the last entry of a large stream on both nodes. */
static enum cmp_kind sample_stream(struct rconn *p, struct rconn *r, const char *key, size_t len,
                                   struct canon *pc, struct canon *rc, const char **why)
{
    struct cmd cmds[2] = {{0}, {0}};
    static const char *const first[] = {"-", "+", "COUNT", "1"};
    static const char *const last[] = {"+", "-", "COUNT", "1"};

    cmd_key(&cmds[0], "XRANGE", key, len);
    cmd_key(&cmds[1], "XREVRANGE", key, len);
    for (int i = 0; i < 4; i++) {
        cmd_add(&cmds[0], first[i], strlen(first[i]));
        cmd_add(&cmds[1], last[i], strlen(last[i]));
    }
    return probe(p, r, cmds, 2, 0, pc, rc, why);
}

/*
 * Reads one integer reply per node for "cmd key" (TYPE excepted: see
 * cmp_deep). Returns 0, or -1 with *why set.
 */
static int pair_integer(struct rconn *p, struct rconn *r, const char *name, const char *key,
                        size_t len, long long *pv, long long *rv, const char **why)
{
    struct cmd c;
    redisReply *pr[1], *rr[1];
    int rc = 0;

    cmd_key(&c, name, key, len);
    if (pair_run(p, r, &c, 1, pr, rr, why) < 0)
        return -1;
    if (first_error(pr, rr, 1, why)) {
        rc = -1;
    } else if (pr[0]->type != REDIS_REPLY_INTEGER || rr[0]->type != REDIS_REPLY_INTEGER) {
        *why = "unexpected reply to a length command";
        rc = -1;
    } else {
        *pv = pr[0]->integer;
        *rv = rr[0]->integer;
    }
    free_replies(pr, 1);
    free_replies(rr, 1);
    return rc;
}

/*
 * Reads the type of the key on both nodes into pt and rt. Returns 0, or -1
 * with *why set.
 */
static int pair_type(struct rconn *p, struct rconn *r, const char *key, size_t len, char *pt,
                     char *rt, size_t sz, const char **why)
{
    struct cmd c;
    redisReply *pr[1], *rr[1];
    int rc = 0;

    cmd_key(&c, "TYPE", key, len);
    if (pair_run(p, r, &c, 1, pr, rr, why) < 0)
        return -1;
    if (first_error(pr, rr, 1, why)) {
        rc = -1;
    } else if (pr[0]->type != REDIS_REPLY_STATUS || rr[0]->type != REDIS_REPLY_STATUS) {
        *why = "unexpected reply to TYPE";
        rc = -1;
    } else {
        copy_str(pt, sz, pr[0]);
        copy_str(rt, sz, rr[0]);
    }
    free_replies(pr, 1);
    free_replies(rr, 1);
    return rc;
}

#define CMP_DIGEST_RETRY_US (600 * 1000000ull) /* after DEBUG DIGEST-VALUE was refused */
#define CMP_DIGEST_HEX      40                 /* a SHA1 digest in hex */

/*
 * Whether a side's DUMP payload holds one of the server's own types: its
 * first byte is the RDB type, 6 and 7 being a module's. A module's value is
 * digested by the module, if at all, so its digest is not trusted.
 */
static int dump_is_native(const struct cmp_side *s)
{
    return s->dump && s->dumplen && s->dump[0] != 6 && s->dump[0] != 7;
}

/* A DIGEST-VALUE reply: one digest, not all zeros (which means no such key). */
static int digest_reply_ok(const redisReply *x)
{
    if (x->type != REDIS_REPLY_ARRAY || x->elements != 1)
        return 0;
    x = x->element[0];
    if ((x->type != REDIS_REPLY_STATUS && x->type != REDIS_REPLY_STRING) ||
        x->len != CMP_DIGEST_HEX)
        return 0;
    return strspn(x->str, "0") != CMP_DIGEST_HEX;
}

/*
 * DEBUG DIGEST-VALUE, where both servers allow it (redis 7 refuses DEBUG
 * unless enable-debug-command allows it; an ACL may too): the server's own
 * digest of the logical value, from its type, its elements (order-independent
 * for sets and hashes) and whether it expires, so two encodings of one value
 * answer the same without a byte of it fetched. Equal digests are equal
 * values; different ones prove nothing (a sorted set's digest follows its
 * encoding, an expiry on one side only changes it) and the caller compares
 * as it would without. The server walks the whole value, so the caller asks
 * only about values known to be within max-value-bytes, and only about its
 * own types (dump_is_native). A refusal is kept on the connection for
 * CMP_DIGEST_RETRY_US. Returns 1 equal (with *pd = *rd), else 0.
 */
static int digest_equal(struct rconn *p, struct rconn *r, const char *key, size_t len, uint64_t *pd,
                        uint64_t *rd)
{
    struct cmd c = {0};
    redisReply *pr[1], *rr[1];
    const char *why;
    int eq;

    if (!tag_usable(p, TAG_DIGEST) || !tag_usable(r, TAG_DIGEST))
        return 0;
    cmd_add(&c, "DEBUG", 5);
    cmd_add(&c, "DIGEST-VALUE", 12);
    cmd_add(&c, key, len);
    if (pair_run(p, r, &c, 1, pr, rr, &why) < 0)
        return 0; /* the link: the comparison that follows says so */
    for (int s = 0; s < 2; s++) {
        redisReply *x = s ? rr[0] : pr[0];
        struct rconn *n = s ? r : p;
        if (x->type == REDIS_REPLY_ERROR) {
            log_debug("compare: DEBUG DIGEST-VALUE refused by %s:%d: %.200s", rconn_addr(n)->host,
                      rconn_addr(n)->port, x->str);
            rconn_set_tag(n, TAG_DIGEST, clock_mono_us() + CMP_DIGEST_RETRY_US);
        }
    }
    eq = digest_reply_ok(pr[0]) && digest_reply_ok(rr[0]) &&
         memcmp(pr[0]->element[0]->str, rr[0]->element[0]->str, CMP_DIGEST_HEX) == 0;
    if (eq)
        *pd = *rd = nonzero(XXH3_64bits(pr[0]->element[0]->str, CMP_DIGEST_HEX));
    free_replies(pr, 1);
    free_replies(rr, 1);
    return eq;
}

/*
 * Whether a key both nodes held when fetched is gone from either now, by
 * their TYPE answers; *why says how. From both it is gone; from one, it
 * changed while it was read, and the next look decides (a confirmed
 * divergence must not be resolved as deleted while the primary holds it).
 */
static int vanished(const char *pt, const char *rt, const char **why)
{
    int pn = strcmp(pt, "none") == 0, rn = strcmp(rt, "none") == 0;

    if (pn && rn)
        *why = "the key vanished during the comparison";
    else if (pn || rn)
        *why = "the key changed during the comparison";
    return pn || rn;
}

/*
 * After the values were read: the verdict k stands if both nodes still hold
 * the key with the types first seen. A key deleted or expired between its
 * TYPE and its value reads as nil, an empty array or empty ranges on both
 * nodes, which compare equal: such a key is CMP_GONE. One gone from a single
 * node, or whose type changed, is CMP_ERROR: it changed while it was read,
 * and the next look decides (a confirmed divergence is not resolved by it).
 */
static enum cmp_kind still_there(struct rconn *p, struct rconn *r, const char *key, size_t len,
                                 const char *pt, const char *rt, enum cmp_kind k, const char **why)
{
    char pt2[32], rt2[32];

    if (pair_type(p, r, key, len, pt2, rt2, sizeof(pt2), why) < 0)
        return CMP_ERROR;
    if (vanished(pt2, rt2, why))
        return strcmp(pt2, rt2) == 0 ? CMP_GONE : CMP_ERROR;
    if (strcmp(pt2, pt) != 0 || strcmp(rt2, rt) != 0) {
        *why = "the key changed during the comparison";
        return CMP_ERROR;
    }
    return k;
}

/* Whether a value of this type and length may exceed max_value_bytes. */
static int is_large(const struct cmp_side *ps, const struct cmp_side *rs, enum dtype dt,
                    long long n, long long max_value_bytes)
{
    if (max_value_bytes <= 0)
        return 0;
    if (ps->large || rs->large)
        return 1;
    if (ps->mem >= 0 && rs->mem >= 0)
        return 0;
    /* A side's size is unknown (MEMORY USAGE denied): judge from the length. */
    if (dt == DT_STRING)
        return n > max_value_bytes;
    return n > max_value_bytes / CMP_ELEM_BYTES;
}

/*
 * The type-aware comparison. The flow: for a value known to be small, the
 * servers' own digests where they allow it (equal: done); then TYPE on both
 * nodes (a key gone from both meanwhile is CMP_GONE, from one CMP_ERROR: the
 * next look decides); the O(1) length on both; then the whole value, or, for a large
 * one, a bounded sample. The digests cover the type, the length and what was
 * compared: for a large value they identify the sample, not the value. *why
 * (thread-local text, valid until the next call on the thread) says what went
 * wrong for CMP_ERROR and CMP_SKIPPED, and is NULL otherwise.
 */
enum cmp_kind cmp_deep(struct rconn *p, struct rconn *r, const char *key, size_t len,
                       const struct cmp_side *ps, const struct cmp_side *rs,
                       long long max_value_bytes, uint64_t *pdigest, uint64_t *rdigest,
                       const char **why)
{
    const char *why_unused;
    char pt[32], rt[32];
    struct canon pc = {NULL}, rc = {NULL};
    long long plen, rlen;
    enum dtype dt;
    enum cmp_kind k;

    if (!why)
        why = &why_unused;
    *why = NULL;
    *pdigest = *rdigest = 0;
    if (ps->mem >= 0 && rs->mem >= 0 && !ps->large && !rs->large && dump_is_native(ps) &&
        dump_is_native(rs) && digest_equal(p, r, key, len, pdigest, rdigest))
        return CMP_EQUAL;
    if (pair_type(p, r, key, len, pt, rt, sizeof(pt), why) < 0)
        return CMP_ERROR;
    if (vanished(pt, rt, why))
        return strcmp(pt, rt) == 0 ? CMP_GONE : CMP_ERROR;
    if (strcmp(pt, rt) != 0) {
        *pdigest = nonzero(XXH3_64bits(pt, strlen(pt)));
        *rdigest = nonzero(XXH3_64bits(rt, strlen(rt)));
        return CMP_TYPE;
    }
    for (dt = 0; dt < DT_COUNT; dt++)
        if (strcmp(pt, dtypes[dt].name) == 0)
            break;
    if (dt == DT_COUNT) {
        snprintf(why_buf, sizeof(why_buf), "unsupported type %s", pt);
        *why = why_buf;
        return CMP_SKIPPED;
    }
    if (pair_integer(p, r, dtypes[dt].lencmd, key, len, &plen, &rlen, why) < 0)
        return CMP_ERROR;
    if (canon_init(&pc) < 0 || canon_init(&rc) < 0) {
        canon_free(&pc);
        *why = "out of memory";
        return CMP_ERROR;
    }
    canon_str(&pc, pt, strlen(pt));
    canon_str(&rc, rt, strlen(rt));
    canon_u64(&pc, (uint64_t)plen);
    canon_u64(&rc, (uint64_t)rlen);

    int large = is_large(ps, rs, dt, plen > rlen ? plen : rlen, max_value_bytes);
    if (large && plen != rlen)
        k = CMP_VALUE; /* the length says enough; fetch nothing more */
    else if (!large)
        k = deep_whole(p, r, key, len, &dtypes[dt], &pc, &rc, why);
    else if (dt == DT_STRING || dt == DT_LIST)
        k = sample_positions(p, r, key, len, dt == DT_LIST, plen, &pc, &rc, why);
    else if (dt == DT_STREAM)
        k = sample_stream(p, r, key, len, &pc, &rc, why);
    else
        k = sample_members(p, r, key, len, dt, &pc, &rc, why);

    if (k != CMP_ERROR) {
        *pdigest = nonzero(XXH3_64bits_digest(pc.st));
        *rdigest = nonzero(XXH3_64bits_digest(rc.st));
        /* Unordered values are judged by their canonical digests. */
        if (k == CMP_EQUAL && *pdigest != *rdigest)
            k = CMP_VALUE;
    }
    canon_free(&pc);
    canon_free(&rc);
    if (k == CMP_EQUAL || k == CMP_VALUE)
        k = still_there(p, r, key, len, pt, rt, k, why);
    if (k == CMP_GONE || k == CMP_ERROR)
        *pdigest = *rdigest = 0;
    return k;
}
