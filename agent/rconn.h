/*
 * rconn -- one synchronous connection to a Redis server.
 *
 * Wraps a hiredis context with connect and command timeouts, AUTH (with an
 * ACL user), SELECT, reconnection with capped exponential backoff, pipelining
 * of binary-safe argv commands, and a per-node command counter that the
 * metrics read. After an I/O error the connection is closed; the next call
 * reconnects once the backoff has passed. A reply of type error is a reply,
 * not a connection error.
 */
#ifndef KD_RCONN_H
#define KD_RCONN_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* A Redis server as the metrics see it; shared by every rconn to it. */
struct rnode {
    char rn_name[CFG_NAME_MAX];
    char rn_role[16]; /* primary | replica | cache | sentinel */
    struct cfg_addr rn_addr;
    atomic_ullong rn_commands; /* commands the agent sent to it */
    atomic_int rn_up;          /* 1 when the last attempt to talk to it worked */
};

struct rconn_opts {
    const char *user;     /* ACL user, or NULL */
    const char *password; /* or NULL */
    int db;
    int readonly; /* send READONLY (reads from a Redis Cluster replica) */
    long long connect_timeout_ms;
    long long command_timeout_ms;
    long long backoff_max_ms; /* cap of the reconnect backoff; 0 means 5000 */
};

struct rconn;

/* Creates a connection object (not yet connected). node may be NULL. Strings are copied. */
struct rconn *rconn_new(const struct cfg_addr *addr, const struct rconn_opts *opts,
                        struct rnode *node);
void rconn_free(struct rconn *c);

/*
 * Connects if not connected, honouring the backoff: returns 0 when connected,
 * -1 when the attempt failed or it is too early to retry (see rconn_errstr).
 */
int rconn_ensure(struct rconn *c);
int rconn_connected(const struct rconn *c);
/* Drops the connection; the next rconn_ensure() reconnects at once. */
void rconn_close(struct rconn *c);
/* The reason of the last failure. */
const char *rconn_errstr(const struct rconn *c);
const struct cfg_addr *rconn_addr(const struct rconn *c);
/* Microseconds since the connection was lost, 0 when connected or never connected. */
uint64_t rconn_down_since_us(const struct rconn *c);

/*
 * Runs one command and returns its reply (the caller frees it with
 * freeReplyObject), or NULL on a connection error (then closed).
 */
redisReply *rconn_command(struct rconn *c, const char *fmt, ...);
redisReply *rconn_argv(struct rconn *c, int argc, const char **argv, const size_t *lens);

/* Pipelining: append commands, then read their replies in order (lens NULL: strlen). */
int rconn_append(struct rconn *c, const char *fmt, ...);
int rconn_append_argv(struct rconn *c, int argc, const char **argv, const size_t *lens);
/*
 * Writes everything appended so far without reading. hiredis only writes its
 * output buffer when a reply is first read, so a caller that pipelines to
 * several servers must flush each before reading any, or the servers take
 * their turns instead of working at the same time. -1 on a connection error
 * (then closed).
 */
int rconn_flush(struct rconn *c);
/* Reads the next pending reply (NULL on error: the connection is closed). */
redisReply *rconn_reply(struct rconn *c);
/*
 * Reads the next pending reply built by fn instead of as a redisReply (a
 * reader that keeps only what it needs allocates less): each of fn's
 * functions gets privdata in its task, and must return non-NULL. Returns 0,
 * or -1 on a connection error (then closed; what fn built so far is fn's
 * to undo).
 */
int rconn_reply_with(struct rconn *c, redisReplyObjectFunctions *fn, void *privdata);
/* Replies appended but not yet read. */
int rconn_pending(const struct rconn *c);

/*
 * Adds n commands to the node's counter without sending anything: a script
 * runs several commands on the server for one EVALSHA, and the budget and the
 * metrics count what the node does for us.
 */
void rconn_count(struct rconn *c, unsigned n);

/*
 * RCONN_TAGS words of caller state kept with the connection and reset to 0
 * on every (re)connect, since a new link may reach another server or run
 * under other permissions (compare keeps here until when its script, or
 * DEBUG DIGEST-VALUE, was refused).
 */
#define RCONN_TAGS 2
uint64_t rconn_tag(const struct rconn *c, int i);
void rconn_set_tag(struct rconn *c, int i, uint64_t tag);

/*
 * Waits up to timeout_ms for a reply (for subscribers). Returns 1 with *out
 * set, 0 on timeout, -1 on a connection error (then closed).
 */
int rconn_poll_reply(struct rconn *c, int timeout_ms, redisReply **out);

#endif
