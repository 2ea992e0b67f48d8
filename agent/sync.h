/*
 * sync -- `keydrift sync`, the reference subscriber for pubsub caches.
 *
 * The entry point is cmd_sync() (cmds.h). What the subscriber counts is kept
 * in one struct sync_stats of atomics, so an exporter thread can read it while
 * the subscriber runs. Every message received ends in exactly one of applied,
 * malformed or failed, or is still pending:
 *
 *   received == applied + malformed + failed + pending_msgs
 *
 * (between batches; inside a batch some messages are in flight).
 */
#ifndef KD_SYNC_H
#define KD_SYNC_H

#include <stdatomic.h>

struct sync_stats {
    atomic_ullong ss_received;  /* "message" deliveries on the channel */
    atomic_ullong ss_applied;   /* messages whose key the cache now holds as of the primary */
    atomic_ullong ss_malformed; /* messages syncmsg_parse() rejected */
    atomic_ullong ss_failed;    /* well-formed but not applied (error reply, lost while down) */
    atomic_ullong ss_batches;   /* batches processed (each: one pipeline per side) */
    atomic_ullong ss_coalesced; /* messages merged with a later one for the same key in a batch */
    atomic_ullong ss_pending_keys;    /* gauge: keys waiting for the cache (key format) */
    atomic_ullong ss_pending_msgs;    /* gauge: messages those keys stand for */
    atomic_ullong ss_pending_dropped; /* keys not kept because the pending set was full */
    atomic_ullong ss_resubscribes;    /* subscriptions re-established after a loss */
    atomic_ullong ss_sub_down_us;     /* total time the subscription was down, microseconds */
};

#endif
