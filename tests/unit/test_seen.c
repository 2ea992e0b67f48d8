/*
 * The hash set a one-pass check keeps of the keys it fetched: a hash added
 * is found and not added twice, hashes never added are not found, and a
 * full set says which hashes it cannot tell about and stays right about the
 * rest.
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
    CHECK(!seen_has(&s, mix(0))); /* empty, no table yet */
    for (uint64_t i = 0; i < 200000; i++)
        CHECK(seen_add(&s, mix(2 * i)) == 1); /* grows from its first table */
    /* the extremes: mix(0) is 0, stored as 1; the last slot's range */
    CHECK(seen_add(&s, 1) == 0);
    CHECK(seen_add(&s, UINT64_MAX) == 1);
    CHECK(s.s_n == 200001 && s.s_n <= s.s_cap / 4 * 3);
    int found = 1, absent = 1, again = 1;
    for (uint64_t i = 0; i < 200000; i++) {
        found &= seen_has(&s, mix(2 * i));
        absent &= !seen_has(&s, mix(2 * i + 1));
        again &= seen_add(&s, mix(2 * i)) == 0;
    }
    CHECK(found);
    CHECK(absent);
    CHECK(again && s.s_n == 200001);
    uint64_t some[5] = {mix(0), mix(1), mix(398), UINT64_MAX, mix(1)};
    signed char out[5];
    seen_add_many(&s, some, 5, out);
    CHECK(out[0] == 0 && out[1] == 1 && out[2] == 0 && out[3] == 0 && out[4] == 0);
    CHECK(seen_has(&s, 0) && seen_has(&s, UINT64_MAX));
    CHECK(!seen_has(&s, UINT64_MAX - 1));
    CHECK(!s.s_full);
    seen_free(&s);
}

/* Made room for up front, it never grows (growing holds two tables). */
TEST(seen_reserved_set_does_not_grow)
{
    struct seen s;
    struct seen_pool pool;

    seen_pool_init(&pool, 1 << 20);
    seen_init(&s, &pool);
    seen_reserve(&s, 100000);
    size_t cap = s.s_cap;
    CHECK(cap >= 100000 / 3 * 4 && cap < 140000);
    for (uint64_t i = 0; i < 100000; i++)
        seen_add(&s, mix(i));
    CHECK(s.s_cap == cap && s.s_n == 100000 && !s.s_full);
    CHECK(atomic_load(&pool.sp_left) == (1 << 20) - cap);
    seen_free(&s);
    CHECK(atomic_load(&pool.sp_left) == 1 << 20);
}

TEST(seen_full_set_is_partial_not_wrong)
{
    struct seen s;
    struct seen_pool pool;

    seen_pool_init(&pool, 1000);
    seen_init(&s, &pool);
    int added = 0;
    for (uint64_t i = 0; i < 1500; i++)
        added += seen_add(&s, mix(i)) == 1;
    CHECK(s.s_full && added == 750 && s.s_n == 750 && s.s_cap == 1000);
    CHECK(seen_add(&s, mix(5000)) == -1);
    int first = 1;
    for (uint64_t i = 0; i < 750; i++)
        first &= seen_has(&s, mix(i)) && seen_add(&s, mix(i)) == 0;
    CHECK(first);
    CHECK(!seen_has(&s, mix(1200)) && !seen_has(&s, mix(5000)));
    seen_free(&s);
}

/* An empty pool: nothing is ever known, and nothing is claimed. */
TEST(seen_empty_pool)
{
    struct seen s;
    struct seen_pool pool;

    seen_pool_init(&pool, 0);
    seen_init(&s, &pool);
    CHECK(seen_add(&s, 42) == -1 && s.s_full);
    CHECK(!seen_has(&s, 0) && !seen_has(&s, 42));
    seen_free(&s);
}

/* The pool's last few slots: never a table with no empty slot to stop a
 * probe (a lookup would not end). */
TEST(seen_tiny_pools)
{
    for (size_t slots = 1; slots <= 9; slots++) {
        struct seen s;
        struct seen_pool pool;

        seen_pool_init(&pool, slots);
        seen_init(&s, &pool);
        int added = 0, refused = 0;
        for (uint64_t i = 0; i < 20; i++) {
            int r = seen_add(&s, mix(i + 1));
            added += r == 1;
            refused += r == -1;
        }
        CHECK(added == (int)(slots / 4 * 3) && refused == 20 - added && s.s_full);
        CHECK(!seen_has(&s, mix(100)));
        CHECK(added == 0 || seen_has(&s, mix(1)));
        seen_free(&s);
        CHECK(atomic_load(&pool.sp_left) == slots);
    }
}

/* Two sets drawing on one pool hold no more together than it has; what a
 * set gives back is there for the next. */
TEST(seen_sets_share_their_pool)
{
    struct seen a, b, c;
    struct seen_pool pool;

    seen_pool_init(&pool, 300000);
    seen_init(&a, &pool);
    seen_init(&b, &pool);
    for (uint64_t i = 0; i < 150000; i++) {
        seen_add(&a, mix(i));
        seen_add(&b, mix(i + (1u << 30)));
    }
    CHECK(a.s_full || b.s_full);
    CHECK(a.s_cap + b.s_cap <= 300000);
    CHECK(atomic_load(&pool.sp_left) == 300000 - a.s_cap - b.s_cap);
    int found = 1;
    for (uint64_t i = 0; i < 150000; i++)
        found &= seen_add(&a, mix(i)) != 1;
    CHECK(found);
    seen_free(&a);
    seen_free(&b);
    CHECK(atomic_load(&pool.sp_left) == 300000);
    seen_init(&c, &pool);
    seen_reserve(&c, 200000);
    for (uint64_t i = 0; i < 200000; i++)
        CHECK(seen_add(&c, mix(i)) == 1);
    CHECK(!c.s_full);
    seen_free(&c);
}
