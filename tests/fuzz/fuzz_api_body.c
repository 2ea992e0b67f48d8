/*
 * libFuzzer harness for the API's request parsers: the input is both a
 * POST /api/v1/repair body (api_parse_repair_body) and, NUL-terminated, a
 * GET /api/v1/divergences query string (api_parse_divergence_query).
 *
 * Beyond memory safety it checks the documented contract: a parsed body has
 * 1..API_MAX_KEYS keys or is all_open, each key NUL-terminated at its
 * length; a failure leaves the request empty and gives a reason.
 */
#include "api.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct api_repair_req r;
    struct api_div_query q;
    char err[256];

    err[0] = '\0';
    if (api_parse_repair_body((const char *)data, size, &r, err, sizeof(err)) == 0) {
        if (r.all_open ? r.nkeys != 0 : (r.nkeys < 1 || r.nkeys > API_MAX_KEYS))
            abort();
        for (int i = 0; i < r.nkeys; i++)
            if (r.keys[i][r.lens[i]] != '\0')
                abort();
        api_repair_req_free(&r);
    } else if (r.nkeys != 0 || r.keys != NULL || !err[0]) {
        abort();
    }

    char *query = malloc(size + 1);
    if (!query)
        return 0;
    memcpy(query, data, size);
    query[size] = '\0';
    err[0] = '\0';
    if (api_parse_divergence_query(query, 1700000000000LL, &q, err, sizeof(err)) == 0) {
        if (q.keylen > sizeof(q.key) || (q.limit && (q.limit < 1 || q.limit > 10000)))
            abort();
    } else if (!err[0]) {
        abort();
    }
    free(query);
    return 0;
}
