/*
 * Heartbeat times: a beat inside the ring is read from its slot; the slot
 * after the newest (the next beat may be writing it) and anything older are
 * placed one interval apart before the oldest readable beat.
 */
#include "lag.h"
#include "unit.h"

TEST(lag_beat_time_inside_the_ring)
{
    uint64_t ring[8] = {0};

    /* beats 1..5 written at 1000, 2000, ... */
    for (uint64_t s = 1; s <= 5; s++)
        ring[s % 8] = s * 1000;
    CHECK(lag_beat_time(ring, 8, 5, 1, 100) == 1000);
    CHECK(lag_beat_time(ring, 8, 5, 5, 100) == 5000);
}

TEST(lag_beat_time_beyond_the_ring)
{
    uint64_t ring[8] = {0};

    /* beats 1..20 written 1000 apart; slots hold 13..20 */
    for (uint64_t s = 1; s <= 20; s++)
        ring[s % 8] = s * 1000;
    /* the next beat (21) is being written over beat 13's slot */
    ring[21 % 8] = 21000;
    CHECK(lag_beat_time(ring, 8, 20, 14, 1000) == 14000); /* the oldest readable */
    CHECK(lag_beat_time(ring, 8, 20, 13, 1000) == 13000); /* placed, not read */
    CHECK(lag_beat_time(ring, 8, 20, 10, 1000) == 10000);
    CHECK(lag_beat_time(ring, 8, 20, 10, 5000) == 0);    /* never before time 0 */
    CHECK(lag_beat_time(ring, 8, 20, 12, 500) == 13000); /* two intervals before 14000 */
}
