/*
 * seen -- a set of 64-bit key hashes, filled once and then only read.
 *
 * A one-pass check remembers every key the primary's SCAN returned, so the
 * replica scan that follows asks the primary only about the keys it never
 * showed (the candidates for `extra`) instead of about every key. Hashes are
 * appended while the primary is walked, sorted once (seen_seal), and looked
 * up by their top 16 bits and a binary search among the few that share
 * them: 8 bytes a key plus a 256 KB index, no load factor.
 *
 * Sets draw their room from a pool that bounds the hashes all of them hold
 * together (a check runs one set per db and shard); when it is spent,
 * seen_add says so and the set stays partial: a hash it lacks means only
 * "not known", so the caller asks the primary as before. 64-bit xxhash: a
 * replica-only key taken for a seen one needs a collision, about n / 2^64.
 */
#ifndef KD_SEEN_H
#define KD_SEEN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct seen_pool {
    atomic_size_t sp_left; /* hashes the sets may still make room for */
};

struct seen {
    uint64_t *s_h;
    size_t s_n, s_cap; /* s_cap is taken from the pool */
    struct seen_pool *s_pool;
    uint32_t *s_idx; /* after seen_seal: s_h[s_idx[p] .. s_idx[p + 1]) have top bits p */
    int s_full;      /* a hash was dropped: the set is partial */
};

void seen_pool_init(struct seen_pool *p, size_t max);
void seen_init(struct seen *s, struct seen_pool *pool);
/* Adds one hash (before seen_seal). 0, or -1 when it was dropped (full, no memory). */
int seen_add(struct seen *s, uint64_t h);
/* Sorts and indexes; after it, seen_has. -1 when the index could not be allocated (then
 * seen_has says 0 for every hash). */
int seen_seal(struct seen *s);
int seen_has(const struct seen *s, uint64_t h);
/* out[i] = seen_has(s, h[i]) for n hashes, with the memory reads overlapped. */
void seen_has_many(const struct seen *s, const uint64_t *h, size_t n, unsigned char *out);
/* Frees the set and gives its room back to the pool. */
void seen_free(struct seen *s);

#endif
