/*
 * compare -- is a key the same on the primary and on a replica?
 *
 * Cheap first: per node, PTTL + MEMORY USAGE for a batch of keys, then DUMP
 * for the keys small enough to fetch (in one server-side script per chunk of
 * keys, or in two pipelined rounds where scripts are not allowed). Two DUMP
 * payloads equal apart from their RDB-version/CRC trailer are equal. When the
 * payloads differ, a type-aware comparison of the values decides (GET,
 * HGETALL, SMEMBERS, ZRANGE WITHSCORES, LRANGE, XRANGE; order-independent for
 * sets, hashes and sorted sets), so that different encodings or server
 * versions are never reported. Keys larger than max-value-bytes are never
 * fetched whole: they are compared by type, length and a sample of elements.
 *
 * Digests (64-bit xxhash of the DUMP payload without its trailer, or of the
 * canonical value) identify values in the history without storing them.
 */
#ifndef KD_COMPARE_H
#define KD_COMPARE_H

#include <stddef.h>
#include <stdint.h>

#include "rconn.h"

enum cmp_kind {
    CMP_EQUAL,   /* the same value and TTL */
    CMP_MISSING, /* on the primary, not on the replica */
    CMP_EXTRA,   /* on the replica only */
    CMP_TYPE,    /* different types */
    CMP_VALUE,   /* same type, different value */
    CMP_TTL,     /* same value, expiry differs beyond the tolerance */
    CMP_GONE,    /* on neither (deleted meanwhile): nothing to say */
    CMP_SKIPPED, /* could not be compared (see skip reason) */
    CMP_ERROR,   /* a node did not answer */
    CMP_KIND_COUNT
};

/* The name used in metrics, SQLite and the API ("missing", "value", ...). */
const char *cmp_kind_name(enum cmp_kind k);
/* True for the kinds that are divergences. */
int cmp_is_divergence(enum cmp_kind k);

/* What one node holds for one key, from cmp_fetch(). */
struct cmp_side {
    int exists;     /* 1 present, 0 absent, -1 unknown (error) */
    long long pttl; /* -1 no expiry, -2 absent, else ms */
    long long mem;  /* MEMORY USAGE bytes, -1 unknown */
    char *dump;     /* DUMP payload (malloc'd) or NULL when not fetched */
    size_t dumplen;
    uint64_t digest; /* of the payload without trailer; 0 unknown */
    int large;       /* mem > max_value_bytes: not fetched whole */
    char type[16];   /* filled by the deep comparison or for large keys, "" unknown */
};

void cmp_side_clear(struct cmp_side *s); /* frees dump, resets */

/*
 * Fetches n keys' state from one node in pipelined rounds: PTTL and MEMORY
 * USAGE, then DUMP for keys of at most max_value_bytes (TYPE for the larger
 * ones; max_value_bytes <= 0: no limit). out[i] need not be initialised (it
 * is cleared first, a payload it held is not freed) and is filled; the caller
 * calls cmp_side_clear on each. Returns 0, or -1 when the connection failed
 * (out[] then says exists = -1).
 */
int cmp_fetch(struct rconn *c, const char *const *keys, const size_t *lens, size_t n,
              long long max_value_bytes, struct cmp_side *out);

/* The most nodes one cmp_fetch_many reads: the primary and every replica. */
#define CMP_MAX_NODES (1 + CFG_MAX_REPLICAS)

/*
 * cmp_fetch of the same keys on nc nodes at once: the requests go to every
 * node before any reply is read, so the servers work in parallel. out[j] and
 * rc[j] (0, or -1 when node j's connection failed: out[j][] then unknown) are
 * node j's. Returns 0, or -1 when any node failed.
 *
 * Both functions run one server-side script per chunk of keys (PTTL, MEMORY
 * USAGE and DUMP or TYPE in one call, see compare.c) when the server allows
 * it, and the pipelined commands when it does not (scripting refused by ACL,
 * MEMORY or DUMP denied or renamed, redis < 7.0): the result is the same.
 */
int cmp_fetch_many(struct rconn *const *c, size_t nc, const char *const *keys, const size_t *lens,
                   size_t n, long long max_value_bytes, struct cmp_side *const *out, int *rc);

/*
 * A fetch split in two, to keep servers busy while the caller works:
 * cmp_fetch_send writes the script calls for n keys (at most
 * CMP_SEND_MAX) to each node and returns at once; cmp_fetch_recv later reads
 * and parses the replies, with the result cmp_fetch_many would give. Other
 * requests may be written to the same connections in between (the next
 * batch's cmp_fetch_send) but no reply read: the replies come in order. Keys
 * the script did not cover (a node refusing it, a reply cut at its byte
 * bound, a node not using the script, a connection that failed while
 * sending) are fetched by cmp_fetch_recv with cmp_fetch_many on fb[j], a
 * second connection to node j, since c[j] may carry a later batch's calls by
 * then. keys and lens must stay valid until cmp_fetch_recv returns.
 */
#define CMP_SEND_MAX 1024
struct cmp_sent {
    size_t nc, n;
    /* Script calls in flight on node j. A caller that sees c[j] closed
     * before cmp_fetch_recv (it failed reading another batch) sets it to 0:
     * nothing is in flight on a closed connection, and the keys are then
     * read on fb[j]. */
    unsigned nchunks[CMP_MAX_NODES];
};
/* Returns 0, or -1 when n > CMP_SEND_MAX or nc > CMP_MAX_NODES (nothing sent). */
int cmp_fetch_send(struct rconn *const *c, size_t nc, const char *const *keys, const size_t *lens,
                   size_t n, long long max_value_bytes, struct cmp_sent *p);
/* out[j] and rc[j] as for cmp_fetch_many; keys, lens and n as given to cmp_fetch_send. */
int cmp_fetch_recv(struct rconn *const *c, struct rconn *const *fb, const char *const *keys,
                   const size_t *lens, long long max_value_bytes, const struct cmp_sent *p,
                   struct cmp_side *const *out, int *rc);

struct cmp_opts {
    long long ttl_tolerance_ms; /* plus the replica's current lag */
    long long lag_ms;
    int missing_is_divergence;
};

/*
 * Judges one key from both sides, without I/O. Returns CMP_EQUAL, a
 * divergence kind, CMP_GONE, CMP_SKIPPED or CMP_ERROR; "needs deep" when the
 * payloads differ (or a side is large) is returned as CMP_VALUE with
 * *needs_deep = 1: the caller then calls cmp_deep.
 */
enum cmp_kind cmp_judge(const struct cmp_side *p, const struct cmp_side *r,
                        const struct cmp_opts *o, int *needs_deep);

/*
 * The TTL part of cmp_judge, for two sides known to hold the same value (after
 * cmp_deep said CMP_EQUAL): CMP_TTL when one side has an expiry and the other
 * none (unless that expiry is within ttl_tolerance_ms), or both expire more
 * than ttl_tolerance_ms + lag_ms apart; else CMP_EQUAL.
 */
enum cmp_kind cmp_judge_ttl(const struct cmp_side *p, const struct cmp_side *r,
                            const struct cmp_opts *o);

/*
 * The type-aware comparison of one key on two nodes. Large values (sides
 * marked large) are compared by type, length and sampled elements. Fills
 * *pdigest and *rdigest with digests of the canonical values. Returns CMP_EQUAL,
 * CMP_TYPE, CMP_VALUE, CMP_SKIPPED (a type it cannot compare: *why says which)
 * or CMP_ERROR (*why says why); or CMP_GONE when the key vanished from a node
 * since cmp_fetch (nothing to say: the next look decides). *why may be NULL;
 * its text stays valid until the next call on the same thread. For large
 * values the digests identify the compared sample, not the whole value.
 */
enum cmp_kind cmp_deep(struct rconn *p, struct rconn *r, const char *key, size_t len,
                       const struct cmp_side *ps, const struct cmp_side *rs,
                       long long max_value_bytes, uint64_t *pdigest, uint64_t *rdigest,
                       const char **why);

/* Pure helpers, unit-tested: */
/* Equal DUMP payloads ignoring the 10-byte RDB-version + CRC64 trailer. */
int cmp_dump_equal(const char *a, size_t alen, const char *b, size_t blen);
/* xxhash64 of a DUMP payload without its trailer. */
uint64_t cmp_dump_digest(const char *a, size_t alen);

#endif
