/*
 * http -- the HTTP server (libmicrohttpd) and its routing.
 *
 * Handlers run on the server's threads and must never block on Redis: they
 * read in-memory state or SQLite. A handler fills in a response; the server
 * frees resp->body (malloc'd) after sending. Requests with a body are read up
 * to max_body bytes (beyond it: 413 with a JSON reason, handler not called).
 * Unknown paths get 404, a known path with another method 405 (with Allow).
 *
 * Every response carries Content-Type (default application/json) and
 * Cache-Control: no-store. HEAD is answered by the GET route, without a body.
 * A path with a ".." segment, a malformed escape or an encoded NUL gets 400.
 *
 * SIGPIPE: MHD sends with MSG_NOSIGNAL and blocks SIGPIPE in its own threads,
 * so a client hanging up mid-response cannot kill the process; where that
 * libmicrohttpd build cannot (MHD_FEATURE_AUTOSUPPRESS_SIGPIPE), http_start()
 * sets SIGPIPE to SIG_IGN unless the program already installed a handler.
 */
#ifndef KD_HTTP_H
#define KD_HTTP_H

#include <stddef.h>

struct http_request {
    const char *method;
    const char *path;  /* decoded path, without the query */
    const char *query; /* raw query string after '?', or "" */
    const char *body;  /* NUL-terminated copy of the body, or "" */
    size_t body_len;
    const char *authorization; /* the Authorization header, or NULL */
    const char *remote;        /* the peer's numeric address, see http_addr_text() */
    const char *content_type;  /* the Content-Type header, or NULL */
    const char *host;          /* the Host header, or NULL */
};

struct http_response {
    int status;
    const char *content_type; /* default "application/json"; must outlive the handler call */
    char *body;               /* malloc'd; the server frees it */
    size_t body_len;
    const char *extra_header_name; /* optional one extra header */
    const char *extra_header_value;
};

typedef void (*http_handler)(const struct http_request *req, struct http_response *resp, void *arg);

struct http_opts {
    const char *listen; /* "host:port"; port 0 picks a free one */
    long long max_connections;
    long long per_ip_connections;
    long long timeout_ms;
    long long max_body;
};

struct http_server;

/* Creates a server; routes are added before http_start(). */
struct http_server *http_new(const struct http_opts *o);
/*
 * Adds a route; prefix != 0 matches any path that starts with path. An exact
 * route wins over prefix routes, a longer prefix over a shorter one. Routes
 * added after http_start() are ignored (with a warning).
 */
void http_route(struct http_server *s, const char *method, const char *path, int prefix,
                http_handler fn, void *arg);
/*
 * Starts listening on o->listen ("127.0.0.1:9643", "[::1]:9643", ":9643" for
 * any address) with a pool of 4 threads. Returns 0, or -1 with a reason in
 * err ("cannot listen on 127.0.0.1:9643: Address already in use").
 */
int http_start(struct http_server *s, char *err, size_t errlen);
/* The port it listens on (useful with port 0). */
int http_port(const struct http_server *s);
void http_free(struct http_server *s); /* stops it first if running */

/*
 * Response helpers: each sets status, content type and a malloc'd body,
 * freeing any body the response already had. When out of memory they leave
 * a 500 with no body.
 */
void http_reply_text(struct http_response *r, int status, const char *content_type,
                     const char *text);
void http_reply_json_error(struct http_response *r, int status, const char *reason);
/* Takes ownership of buf (malloc'd). */
void http_reply_owned(struct http_response *r, int status, const char *content_type, char *buf,
                      size_t len);

/*
 * Query-string parsing (pure; fuzzed): finds key in a raw query string
 * ("a=1&b=x%20y"), percent- and '+'-decodes its value into out (outsz bytes,
 * NUL-terminated, binary-safe length in *outlen when not NULL). Returns 1 if
 * found, 0 if absent, -1 if the query or the value is malformed or too long.
 * A bad escape in any pair makes the whole query malformed; the first pair
 * named key wins; a pair without '=' has the value "". Unless 1 is returned,
 * out is "" and *outlen 0. With out NULL and outsz 0 it only tests presence.
 */
int http_query_get(const char *query, const char *key, char *out, size_t outsz, size_t *outlen);

/*
 * Writes the numeric address of sa (no port) into out: "127.0.0.1", "::1";
 * an IPv4-mapped IPv6 address is written as IPv4. This is how
 * http_request.remote is filled in; out is "" for an unknown family.
 */
struct sockaddr;
void http_addr_text(const struct sockaddr *sa, char *out, size_t outsz);

/* Registers GET /metrics (text format 0.0.4) and GET /healthz on s. */
void http_add_metrics_routes(struct http_server *s);

#endif
