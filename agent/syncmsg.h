/*
 * syncmsg -- the messages of the sync channel: a pure parser and encoder.
 *
 * Two formats (design §4):
 *
 *   key   the payload is the key name, binary-safe. The receiver reads the
 *         key's current state from the primary; the message is a REFRESH.
 *   json  {"op":"set","key":"k","value":"v","ttl_ms":N} or
 *         {"op":"del","key":"k"}. Keys and values that are not valid UTF-8
 *         (or hold NUL bytes) travel base64-encoded as "key_b64"/"value_b64".
 *
 * Nothing here does I/O; everything works on (buf, len).
 */
#ifndef KD_SYNCMSG_H
#define KD_SYNCMSG_H

#include <stddef.h>

#include "config.h"

/* Return codes of syncmsg_parse. */
#define SYNCMSG_OK        0
#define SYNCMSG_MALFORMED -1 /* the reason is in why */
#define SYNCMSG_NOMEM     -2

/* Longest key name accepted, in bytes (both formats). */
#define SYNCMSG_KEY_MAX (1024 * 1024)
/* Largest ttl_ms accepted: 2^53-1, the largest integer every JSON reader keeps exact. */
#define SYNCMSG_TTL_MAX 9007199254740991LL
/* Room for a reason, NUL included. */
#define SYNCMSG_WHY_MAX 96

enum syncmsg_op {
    SYNCMSG_REFRESH, /* key format: copy the key's current state from the primary */
    SYNCMSG_SET,     /* json: SET key value [PX ttl_ms] */
    SYNCMSG_DEL,     /* json: DEL key */
};

struct syncmsg {
    enum syncmsg_op sm_op;
    const char *sm_key; /* never empty; not NUL-terminated */
    size_t sm_keylen;
    const char *sm_value; /* SET only (may be empty), else NULL */
    size_t sm_valuelen;
    long long sm_ttl_ms; /* SET: expiry in ms, 0 for none */
    char *sm_mem;        /* owned storage behind sm_key/sm_value (json), or NULL */
};

/*
 * Parses one message payload buf[0..len) in format fmt into *m. For the key
 * format, m->sm_key points into buf (which must outlive m) and nothing is
 * allocated; for json the strings are decoded into m->sm_mem. Returns
 * SYNCMSG_OK, SYNCMSG_MALFORMED with a short reason in why (whylen bytes,
 * SYNCMSG_WHY_MAX is enough), or SYNCMSG_NOMEM. On any return, m may be
 * passed to syncmsg_free().
 */
int syncmsg_parse(enum msg_format fmt, const void *buf, size_t len, struct syncmsg *m, char *why,
                  size_t whylen);

/* Frees what m owns (m->sm_mem) and clears it; m itself is the caller's. */
void syncmsg_free(struct syncmsg *m);

/*
 * Encodes m (SET or DEL) as a compact json message. A key or value that is
 * not valid UTF-8 or holds a NUL byte is written as key_b64/value_b64.
 * Returns a malloc'd NUL-terminated string (*outlen its length, may be NULL)
 * the caller frees with free(), or NULL when m is not a valid SET/DEL or
 * memory ran out. What it returns syncmsg_parse() reads back as m.
 */
char *syncmsg_encode_json(const struct syncmsg *m, size_t *outlen);

/*
 * Builds the message that tells subscribers a key changed, in format fmt.
 * For the key format it is the raw key (only m->sm_key is used, any op); for
 * json, m must be a SET or DEL (see syncmsg_encode_json), since json has no
 * "re-read this key" op. Returns a malloc'd buffer (NUL-terminated, *outlen
 * its length without the NUL) the caller frees with free(), or NULL (empty
 * or too long key, wrong op, no memory).
 */
char *syncmsg_encode(enum msg_format fmt, const struct syncmsg *m, size_t *outlen);

/* Base64 (RFC 4648, standard alphabet). Exposed for the tests and the agent. */
/* Bytes needed to hold the encoding of len bytes, NUL included. */
size_t syncmsg_b64_encoded_size(size_t len);
/* Encodes src into out (syncmsg_b64_encoded_size(len) bytes); returns the length. */
size_t syncmsg_b64_encode(char *out, const void *src, size_t len);
/*
 * Decodes src[0..len) (padding optional, no whitespace) into out, which holds
 * at least len*3/4+3 bytes. Returns the decoded length, or -1 when src is not
 * base64.
 */
long syncmsg_b64_decode(void *out, const char *src, size_t len);

#endif
