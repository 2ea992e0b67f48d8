/*
 * seen -- a sealed set of 64-bit hashes (see seen.h).
 */
#include "seen.h"

#include <stdlib.h>
#include <string.h>

#define IDX_BITS 16

void seen_pool_init(struct seen_pool *p, size_t max)
{
    atomic_init(&p->sp_left, max);
}

/* Takes room for up to want hashes from the pool; returns how many (0: none left). */
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

int seen_add(struct seen *s, uint64_t h)
{
    if (s->s_idx || s->s_full) {
        s->s_full = 1;
        return -1;
    }
    if (s->s_n == s->s_cap) {
        /* Doubles, as far as the pool allows. */
        size_t got = pool_take(s->s_pool, s->s_cap ? s->s_cap : 65536);
        uint64_t *nh = got ? realloc(s->s_h, (s->s_cap + got) * sizeof(*nh)) : NULL;
        if (!nh) {
            pool_give(s->s_pool, got);
            s->s_full = 1;
            return -1;
        }
        s->s_h = nh;
        s->s_cap += got;
    }
    s->s_h[s->s_n++] = h;
    return 0;
}

/*
 * Sorts a[0..n) in place by the byte at shift, then each bucket by the next
 * byte down (an American flag sort: each value is swapped straight into its
 * bucket; with 256 buckets the places written to stay in cache), and
 * buckets of a few values by insertion.
 */
static void flag_sort(uint64_t *a, size_t n, int shift)
{
    size_t start[257] = {0}, next[256];

    if (n <= 32 || shift < 0) {
        for (size_t i = 1; i < n; i++) {
            uint64_t v = a[i];
            size_t j = i;
            for (; j > 0 && a[j - 1] > v; j--)
                a[j] = a[j - 1];
            a[j] = v;
        }
        return;
    }
    for (size_t i = 0; i < n; i++)
        start[((a[i] >> shift) & 255) + 1]++;
    for (size_t b = 0; b < 256; b++) {
        start[b + 1] += start[b];
        next[b] = start[b];
    }
    for (size_t b = 0; b < 256; b++) {
        while (next[b] < start[b + 1]) {
            uint64_t v = a[next[b]];
            size_t q = (size_t)((v >> shift) & 255);
            if (q == b) {
                next[b]++;
                continue;
            }
            a[next[b]] = a[next[q]];
            a[next[q]++] = v;
        }
    }
    for (size_t b = 0; b < 256; b++)
        flag_sort(a + start[b], start[b + 1] - start[b], shift - 8);
}

/*
 * Sorts in place (no second array: 8 bytes a hash at the peak too), gives
 * back (to the allocator and the pool) what the array's doubling left
 * unused, and indexes: s_idx[p] is the first hash whose top IDX_BITS bits
 * are >= p.
 */
int seen_seal(struct seen *s)
{
    size_t np = (size_t)1 << IDX_BITS;

    if (s->s_idx)
        return 0;
    uint32_t *idx = malloc((np + 1) * sizeof(*idx));
    if (!idx)
        return -1;
    flag_sort(s->s_h, s->s_n, 56);
    if (s->s_n && s->s_n < s->s_cap) {
        uint64_t *nh = realloc(s->s_h, s->s_n * sizeof(*nh));
        if (nh) {
            pool_give(s->s_pool, s->s_cap - s->s_n);
            s->s_h = nh;
            s->s_cap = s->s_n;
        }
    }
    size_t at = 0;
    for (size_t p = 0; p <= np; p++) {
        while (at < s->s_n && (s->s_h[at] >> (64 - IDX_BITS)) < p)
            at++;
        idx[p] = (uint32_t)at;
    }
    s->s_idx = idx;
    return 0;
}

static int bucket_has(const struct seen *s, size_t lo, size_t hi, uint64_t h)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->s_h[mid] == h)
            return 1;
        if (s->s_h[mid] < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

int seen_has(const struct seen *s, uint64_t h)
{
    if (!s->s_idx)
        return 0;
    size_t p = (size_t)(h >> (64 - IDX_BITS));
    return bucket_has(s, s->s_idx[p], s->s_idx[p + 1], h);
}

/*
 * Each lookup misses the cache twice (the index, then the bucket); asking
 * for all of a page's index entries, then all their buckets, before reading
 * any lets those misses overlap instead of queueing one after another.
 */
void seen_has_many(const struct seen *s, const uint64_t *h, size_t n, unsigned char *out)
{
    if (!s->s_idx) {
        memset(out, 0, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        __builtin_prefetch(&s->s_idx[h[i] >> (64 - IDX_BITS)]);
    for (size_t i = 0; i < n; i++)
        __builtin_prefetch(&s->s_h[s->s_idx[h[i] >> (64 - IDX_BITS)]]);
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)seen_has(s, h[i]);
}

void seen_free(struct seen *s)
{
    if (s->s_pool)
        pool_give(s->s_pool, s->s_cap);
    free(s->s_h);
    free(s->s_idx);
    memset(s, 0, sizeof(*s));
}
