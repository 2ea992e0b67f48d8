/*
 * rconn -- one synchronous connection to a Redis server.
 */
#include "rconn.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#define BACKOFF_MIN_MS 50

struct rconn {
    struct cfg_addr rc_addr;
    char *rc_user;
    char *rc_password;
    int rc_db;
    int rc_readonly;
    long long rc_connect_ms, rc_command_ms, rc_backoff_max_ms;
    struct rnode *rc_node;
    redisContext *rc_ctx;
    int rc_pending;
    long long rc_backoff_ms;
    uint64_t rc_next_try_us; /* monotonic; no attempt before this */
    uint64_t rc_down_since;  /* monotonic; when the link was lost */
    int rc_ever_up;
    uint64_t rc_tag[RCONN_TAGS]; /* see rconn_tag */
    char *rc_fmt;                /* rconn_append_argv's scratch buffer */
    size_t rc_fmtcap;
    char rc_err[256];
};

#define FMT_KEEP (1u << 20) /* a larger scratch buffer is freed after use */

static struct timeval ms_to_tv(long long ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

struct rconn *rconn_new(const struct cfg_addr *addr, const struct rconn_opts *o, struct rnode *node)
{
    struct rconn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    c->rc_addr = *addr;
    c->rc_user = o->user && *o->user ? strdup(o->user) : NULL;
    c->rc_password = o->password && *o->password ? strdup(o->password) : NULL;
    c->rc_db = o->db;
    c->rc_readonly = o->readonly;
    c->rc_connect_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 1000;
    c->rc_command_ms = o->command_timeout_ms > 0 ? o->command_timeout_ms : 5000;
    c->rc_backoff_max_ms = o->backoff_max_ms > 0 ? o->backoff_max_ms : 5000;
    c->rc_node = node;
    snprintf(c->rc_err, sizeof(c->rc_err), "not connected");
    return c;
}

void rconn_free(struct rconn *c)
{
    if (!c)
        return;
    rconn_close(c);
    if (c->rc_password)
        memset(c->rc_password, 0, strlen(c->rc_password));
    free(c->rc_user);
    free(c->rc_password);
    free(c->rc_fmt);
    free(c);
}

static void set_node_up(struct rconn *c, int up)
{
    if (c->rc_node)
        atomic_store(&c->rc_node->rn_up, up);
}

static void count(struct rconn *c)
{
    if (c->rc_node)
        atomic_fetch_add(&c->rc_node->rn_commands, 1);
}

void rconn_close(struct rconn *c)
{
    if (c->rc_ctx) {
        redisFree(c->rc_ctx);
        c->rc_ctx = NULL;
        if (!c->rc_down_since)
            c->rc_down_since = clock_mono_us();
    }
    c->rc_pending = 0;
}

/* Closes after an error on the link and schedules the next attempt. */
static void fail(struct rconn *c, const char *what)
{
    if (c->rc_ctx && c->rc_ctx->err)
        snprintf(c->rc_err, sizeof(c->rc_err), "%s:%d: %s: %s", c->rc_addr.host, c->rc_addr.port,
                 what, c->rc_ctx->errstr);
    else
        snprintf(c->rc_err, sizeof(c->rc_err), "%s:%d: %s", c->rc_addr.host, c->rc_addr.port, what);
    rconn_close(c);
    set_node_up(c, 0);
    c->rc_backoff_ms = c->rc_backoff_ms ? c->rc_backoff_ms * 2 : BACKOFF_MIN_MS;
    if (c->rc_backoff_ms > c->rc_backoff_max_ms)
        c->rc_backoff_ms = c->rc_backoff_max_ms;
    c->rc_next_try_us = clock_mono_us() + (uint64_t)c->rc_backoff_ms * 1000u;
}

/* Runs a setup command (AUTH, SELECT) on a fresh context; 0 when it answered OK. */
static int setup_cmd(struct rconn *c, int argc, const char **argv, const char *what)
{
    redisReply *r = redisCommandArgv(c->rc_ctx, argc, argv, NULL);
    count(c);
    if (!r) {
        fail(c, what);
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s failed: %.100s", what, r->str);
        freeReplyObject(r);
        fail(c, msg);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

int rconn_ensure(struct rconn *c)
{
    if (c->rc_ctx)
        return 0;
    if (clock_mono_us() < c->rc_next_try_us)
        return -1; /* keep the last error */

    c->rc_ctx =
        redisConnectWithTimeout(c->rc_addr.host, c->rc_addr.port, ms_to_tv(c->rc_connect_ms));
    if (!c->rc_ctx) {
        fail(c, "out of memory");
        return -1;
    }
    if (c->rc_ctx->err) {
        fail(c, "connect");
        return -1;
    }
    if (redisSetTimeout(c->rc_ctx, ms_to_tv(c->rc_command_ms)) != REDIS_OK) {
        fail(c, "setting the timeout");
        return -1;
    }
    redisEnableKeepAlive(c->rc_ctx);
    if (c->rc_password) {
        const char *argv[3] = {"AUTH", c->rc_user ? c->rc_user : c->rc_password, c->rc_password};
        if (setup_cmd(c, c->rc_user ? 3 : 2, argv, "AUTH") < 0) {
            /* Say what to fix; the callers log it once per outage. */
            size_t n = strlen(c->rc_err);
            snprintf(c->rc_err + n, sizeof(c->rc_err) - n,
                     " (check redis-user and redis-password-file, or sentinel-user and "
                     "sentinel-password-file for a sentinel)");
            return -1;
        }
    }
    if (c->rc_db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", c->rc_db);
        const char *argv[2] = {"SELECT", db};
        if (setup_cmd(c, 2, argv, "SELECT") < 0)
            return -1;
    }
    if (c->rc_readonly) {
        const char *argv[1] = {"READONLY"};
        if (setup_cmd(c, 1, argv, "READONLY") < 0)
            return -1;
    }
    if (c->rc_down_since && c->rc_ever_up) {
        uint64_t down = clock_mono_us() - c->rc_down_since;
        log_notice("%s:%d: reconnected after %.3f s", c->rc_addr.host, c->rc_addr.port,
                   (double)down / 1e6);
    }
    c->rc_ever_up = 1;
    c->rc_down_since = 0;
    c->rc_backoff_ms = 0;
    c->rc_pending = 0;
    memset(c->rc_tag, 0, sizeof(c->rc_tag));
    set_node_up(c, 1);
    return 0;
}

int rconn_connected(const struct rconn *c)
{
    return c->rc_ctx != NULL;
}

const char *rconn_errstr(const struct rconn *c)
{
    return c->rc_err;
}

const struct cfg_addr *rconn_addr(const struct rconn *c)
{
    return &c->rc_addr;
}

uint64_t rconn_down_since_us(const struct rconn *c)
{
    return c->rc_ctx ? 0 : c->rc_down_since;
}

static redisReply *finish(struct rconn *c, void *r)
{
    if (!r) {
        fail(c, "command");
        return NULL;
    }
    set_node_up(c, 1);
    return r;
}

redisReply *rconn_command(struct rconn *c, const char *fmt, ...)
{
    va_list ap;
    void *r;

    if (rconn_ensure(c) < 0)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(c->rc_ctx, fmt, ap);
    va_end(ap);
    count(c);
    return finish(c, r);
}

redisReply *rconn_argv(struct rconn *c, int argc, const char **argv, const size_t *lens)
{
    if (rconn_ensure(c) < 0)
        return NULL;
    void *r = redisCommandArgv(c->rc_ctx, argc, argv, lens);
    count(c);
    return finish(c, r);
}

int rconn_append(struct rconn *c, const char *fmt, ...)
{
    va_list ap;
    int rc;

    if (rconn_ensure(c) < 0)
        return -1;
    va_start(ap, fmt);
    rc = redisvAppendCommand(c->rc_ctx, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) {
        fail(c, "append");
        return -1;
    }
    count(c);
    c->rc_pending++;
    return 0;
}

/* Writes n in decimal at p; returns the end. */
static char *put_size(char *p, size_t n)
{
    char t[24];
    int i = 0;

    do
        t[i++] = (char)('0' + n % 10);
    while (n /= 10);
    while (i)
        *p++ = t[--i];
    return p;
}

/*
 * The command is written in the protocol here, into a buffer kept with the
 * connection, and handed to hiredis whole: hiredis's own formatting grows a
 * string argument by argument, which for the comparison's script calls (256
 * keys each) was 7 % of the agent's CPU in a check.
 */
int rconn_append_argv(struct rconn *c, int argc, const char **argv, const size_t *lens)
{
    size_t need = 16; /* "*", the count, CRLF */
    char *p;
    int rc;

    if (rconn_ensure(c) < 0)
        return -1;
    for (int i = 0; i < argc; i++) /* "$", up to 20 digits, two CRLFs */
        need += (lens ? lens[i] : strlen(argv[i])) + 25;
    if (need > c->rc_fmtcap) {
        free(c->rc_fmt);
        c->rc_fmtcap = need > 4096 ? need : 4096;
        c->rc_fmt = malloc(c->rc_fmtcap);
        if (!c->rc_fmt) {
            c->rc_fmtcap = 0;
            fail(c, "append: out of memory");
            return -1;
        }
    }
    p = c->rc_fmt;
    *p++ = '*';
    p = put_size(p, (size_t)argc);
    *p++ = '\r';
    *p++ = '\n';
    for (int i = 0; i < argc; i++) {
        size_t len = lens ? lens[i] : strlen(argv[i]);
        *p++ = '$';
        p = put_size(p, len);
        *p++ = '\r';
        *p++ = '\n';
        memcpy(p, argv[i], len);
        p += len;
        *p++ = '\r';
        *p++ = '\n';
    }
    rc = redisAppendFormattedCommand(c->rc_ctx, c->rc_fmt, (size_t)(p - c->rc_fmt));
    if (c->rc_fmtcap > FMT_KEEP) {
        free(c->rc_fmt);
        c->rc_fmt = NULL;
        c->rc_fmtcap = 0;
    }
    if (rc != REDIS_OK) {
        fail(c, "append");
        return -1;
    }
    count(c);
    c->rc_pending++;
    return 0;
}

int rconn_flush(struct rconn *c)
{
    int wdone = 0;

    if (!c->rc_ctx)
        return -1;
    while (!wdone) {
        if (redisBufferWrite(c->rc_ctx, &wdone) != REDIS_OK) {
            fail(c, "write");
            return -1;
        }
    }
    return 0;
}

redisReply *rconn_reply(struct rconn *c)
{
    void *r = NULL;

    if (!c->rc_ctx) {
        return NULL;
    }
    if (redisGetReply(c->rc_ctx, &r) != REDIS_OK || !r) {
        fail(c, "reading reply");
        return NULL;
    }
    if (c->rc_pending > 0)
        c->rc_pending--;
    set_node_up(c, 1);
    return r;
}

int rconn_reply_with(struct rconn *c, redisReplyObjectFunctions *fn, void *privdata)
{
    redisReader *rd;
    redisReplyObjectFunctions *fn0;
    void *pd0, *r = NULL;
    int ok;

    if (!c->rc_ctx)
        return -1;
    rd = c->rc_ctx->reader;
    fn0 = rd->fn;
    pd0 = rd->privdata;
    rd->fn = fn;
    rd->privdata = privdata;
    ok = redisGetReply(c->rc_ctx, &r) == REDIS_OK && r;
    rd->fn = fn0;
    rd->privdata = pd0;
    if (!ok) {
        fail(c, "reading reply");
        return -1;
    }
    if (c->rc_pending > 0)
        c->rc_pending--;
    set_node_up(c, 1);
    return 0;
}

int rconn_pending(const struct rconn *c)
{
    return c->rc_pending;
}

void rconn_count(struct rconn *c, unsigned n)
{
    if (c->rc_node && n)
        atomic_fetch_add(&c->rc_node->rn_commands, n);
}

uint64_t rconn_tag(const struct rconn *c, int i)
{
    return c->rc_tag[i];
}

void rconn_set_tag(struct rconn *c, int i, uint64_t tag)
{
    c->rc_tag[i] = tag;
}

int rconn_poll_reply(struct rconn *c, int timeout_ms, redisReply **out)
{
    void *r = NULL;
    int wdone = 0;

    *out = NULL;
    if (!c->rc_ctx)
        return -1;
    /* Flush anything appended but not yet written. */
    while (!wdone) {
        if (redisBufferWrite(c->rc_ctx, &wdone) != REDIS_OK) {
            fail(c, "write");
            return -1;
        }
    }
    if (redisGetReplyFromReader(c->rc_ctx, &r) != REDIS_OK) {
        fail(c, "protocol error");
        return -1;
    }
    if (!r) {
        struct pollfd pfd = {.fd = c->rc_ctx->fd, .events = POLLIN};
        int n = poll(&pfd, 1, timeout_ms);
        if (n < 0 && errno == EINTR)
            return 0;
        if (n < 0) {
            fail(c, "poll");
            return -1;
        }
        if (n == 0)
            return 0;
        if (redisBufferRead(c->rc_ctx) != REDIS_OK) {
            fail(c, "read");
            return -1;
        }
        if (redisGetReplyFromReader(c->rc_ctx, &r) != REDIS_OK) {
            fail(c, "protocol error");
            return -1;
        }
        if (!r)
            return 0;
    }
    set_node_up(c, 1);
    *out = r;
    return 1;
}
