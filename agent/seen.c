/*
 * seen -- a sealed set of 64-bit hashes (see seen.h).
 */
#include "seen.h"

#include <stdlib.h>
#include <string.h>

#define IDX_BITS 16

void seen_init(struct seen *s, size_t max)
{
    memset(s, 0, sizeof(*s));
    s->s_max = max;
}

int seen_add(struct seen *s, uint64_t h)
{
    if (s->s_idx || s->s_n >= s->s_max) {
        s->s_full = 1;
        return -1;
    }
    if (s->s_n == s->s_cap) {
        size_t cap = s->s_cap ? s->s_cap * 2 : 65536;
        if (cap > s->s_max)
            cap = s->s_max;
        uint64_t *nh = realloc(s->s_h, cap * sizeof(*nh));
        if (!nh) {
            s->s_full = 1;
            return -1;
        }
        s->s_h = nh;
        s->s_cap = cap;
    }
    s->s_h[s->s_n++] = h;
    return 0;
}

/*
 * Sorts by the top IDX_BITS bits (one counting pass, then each hash copied
 * to its bucket in a second array: reads in order and writes that do not
 * wait on each other, so millions take milliseconds), then each bucket, a
 * few hashes on average, by insertion. s_idx[p] is then the first hash whose
 * top bits are >= p. The first array is freed: at the peak, 16 bytes a hash.
 */
int seen_seal(struct seen *s)
{
    size_t np = (size_t)1 << IDX_BITS;

    if (s->s_idx)
        return 0;
    uint32_t *idx = calloc(np + 1, sizeof(*idx));
    uint32_t *next = malloc(np * sizeof(*next));
    uint64_t *out = malloc((s->s_n ? s->s_n : 1) * sizeof(*out));
    if (!idx || !next || !out) {
        free(idx);
        free(next);
        free(out);
        return -1;
    }
    for (size_t i = 0; i < s->s_n; i++)
        idx[(s->s_h[i] >> (64 - IDX_BITS)) + 1]++;
    for (size_t p = 0; p < np; p++) {
        idx[p + 1] += idx[p];
        next[p] = idx[p];
    }
    for (size_t i = 0; i < s->s_n; i++)
        out[next[s->s_h[i] >> (64 - IDX_BITS)]++] = s->s_h[i];
    free(next);
    for (size_t p = 0; p < np; p++)
        for (size_t i = idx[p] + 1; i < idx[p + 1]; i++) {
            uint64_t h = out[i];
            size_t j = i;
            for (; j > idx[p] && out[j - 1] > h; j--)
                out[j] = out[j - 1];
            out[j] = h;
        }
    free(s->s_h);
    s->s_h = out;
    s->s_cap = s->s_n;
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
    free(s->s_h);
    free(s->s_idx);
    memset(s, 0, sizeof(*s));
}
