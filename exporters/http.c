/*
 * http -- the HTTP server on libmicrohttpd, its routing and its helpers.
 *
 * The server binds its own listening socket (so a bind error carries errno
 * into the message) and hands it to MHD, which runs a small pool of polling
 * threads (epoll where available). Per request, the URI log callback keeps a
 * copy of the raw request target, from which the path is decoded and checked
 * and the raw query kept; the body is gathered up to max_body; then the
 * matching route's handler runs once, on an MHD thread.
 *
 * A request flows through on_access() like this:
 *
 *   first call   -> decode path (400), match route (404/405),
 *                   Content-Length > max_body (413) -- reply early, or wait
 *   body chunks  -> append while it fits, else discard and remember (413)
 *   final call   -> 413 if it overflowed, else call the handler and reply
 */
#include "http.h"
#include "log.h"
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_POOL_THREADS    4
#define HTTP_DEFAULT_BODY    (64 * 1024)
#define HTTP_DEFAULT_TIMEOUT 10000
#define HTTP_DISCARD_MAX     (1024 * 1024) /* body bytes read past max_body before we hang up */
#define HTTP_ALLOW_MAX       256

struct http_route {
    char *rt_method;
    char *rt_path;
    size_t rt_pathlen;
    int rt_prefix;
    http_handler rt_fn;
    void *rt_arg;
};

struct http_server {
    char *hs_listen;
    unsigned hs_max_conn, hs_per_ip, hs_timeout_s;
    size_t hs_max_body;
    struct http_route *hs_routes;
    int hs_nroutes;
    struct MHD_Daemon *hs_daemon;
    int hs_port;
};

/* Per-request state, created by the URI log callback, freed on completion. */
struct http_conn {
    char *hc_uri;   /* raw request target; split in place into path and query */
    char *hc_path;  /* decoded path */
    char *hc_query; /* raw query, points into hc_uri (or "") */
    int hc_started;
    int hc_too_big;
    const struct http_route *hc_route;
    char *hc_body;
    size_t hc_len, hc_cap;
    size_t hc_discarded;
};

/* ---------------------------------------------------------------------------
 * Pure helpers: percent-decoding, query strings, paths, JSON strings
 * ------------------------------------------------------------------------- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Reads the next decoded byte of s[*i..n) into *out and advances *i. With
 * plus != 0, '+' decodes to a space (query strings). Returns 0, or -1 on a
 * '%' not followed by two hex digits.
 */
static int next_byte(const char *s, size_t n, size_t *i, int plus, unsigned char *out)
{
    unsigned char c = (unsigned char)s[*i];
    if (c == '%') {
        if (n - *i < 3)
            return -1;
        int hi = hexval((unsigned char)s[*i + 1]), lo = hexval((unsigned char)s[*i + 2]);
        if (hi < 0 || lo < 0)
            return -1;
        *out = (unsigned char)(hi << 4 | lo);
        *i += 3;
        return 0;
    }
    *out = plus && c == '+' ? ' ' : c;
    *i += 1;
    return 0;
}

/*
 * Decodes s[0..n) (form encoding: '+' is a space) into out when out is not
 * NULL, writing at most outsz bytes. Returns the decoded length (which may
 * exceed outsz: the caller checks), or -1 if an escape is malformed.
 */
static long long form_decode(const char *s, size_t n, char *out, size_t outsz)
{
    size_t i = 0, len = 0;
    while (i < n) {
        unsigned char c;
        if (next_byte(s, n, &i, 1, &c) < 0)
            return -1;
        if (out && len < outsz)
            out[len] = (char)c;
        len++;
    }
    return (long long)len;
}

/* Whether the form-encoded name s[0..n) decodes to key: 1, 0, or -1 if malformed. */
static int name_is(const char *s, size_t n, const char *key)
{
    size_t i = 0, k = 0;
    int same = 1;
    while (i < n) {
        unsigned char c;
        if (next_byte(s, n, &i, 1, &c) < 0)
            return -1;
        if (same && (key[k] == '\0' || (unsigned char)key[k] != c))
            same = 0;
        else if (same)
            k++;
    }
    return same && key[k] == '\0';
}

/*
 * Walks every pair so that a malformed escape anywhere makes the whole query
 * malformed, remembers the first pair named key, and only then decodes its
 * value: on -1 and 0, out is "" and *outlen is 0.
 */
int http_query_get(const char *query, const char *key, char *out, size_t outsz, size_t *outlen)
{
    const char *val = NULL;
    size_t val_len = 0;
    long long dec_len = 0;

    if (outlen)
        *outlen = 0;
    if (out && outsz)
        out[0] = '\0';
    if (!key)
        return -1;
    if (!query)
        return 0;
    for (const char *p = query;;) {
        const char *amp = strchr(p, '&');
        size_t plen = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', plen);
        size_t nlen = eq ? (size_t)(eq - p) : plen;
        const char *v = eq ? eq + 1 : p + plen;
        size_t vlen = eq ? plen - nlen - 1 : 0;

        if (plen > 0) {
            int same = name_is(p, nlen, key);
            long long dlen = form_decode(v, vlen, NULL, 0);
            if (same < 0 || dlen < 0)
                return -1;
            if (same && !val) {
                val = v;
                val_len = vlen;
                dec_len = dlen;
            }
        }
        if (!amp)
            break;
        p = amp + 1;
    }
    if (!val)
        return 0;
    if (!out && !outsz)
        return 1; /* presence check only */
    if (!out || (size_t)dec_len >= outsz)
        return -1; /* no room for the value and its NUL */
    form_decode(val, val_len, out, outsz);
    out[dec_len] = '\0';
    if (outlen)
        *outlen = (size_t)dec_len;
    return 1;
}

/*
 * Decodes a raw path (no '+' rule) into a malloc'd string. Returns NULL if
 * it does not start with '/', has a malformed escape, decodes to a NUL byte,
 * or has a ".." segment (raw or encoded), or when out of memory.
 */
static char *path_decode(const char *raw, size_t n)
{
    if (n == 0 || raw[0] != '/')
        return NULL;
    char *out = malloc(n + 1);
    if (!out)
        return NULL;
    size_t i = 0, len = 0;
    while (i < n) {
        unsigned char c;
        if (next_byte(raw, n, &i, 0, &c) < 0 || c == '\0') {
            free(out);
            return NULL;
        }
        out[len++] = (char)c;
    }
    out[len] = '\0';
    for (const char *seg = out; seg;) {
        const char *slash = strchr(seg, '/');
        size_t sl = slash ? (size_t)(slash - seg) : strlen(seg);
        if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
            free(out);
            return NULL;
        }
        seg = slash ? slash + 1 : NULL;
    }
    return out;
}

/* {"error":"<reason, JSON-escaped>"} as a malloc'd string; NULL when out of memory. */
static char *json_error(const char *reason, size_t *len)
{
    size_t n = strlen(reason);
    char *out = malloc(n * 6 + 16);
    if (!out)
        return NULL;
    size_t o = 0;
    o += (size_t)sprintf(out, "{\"error\":\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)reason[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)sprintf(out + o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    o += (size_t)sprintf(out + o, "\"}");
    *len = o;
    return out;
}

void http_addr_text(const struct sockaddr *sa, char *out, size_t outsz)
{
    if (!outsz)
        return;
    out[0] = '\0';
    if (!sa)
        return;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, (socklen_t)outsz);
            return;
        }
        inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)outsz);
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, out, (socklen_t)outsz);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(out, outsz, "unix");
    }
}

/* ---------------------------------------------------------------------------
 * Responses
 * ------------------------------------------------------------------------- */

void http_reply_owned(struct http_response *r, int status, const char *content_type, char *buf,
                      size_t len)
{
    free(r->body);
    r->status = status;
    r->content_type = content_type;
    r->body = buf;
    r->body_len = buf ? len : 0;
}

void http_reply_text(struct http_response *r, int status, const char *content_type,
                     const char *text)
{
    char *b = strdup(text ? text : "");
    if (!b) {
        http_reply_owned(r, 500, "text/plain; charset=utf-8", NULL, 0);
        return;
    }
    http_reply_owned(r, status, content_type, b, strlen(b));
}

void http_reply_json_error(struct http_response *r, int status, const char *reason)
{
    size_t len = 0;
    char *b = json_error(reason ? reason : "", &len);
    http_reply_owned(r, b ? status : 500, "application/json", b, len);
}

/*
 * Sends a response and frees body (malloc'd, may be NULL). allow, when not
 * NULL, becomes the Allow header. Returns MHD's verdict.
 */
static enum MHD_Result send_reply(struct MHD_Connection *c, const struct http_response *r,
                                  const char *allow)
{
    struct MHD_Response *mr;
    if (r->body)
        mr = MHD_create_response_from_buffer(r->body_len, r->body, MHD_RESPMEM_MUST_FREE);
    else
        mr = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    if (!mr) {
        free(r->body);
        return MHD_NO;
    }
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CONTENT_TYPE,
                            r->content_type ? r->content_type : "application/json");
    MHD_add_response_header(mr, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(mr, "X-Content-Type-Options", "nosniff");
    if (allow)
        MHD_add_response_header(mr, MHD_HTTP_HEADER_ALLOW, allow);
    if (r->extra_header_name && r->extra_header_value &&
        MHD_add_response_header(mr, r->extra_header_name, r->extra_header_value) != MHD_YES)
        log_warnx("http: header '%s' rejected", r->extra_header_name);
    unsigned status = r->status >= 100 && r->status <= 599 ? (unsigned)r->status : 500;
    enum MHD_Result ret = MHD_queue_response(c, status, mr);
    MHD_destroy_response(mr);
    return ret;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *reason,
                                  const char *allow)
{
    struct http_response r = {0};
    http_reply_json_error(&r, status, reason);
    return send_reply(c, &r, allow);
}

/* ---------------------------------------------------------------------------
 * Routing
 * ------------------------------------------------------------------------- */

static int route_path_matches(const struct http_route *rt, const char *path)
{
    if (rt->rt_prefix)
        return strncmp(path, rt->rt_path, rt->rt_pathlen) == 0;
    return strcmp(path, rt->rt_path) == 0;
}

/* HEAD is served by GET routes (MHD drops the body). */
static int route_method_matches(const struct http_route *rt, const char *method)
{
    return strcmp(rt->rt_method, method) == 0 ||
           (strcmp(method, "HEAD") == 0 && strcmp(rt->rt_method, "GET") == 0);
}

/*
 * The route for (method, path): an exact route beats any prefix route, a
 * longer prefix beats a shorter one. When the path matches but no method
 * does, returns NULL and fills allow with the methods that would, in route
 * order ("GET, HEAD, POST"; HEAD follows GET); when no path matches, allow is
 * left empty.
 */
static const struct http_route *route_find(const struct http_server *s, const char *method,
                                           const char *path, char *allow, size_t allowsz)
{
    const struct http_route *best = NULL;
    size_t best_score = 0;
    const char *seen[16];
    int nseen = 0;

    for (int i = 0; i < s->hs_nroutes; i++) {
        const struct http_route *rt = &s->hs_routes[i];
        if (!route_path_matches(rt, path))
            continue;
        if (route_method_matches(rt, method)) {
            size_t score = rt->rt_prefix ? rt->rt_pathlen : SIZE_MAX;
            if (!best || score > best_score) {
                best = rt;
                best_score = score;
            }
        }
        const char *add[2] = {rt->rt_method, strcmp(rt->rt_method, "GET") == 0 ? "HEAD" : NULL};
        for (int k = 0; k < 2 && add[k]; k++) {
            int dup = 0;
            for (int j = 0; j < nseen; j++)
                dup |= strcmp(seen[j], add[k]) == 0;
            if (!dup && nseen < (int)(sizeof(seen) / sizeof(seen[0])))
                seen[nseen++] = add[k];
        }
    }
    size_t o = 0;
    allow[0] = '\0';
    for (int j = 0; j < nseen && o < allowsz; j++) {
        int n = snprintf(allow + o, allowsz - o, "%s%s", j ? ", " : "", seen[j]);
        if (n < 0)
            break;
        o += (size_t)n;
    }
    return best;
}

/* ---------------------------------------------------------------------------
 * MHD callbacks
 * ------------------------------------------------------------------------- */

/*
 * Called by MHD with the raw request target before it parses it: keeps a copy
 * as the request's state. Returning NULL (out of memory) makes on_access drop
 * the connection.
 */
static void *on_uri(void *cls, const char *uri, struct MHD_Connection *c)
{
    (void)cls;
    (void)c;
    struct http_conn *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return NULL;
    hc->hc_uri = strdup(uri ? uri : "");
    if (!hc->hc_uri) {
        free(hc);
        return NULL;
    }
    return hc;
}

/* Frees a request's state once MHD is done with it, however it ended. */
static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)c;
    (void)toe;
    struct http_conn *hc = *con_cls;
    if (!hc)
        return;
    free(hc->hc_uri);
    free(hc->hc_path);
    free(hc->hc_body);
    free(hc);
    *con_cls = NULL;
}

/* Routes MHD's own error messages (bad requests, resource limits) to our log. */
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_warnx("http: %s", msg);
}

/*
 * Splits the raw target into the decoded path and the raw query. An
 * absolute-form target ("http://host/p") is reduced to its path. Returns 0,
 * or -1 if the path is unacceptable.
 */
static int conn_parse_target(struct http_conn *hc)
{
    char *t = hc->hc_uri;
    if (t[0] != '/') {
        char *scheme = strstr(t, "://");
        if (!scheme)
            return -1;
        t = strchr(scheme + 3, '/');
        if (!t)
            return -1;
    }
    char *q = strchr(t, '?');
    size_t plen = q ? (size_t)(q - t) : strlen(t);
    char *hash = memchr(t, '#', plen);
    if (hash)
        plen = (size_t)(hash - t);
    hc->hc_query = q ? q + 1 : (char *)"";
    /* A malformed query (a bad %-escape) is refused for every route. */
    if (*hc->hc_query && http_query_get(hc->hc_query, "\x01", NULL, 0, NULL) < 0)
        return -1;
    hc->hc_path = path_decode(t, plen);
    return hc->hc_path ? 0 : -1;
}

/* Appends a body chunk while it fits under max_body; else counts it as discarded. */
static int conn_append(struct http_conn *hc, size_t max_body, const char *data, size_t n)
{
    if (hc->hc_too_big || n > max_body - hc->hc_len) {
        hc->hc_too_big = 1;
        hc->hc_discarded += n;
        return hc->hc_discarded <= HTTP_DISCARD_MAX ? 0 : -1;
    }
    if (hc->hc_len + n + 1 > hc->hc_cap) {
        size_t ncap = hc->hc_cap ? hc->hc_cap : 1024;
        while (ncap < hc->hc_len + n + 1)
            ncap *= 2;
        if (ncap > max_body + 1)
            ncap = max_body + 1;
        char *nb = realloc(hc->hc_body, ncap);
        if (!nb)
            return -1;
        hc->hc_body = nb;
        hc->hc_cap = ncap;
    }
    memcpy(hc->hc_body + hc->hc_len, data, n);
    hc->hc_len += n;
    hc->hc_body[hc->hc_len] = '\0';
    return 0;
}

static enum MHD_Result send_too_big(struct MHD_Connection *c, size_t max_body)
{
    char reason[96];
    snprintf(reason, sizeof(reason), "request body larger than %zu bytes", max_body);
    return send_error(c, 413, reason, NULL);
}

/* Builds the request for the handler, runs it and sends what it filled in. */
static enum MHD_Result conn_dispatch(struct MHD_Connection *c, struct http_conn *hc,
                                     const char *method)
{
    char remote[INET6_ADDRSTRLEN + 1] = "";
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci)
        http_addr_text(ci->client_addr, remote, sizeof(remote));

    struct http_request req = {
        .method = method,
        .path = hc->hc_path,
        .query = hc->hc_query,
        .body = hc->hc_body ? hc->hc_body : "",
        .body_len = hc->hc_len,
        .authorization =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
        .remote = remote,
        .content_type =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
        .host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST),
    };
    struct http_response resp = {.status = 200};
    hc->hc_route->rt_fn(&req, &resp, hc->hc_route->rt_arg);
    return send_reply(c, &resp, NULL);
}

/*
 * MHD's access handler, called several times per request (see the top of the
 * file). Early replies (400, 404, 405, 413 by Content-Length) are queued on
 * the first call, which makes MHD skip the body and close the connection.
 */
static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    struct http_server *s = cls;
    struct http_conn *hc = *con_cls;
    (void)url;
    (void)version;

    if (!hc)
        return MHD_NO; /* out of memory in on_uri */
    if (!hc->hc_started) {
        char allow[HTTP_ALLOW_MAX];
        hc->hc_started = 1;
        if (conn_parse_target(hc) < 0)
            return send_error(c, 400, "bad request path", NULL);
        hc->hc_route = route_find(s, method, hc->hc_path, allow, sizeof(allow));
        if (!hc->hc_route && allow[0])
            return send_error(c, 405, "method not allowed", allow);
        if (!hc->hc_route)
            return send_error(c, 404, "not found", NULL);
        const char *cl =
            MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl) {
            errno = 0;
            unsigned long long n = strtoull(cl, NULL, 10);
            if (errno == ERANGE || n > s->hs_max_body)
                return send_too_big(c, s->hs_max_body);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        int rc = conn_append(hc, s->hs_max_body, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return rc == 0 ? MHD_YES : MHD_NO;
    }
    if (hc->hc_too_big)
        return send_too_big(c, s->hs_max_body);
    return conn_dispatch(c, hc, method);
}

/* ---------------------------------------------------------------------------
 * Server life cycle
 * ------------------------------------------------------------------------- */

struct http_server *http_new(const struct http_opts *o)
{
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->hs_listen = strdup(o && o->listen ? o->listen : "127.0.0.1:9643");
    if (!s->hs_listen) {
        free(s);
        return NULL;
    }
    long long maxc = o && o->max_connections > 0 ? o->max_connections : 1024;
    long long perip = o && o->per_ip_connections > 0 ? o->per_ip_connections : maxc;
    long long tmo = o && o->timeout_ms > 0 ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT;
    long long body = o && o->max_body > 0 ? o->max_body : HTTP_DEFAULT_BODY;
    s->hs_max_conn = (unsigned)(maxc > 65536 ? 65536 : maxc);
    s->hs_per_ip = (unsigned)(perip > 65536 ? 65536 : perip);
    if (tmo > 86400000)
        tmo = 86400000;
    s->hs_timeout_s = (unsigned)((tmo + 999) / 1000);
    s->hs_max_body = (size_t)(body > (1LL << 30) ? (1LL << 30) : body);
    return s;
}

void http_route(struct http_server *s, const char *method, const char *path, int prefix,
                http_handler fn, void *arg)
{
    if (!s || !method || !path || !fn)
        return;
    if (s->hs_daemon) {
        log_warnx("http: route %s %s added after start; ignored", method, path);
        return;
    }
    struct http_route *nr = realloc(s->hs_routes, (size_t)(s->hs_nroutes + 1) * sizeof(*nr));
    if (!nr)
        goto oom;
    s->hs_routes = nr;
    struct http_route *rt = &s->hs_routes[s->hs_nroutes];
    rt->rt_method = strdup(method);
    rt->rt_path = strdup(path);
    if (!rt->rt_method || !rt->rt_path) {
        free(rt->rt_method);
        free(rt->rt_path);
        goto oom;
    }
    rt->rt_pathlen = strlen(path);
    rt->rt_prefix = prefix != 0;
    rt->rt_fn = fn;
    rt->rt_arg = arg;
    s->hs_nroutes++;
    return;
oom:
    log_warnx("http: route %s %s: out of memory", method, path);
}

/*
 * Parses "host:port", "[v6]:port", ":port" or "*:port" (any address) into a
 * socket address. The host may be a name; the first address it resolves to
 * is used. Returns 0, or -1 with a reason in err.
 */
static int parse_listen(const char *addr, struct sockaddr_storage *ss, socklen_t *sslen, char *err,
                        size_t errlen)
{
    char host[256];
    const char *port;
    const char *colon = strrchr(addr, ':');

    if (addr[0] == '[') {
        const char *rb = strchr(addr, ']');
        if (!rb || rb[1] != ':' || (size_t)(rb - addr - 1) >= sizeof(host))
            goto bad;
        memcpy(host, addr + 1, (size_t)(rb - addr - 1));
        host[rb - addr - 1] = '\0';
        port = rb + 2;
    } else {
        if (!colon || (size_t)(colon - addr) >= sizeof(host) ||
            memchr(addr, ':', (size_t)(colon - addr)))
            goto bad; /* no port, or an IPv6 address without brackets */
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port = colon + 1;
    }
    if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5 ||
        atoi(port) > 65535)
        goto bad;

    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int rc = getaddrinfo(host[0] && strcmp(host, "*") ? host : NULL, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, gai_strerror(rc));
        if (res)
            freeaddrinfo(res);
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sslen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
bad:
    snprintf(err, errlen, "cannot listen on %s: expected host:port or [ipv6]:port", addr);
    return -1;
}

/* Creates, binds and listens on a non-blocking socket; -1 with a reason in err. */
static int open_listener(const char *addr, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (parse_listen(addr, &ss, &sslen, err, errlen) < 0)
        return -1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, SOMAXCONN) < 0) {
        snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* The port a bound socket listens on, or 0. */
static int socket_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return 0;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)(void *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)(void *)&ss)->sin6_port);
    return 0;
}

/*
 * Binds the listening socket and starts MHD's thread pool on it. MHD threads
 * block SIGPIPE themselves where the platform needs it; if this MHD cannot,
 * SIGPIPE is ignored process-wide (unless the program already handles it).
 */
int http_start(struct http_server *s, char *err, size_t errlen)
{
    if (s->hs_daemon) {
        snprintf(err, errlen, "http server already started");
        return -1;
    }
    if (MHD_is_feature_supported(MHD_FEATURE_AUTOSUPPRESS_SIGPIPE) != MHD_YES) {
        struct sigaction sa;
        if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
            signal(SIGPIPE, SIG_IGN);
    }
    int fd = open_listener(s->hs_listen, err, errlen);
    if (fd < 0)
        return -1;
    s->hs_port = socket_port(fd);

    unsigned pool = s->hs_max_conn < HTTP_POOL_THREADS ? s->hs_max_conn : HTTP_POOL_THREADS;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    s->hs_daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_access, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, (void *)s,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd, MHD_OPTION_THREAD_POOL_SIZE, pool,
        MHD_OPTION_CONNECTION_LIMIT, s->hs_max_conn, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        s->hs_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, s->hs_timeout_s, MHD_OPTION_URI_LOG_CALLBACK,
        on_uri, (void *)s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, (void *)s, MHD_OPTION_END);
    if (!s->hs_daemon) {
        snprintf(err, errlen, "cannot start the HTTP server on %s (see the log)", s->hs_listen);
        if (fcntl(fd, F_GETFD) != -1)
            close(fd);
        s->hs_port = 0;
        return -1;
    }
    log_info("http: listening on %s (port %d)", s->hs_listen, s->hs_port);
    return 0;
}

int http_port(const struct http_server *s)
{
    return s ? s->hs_port : 0;
}

void http_free(struct http_server *s)
{
    if (!s)
        return;
    if (s->hs_daemon)
        MHD_stop_daemon(s->hs_daemon); /* joins the threads, closes the socket */
    for (int i = 0; i < s->hs_nroutes; i++) {
        free(s->hs_routes[i].rt_method);
        free(s->hs_routes[i].rt_path);
    }
    free(s->hs_routes);
    free(s->hs_listen);
    free(s);
}

/* ---------------------------------------------------------------------------
 * Built-in routes
 * ------------------------------------------------------------------------- */

static void handle_metrics(const struct http_request *req, struct http_response *resp, void *arg)
{
    (void)req;
    (void)arg;
    size_t len = 0;
    char *text = metrics_render(&len);
    if (!text) {
        http_reply_json_error(resp, 500, "out of memory rendering metrics");
        return;
    }
    http_reply_owned(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

static void handle_healthz(const struct http_request *req, struct http_response *resp, void *arg)
{
    (void)req;
    (void)arg;
    http_reply_text(resp, 200, "text/plain; charset=utf-8", "ok\n");
}

void http_add_metrics_routes(struct http_server *s)
{
    http_route(s, "GET", "/metrics", 0, handle_metrics, NULL);
    http_route(s, "GET", "/healthz", 0, handle_healthz, NULL);
}
