/*
 * agent -- the `keydrift run` daemon: owns the configuration, the nodes, the
 * lag monitor, the store and the HTTP server, and swaps them on SIGHUP.
 */
#ifndef KD_AGENT_H
#define KD_AGENT_H

#include <pthread.h>
#include <stdint.h>

#include "config.h"
#include "rconn.h"

struct lag;
struct detect;
struct store;
struct http_server;
struct topo;
struct topo_unit;
struct topo_watch;

struct agent {
    pthread_rwlock_t a_lock; /* readers: HTTP handlers, collectors; writer: reload */
    struct config a_cfg;
    struct rnode a_primary;
    struct rnode a_replicas[CFG_MAX_REPLICAS];
    struct lag *a_lag;
    struct detect *a_detect;
    struct store *a_store;
    char a_store_error[256]; /* why the store could not be opened, "" otherwise */
    uint64_t a_store_open_failures;
    struct http_server *a_http;
    /*
     * Discovery (topo.c): the resolved topology, one unit (lag monitor and
     * per-db engines) per shard, and the watch that follows failovers. Unit 0
     * runs on a_primary/a_replicas and is mirrored in a_cfg.primary/replicas,
     * a_lag and a_detect (its first db), so code that knows one primary keeps
     * working; a cluster's other shards are only in a_units.
     */
    struct topo *a_topo;
    struct topo_unit *a_units;
    int a_nunits;
    struct topo_watch *a_watch;
    /*
     * Counts worker starts (start at boot, reload, topology change): the
     * repair API keeps engine pointers with the generation they belong to,
     * so a job of engines since stopped is never looked up in new ones.
     */
    uint64_t a_workers_gen;
    uint64_t a_started_ms;
    uint64_t a_reloads;
};

/* True when host (an http-listen host part) is a loopback address. */
int agent_is_loopback(const char *host);

#endif
