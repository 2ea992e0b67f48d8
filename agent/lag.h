/*
 * lag -- replica lag by heartbeat (time) and by replication offset (bytes),
 * and each replica's status.
 *
 * One thread writes a heartbeat key on the primary every heartbeat-interval
 * (and publishes it on the channel when pubsub caches are watched) and reads
 * the primary's INFO; one thread per replica polls the heartbeat key (and a
 * native replica's INFO) on its own connection, so no slow replica and no
 * other part of the agent can delay another's measurement.
 *
 * The heartbeat value is "<run>:<seq>:<wall-us>". A replica that shows seq s
 * has every heartbeat up to s; its lag is now - (the time heartbeat s+1 was
 * written), or 0 when s is the latest. Lag is computed when asked, from the
 * last value seen, so it grows in real time while a replica is stalled.
 *
 * With key-format pubsub caches a subscriber copies a key's current value, so
 * a cache shows the newest heartbeat as soon as it handles any heartbeat
 * message, however many older updates still wait in its queue. For them the
 * heartbeat thread also writes markers: keys written once
 * ("<heartbeat key>:<run>:m<n>", 10 s TTL) and published once, every 100 ms
 * and whenever confirmation asks for one. A cache that shows marker n has
 * handled every message published before it; its lag is the larger of the
 * heartbeat lag and the age of the oldest marker it does not show.
 */
#ifndef KD_LAG_H
#define KD_LAG_H

#include <stdint.h>

#include "config.h"
#include "rconn.h"

struct store;

enum replica_status {
    STATUS_OK,
    STATUS_LAGGING,
    STATUS_STALLED,
    STATUS_DOWN,
    STATUS_RESYNCED,
    STATUS_COUNT
};

const char *lag_status_name(enum replica_status s);

/* A consistent view of one replica, for metrics, the API and confirmation. */
struct lag_view {
    double lag_seconds;        /* heartbeat lag, now; -1 before the first poll */
    long long lag_bytes;       /* native: primary offset - replica offset; -1 unknown */
    long long offset;          /* native: replica's processed offset; -1 unknown */
    int reachable;             /* the last poll answered */
    int link_up;               /* native: master_link_status; pubsub: has a subscriber */
    long long last_io_seconds; /* native: master_last_io_seconds_ago; -1 unknown */
    int sync_in_progress;      /* native */
    uint64_t resyncs;          /* replication-id changes and full syncs seen */
    uint64_t shown_seq;        /* newest heartbeat seq the replica shows (0: none) */
    uint64_t shown_marker;     /* key-format caches: newest marker shown (0: none) */
    enum replica_status status;
    char status_reason[96];
};

struct lag;

/*
 * Starts the heartbeat and poll threads for cfg's primary and replicas. The
 * nodes (primary first, then one per replica, same order as cfg->replicas)
 * are the caller's and must outlive the lag object; store may be NULL.
 */
struct lag *lag_start(const struct config *cfg, struct rnode *primary, struct rnode *replicas,
                      struct store *store);
void lag_stop(struct lag *l);

void lag_get(struct lag *l, int replica, struct lag_view *out);
/* The newest heartbeat seq written and the primary's master_repl_offset (-1 unknown). */
uint64_t lag_written_seq(struct lag *l);
long long lag_primary_offset(struct lag *l);
/*
 * The number of a marker that will be written after this call, for a
 * key-format cache to show once it has handled everything published so far:
 * the second one from now, at least a heartbeat interval later, so that an
 * update whose PUBLISH trails its write by a little is covered too (as the
 * json format's "two heartbeats ahead"). 0 when no markers are written (no
 * key-format caches).
 */
uint64_t lag_marker_ask(struct lag *l);
/* When heartbeat seq was written (mono µs), from a ring of n slots holding
 * the newest written: beats older than the ring are placed interval_us apart. */
uint64_t lag_beat_time(const uint64_t *ring, uint64_t n, uint64_t written, uint64_t seq,
                       uint64_t interval_us);
/* Subscribers on the channel (PUBSUB NUMSUB), -1 unknown. */
long long lag_channel_subscribers(struct lag *l);
/* The primary's run_id and the time it was read; "" unknown. */
void lag_primary_run_id(struct lag *l, char *out, size_t outsz);

/* Registers the lag metric families (once). */
void lag_metrics_init(void);
/* Sets the lag metrics from l; called by the agent's collector at each render. */
void lag_collect(struct lag *l);
/* Drops every per-replica series (on a reload that changes the replicas). */
void lag_metrics_reset(void);

/* The heartbeat key for this agent ("keydrift:hb:<agent-id>"). */
void lag_heartbeat_key(const struct config *cfg, char *out, size_t outsz);
/* True for keys the agent itself writes (heartbeats): never divergent. */
int lag_is_heartbeat_key(const void *key, size_t len);

#endif
