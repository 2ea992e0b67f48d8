/*
 * The sealed hash set a one-pass check keeps of the primary's keys: every
 * hash added is found after sealing, hashes never added are not, and a full
 * set says so and stays usable.
 */
#include "seen.h"
#include "unit.h"

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

TEST(seen_finds_what_was_added)
{
    struct seen s;
    struct seen_pool pool;

    seen_pool_init(&pool, 1 << 20);
    seen_init(&s, &pool);
    for (uint64_t i = 0; i < 200000; i++)
        CHECK(seen_add(&s, mix(2 * i)) == 0);
    /* the extremes of the index's range */
    CHECK(seen_add(&s, 0) == 0);
    CHECK(seen_add(&s, UINT64_MAX) == 0);
    CHECK(seen_has(&s, mix(0)) == 0); /* not sealed yet: nothing is known */
    CHECK(seen_seal(&s) == 0);
    int sorted = 1;
    for (size_t i = 1; i < s.s_n; i++)
        sorted &= s.s_h[i - 1] <= s.s_h[i];
    CHECK(sorted && s.s_n == 200002);
    int found = 1, absent = 1;
    for (uint64_t i = 0; i < 200000; i++) {
        found &= seen_has(&s, mix(2 * i));
        absent &= !seen_has(&s, mix(2 * i + 1));
    }
    CHECK(found);
    CHECK(absent);
    uint64_t some[4] = {mix(0), mix(1), mix(398), UINT64_MAX};
    unsigned char has[4];
    seen_has_many(&s, some, 4, has);
    CHECK(has[0] == 1 && has[1] == 0 && has[2] == 1 && has[3] == 1);
    CHECK(seen_has(&s, 0) && seen_has(&s, UINT64_MAX));
    CHECK(!seen_has(&s, 1) && !seen_has(&s, UINT64_MAX - 1));
    CHECK(!s.s_full);
    seen_free(&s);
}

TEST(seen_full_set_is_partial_not_wrong)
{
    struct seen s;
    struct seen_pool pool;

    seen_pool_init(&pool, 1000);
    seen_init(&s, &pool);
    for (uint64_t i = 0; i < 1500; i++)
        seen_add(&s, mix(i));
    CHECK(s.s_full);
    CHECK(seen_add(&s, mix(5000)) == -1);
    CHECK(seen_seal(&s) == 0);
    CHECK(seen_add(&s, mix(6000)) == -1); /* sealed: read only */
    int first = 1;
    for (uint64_t i = 0; i < 1000; i++)
        first &= seen_has(&s, mix(i));
    CHECK(first);
    CHECK(!seen_has(&s, mix(1200)) && !seen_has(&s, mix(6000)));
    seen_free(&s);
}

TEST(seen_empty_set)
{
    struct seen s;
    struct seen_pool pool;

    seen_pool_init(&pool, 10);
    seen_init(&s, &pool);
    CHECK(seen_seal(&s) == 0);
    CHECK(!seen_has(&s, 0) && !seen_has(&s, 42));
    seen_free(&s);
}

/* Two sets drawing on one pool hold no more together than it has; what a
 * set gives back (sealed, freed) is there for the next. */
TEST(seen_sets_share_their_pool)
{
    struct seen a, b, c;
    struct seen_pool pool;

    seen_pool_init(&pool, 200000);
    seen_init(&a, &pool);
    seen_init(&b, &pool);
    for (uint64_t i = 0; i < 150000; i++) {
        seen_add(&a, mix(i));
        seen_add(&b, mix(i + (1u << 30)));
    }
    CHECK(a.s_full && b.s_full);
    CHECK(a.s_n + b.s_n <= 200000 && a.s_n + b.s_n >= 200000 - 65536);
    CHECK(a.s_cap + b.s_cap == 200000 && atomic_load(&pool.sp_left) == 0);
    CHECK(seen_seal(&a) == 0);
    CHECK(a.s_cap == a.s_n && atomic_load(&pool.sp_left) == 200000 - a.s_n - b.s_cap);
    int found = 1;
    for (uint64_t i = 0; i < a.s_n; i++)
        found &= seen_has(&a, mix(i));
    CHECK(found);
    seen_free(&a);
    seen_free(&b);
    CHECK(atomic_load(&pool.sp_left) == 200000);
    seen_init(&c, &pool);
    for (uint64_t i = 0; i < 200000; i++)
        CHECK(seen_add(&c, mix(i)) == 0);
    CHECK(seen_add(&c, mix(1u << 31)) == -1 && c.s_full);
    seen_free(&c);
}
