/*
 * seen -- a set of 64-bit key hashes, filled and read at once.
 *
 * A one-pass check scans the primary and every replica at the same time and
 * fetches each key from all of them when the first scan returns it; this set
 * says which keys were fetched already, so a key every node holds is fetched
 * once, not once per scan. Open addressing with linear probing, at most
 * three quarters full: about 11 bytes a key, read and written with one cache
 * miss. A hash of 0 is stored as 1.
 *
 * Sets draw their room from a pool that bounds the hashes all of them hold
 * together (a check runs one set per db and shard); when it is spent,
 * seen_add says so (-1: "not known") and the caller asks the primary about
 * such keys as before. 64-bit xxhash: a replica-only key taken for a seen
 * one needs a collision, about n / 2^64.
 */
#ifndef KD_SEEN_H
#define KD_SEEN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct seen_pool {
    atomic_size_t sp_left; /* slots (8 bytes each) the sets may still take */
};

struct seen {
    uint64_t *s_h; /* s_cap slots, 0 = empty */
    size_t s_n, s_cap;
    struct seen_pool *s_pool;
    int s_full; /* a hash could not be added: the set is partial */
};

void seen_pool_init(struct seen_pool *p, size_t slots);
void seen_init(struct seen *s, struct seen_pool *pool);
/* Makes room for n hashes up front (growing later holds two tables at once). */
void seen_reserve(struct seen *s, size_t n);
/* 1: added now; 0: it was there; -1: not there and no room to add it. */
int seen_add(struct seen *s, uint64_t h);
int seen_has(const struct seen *s, uint64_t h);
/* out[i] = seen_add(s, h[i]) for n hashes, with the memory reads overlapped. */
void seen_add_many(struct seen *s, const uint64_t *h, size_t n, signed char *out);
/* Frees the set and gives its room back to the pool. */
void seen_free(struct seen *s);

#endif
