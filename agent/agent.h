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
    uint64_t a_started_ms;
    uint64_t a_reloads;
};

/* True when host (an http-listen host part) is a loopback address. */
int agent_is_loopback(const char *host);

#endif
