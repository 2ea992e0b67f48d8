/*
 * seen -- a set of 64-bit hashes (see seen.h).
 */
#include "seen.h"

#include <stdlib.h>
#include <string.h>

#define FIRST_SLOTS 65536

void seen_pool_init(struct seen_pool *p, size_t slots)
{
    atomic_init(&p->sp_left, slots);
}

/* Takes up to want slots from the pool; returns how many (0: none left). */
static size_t pool_take(struct seen_pool *p, size_t want)
{
    size_t left = atomic_load(&p->sp_left), take;

    do {
        take = want < left ? want : left;
        if (!take)
            return 0;
    } while (!atomic_compare_exchange_weak(&p->sp_left, &left, left - take));
    return take;
}

static void pool_give(struct seen_pool *p, size_t n)
{
    atomic_fetch_add(&p->sp_left, n);
}

void seen_init(struct seen *s, struct seen_pool *pool)
{
    memset(s, 0, sizeof(*s));
    s->s_pool = pool;
}

/* The slot a hash starts probing at: the high bits scaled to the table. */
static size_t home(const struct seen *s, uint64_t h)
{
    return (size_t)(((unsigned __int128)h * s->s_cap) >> 64);
}

/* The slot holding h, or the empty one where it would go. */
static size_t probe(const struct seen *s, uint64_t h)
{
    size_t i = home(s, h);

    while (s->s_h[i] && s->s_h[i] != h)
        i = i + 1 == s->s_cap ? 0 : i + 1;
    return i;
}

/* Moves to a table of up to want slots; -1 when it would not be larger. */
static int regrow(struct seen *s, size_t want)
{
    size_t got = pool_take(s->s_pool, want);
    uint64_t *nh = got > s->s_cap ? calloc(got, sizeof(*nh)) : NULL;

    if (!nh) {
        pool_give(s->s_pool, got);
        return -1;
    }
    uint64_t *old = s->s_h;
    size_t ocap = s->s_cap;
    s->s_h = nh;
    s->s_cap = got;
    for (size_t i = 0; i < ocap; i++)
        if (old[i])
            s->s_h[probe(s, old[i])] = old[i];
    free(old);
    pool_give(s->s_pool, ocap);
    return 0;
}

void seen_reserve(struct seen *s, size_t n)
{
    size_t want = n / 3 * 4 + 4;

    if (want > s->s_cap)
        regrow(s, want);
}

/*
 * At most three quarters of the slots are ever used, so a probe always
 * reaches an empty one; a table grown to fewer slots than that needs (the
 * pool's last few) is grown again or the set is full.
 */
int seen_add(struct seen *s, uint64_t h)
{
    h = h ? h : 1;
    for (;;) {
        if (s->s_cap) {
            size_t i = probe(s, h);
            if (s->s_h[i])
                return 0;
            if (s->s_n < s->s_cap / 4 * 3) {
                s->s_h[i] = h;
                s->s_n++;
                return 1;
            }
        }
        if (s->s_full || regrow(s, s->s_cap ? 2 * s->s_cap : FIRST_SLOTS) < 0) {
            s->s_full = 1;
            return -1;
        }
    }
}

int seen_has(const struct seen *s, uint64_t h)
{
    h = h ? h : 1;
    return s->s_cap && s->s_h[probe(s, h)] == h;
}

/*
 * Each hash's first slot misses the cache; asking for the slot of the hash
 * AHEAD places on while adding this one keeps that many misses in flight
 * at once instead of queueing them one after another.
 */
#define AHEAD 16

void seen_add_many(struct seen *s, const uint64_t *h, size_t n, signed char *out)
{
    for (size_t i = 0; i < n && i < AHEAD && s->s_cap; i++)
        __builtin_prefetch(&s->s_h[home(s, h[i] ? h[i] : 1)]);
    for (size_t i = 0; i < n; i++) {
        if (i + AHEAD < n && s->s_cap)
            __builtin_prefetch(&s->s_h[home(s, h[i + AHEAD] ? h[i + AHEAD] : 1)]);
        out[i] = (signed char)seen_add(s, h[i]);
    }
}

void seen_free(struct seen *s)
{
    if (s->s_pool)
        pool_give(s->s_pool, s->s_cap);
    free(s->s_h);
    memset(s, 0, sizeof(*s));
}
