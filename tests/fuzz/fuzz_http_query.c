/*
 * libFuzzer harness for http_query_get(). The input is "key\0query": the key
 * is everything before the first NUL byte (or a fixed "k" when there is none),
 * the query everything after it. The first byte also picks the output size.
 *
 * Beyond memory safety it checks the documented contract: a found value is
 * NUL-terminated at *outlen and fits; a result with a small buffer agrees with
 * the result with a buffer large enough for any value.
 */
#include "http.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    buf[size + 1] = '\0';

    const char *key = "k", *query = buf;
    const char *nul = memchr(buf, '\0', size);
    if (nul && (size_t)(nul - buf) < size) {
        key = buf;
        query = nul + 1;
    }

    size_t small = size ? (size_t)(data[0] % 16) : 0;
    size_t bigsz = size + 1; /* a decoded value is never longer than the query */
    char *out = malloc(small ? small : 1);
    char *big = malloc(bigsz);
    size_t len = 0, biglen = 0;
    if (!out || !big)
        goto done;

    int rc_big = http_query_get(query, key, big, bigsz, &biglen);
    if (rc_big == 1 && (biglen >= bigsz || big[biglen] != '\0'))
        abort();
    if (rc_big != 1 && biglen != 0)
        abort();

    int rc = http_query_get(query, key, small ? out : NULL, small, &len);
    if (small == 0) {
        /* Presence check: no buffer to fill. */
        if (rc != rc_big)
            abort();
    } else if (rc_big == 1 && biglen < small) {
        if (rc != 1 || len != biglen || memcmp(out, big, biglen + 1) != 0)
            abort();
    } else if (rc_big == 1) {
        if (rc != -1) /* too long for the small buffer */
            abort();
    } else if (rc != rc_big) {
        abort();
    }
done:
    free(out);
    free(big);
    free(buf);
    return 0;
}
