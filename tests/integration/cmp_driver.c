/*
 * cmp-driver -- runs the comparison module on real servers for the tests.
 *
 *   cmp-driver [-l LAG_MS] [-m] PRIMARY REPLICA MAX_VALUE_BYTES TTL_TOLERANCE_MS HEXKEY...
 *
 * PRIMARY and REPLICA are HOST:PORT; keys are hex-encoded so any bytes pass
 * ("-" is the empty key). -l sets the replica lag allowed on TTLs, -m makes a
 * missing key no divergence (missing-is-divergence no). For each key it runs
 * cmp_fetch on both nodes, cmp_judge, and cmp_deep (then the TTL rule) when the
 * payloads differ, and prints "HEXKEY KIND PDIGEST RDIGEST" (digests in hex);
 * the reason of a skipped or failed comparison goes to stderr. Exit status 0,
 * or 2 on a usage error.
 */
#include "compare.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    fprintf(stderr, "usage: cmp-driver [-l LAG_MS] [-m] PRIMARY REPLICA MAX_VALUE_BYTES "
                    "TTL_TOLERANCE_MS HEXKEY...\n");
    exit(2);
}

/* HOST:PORT (the last colon splits) into a, or exits. */
static void parse_addr(const char *s, struct cfg_addr *a)
{
    const char *colon = strrchr(s, ':');
    char *end;
    long port;

    if (!colon || (size_t)(colon - s) >= sizeof(a->host))
        usage();
    port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        usage();
    memcpy(a->host, s, (size_t)(colon - s));
    a->host[colon - s] = '\0';
    a->port = (int)port;
}

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

/* Decodes a hex key into a malloc'd buffer; exits on bad input. */
static char *unhex(const char *s, size_t *len)
{
    size_t n = strcmp(s, "-") == 0 ? 0 : strlen(s);
    char *out;

    if (n % 2)
        usage();
    out = malloc(n / 2 + 1);
    if (!out)
        exit(2);
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hexval((unsigned char)s[2 * i]), lo = hexval((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            usage();
        out[i] = (char)(hi << 4 | lo);
    }
    *len = n / 2;
    return out;
}

static long long number(const char *s)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end)
        usage();
    return v;
}

int main(int argc, char **argv)
{
    struct cmp_opts o = {.missing_is_divergence = 1};
    struct rconn_opts ro = {.connect_timeout_ms = 2000, .command_timeout_ms = 30000};
    struct cfg_addr pa, ra;
    int opt;

    while ((opt = getopt(argc, argv, "l:m")) != -1) {
        if (opt == 'l')
            o.lag_ms = number(optarg);
        else if (opt == 'm')
            o.missing_is_divergence = 0;
        else
            usage();
    }
    argc -= optind;
    argv += optind;
    if (argc < 5)
        usage();
    parse_addr(argv[0], &pa);
    parse_addr(argv[1], &ra);
    long long max_value_bytes = number(argv[2]);
    o.ttl_tolerance_ms = number(argv[3]);

    size_t n = (size_t)argc - 4;
    char **keys = calloc(n, sizeof(*keys));
    size_t *lens = calloc(n, sizeof(*lens));
    struct cmp_side *ps = calloc(n, sizeof(*ps)), *rs = calloc(n, sizeof(*rs));
    struct rconn *p = rconn_new(&pa, &ro, NULL), *r = rconn_new(&ra, &ro, NULL);
    if (!keys || !lens || !ps || !rs || !p || !r)
        return 2;
    for (size_t i = 0; i < n; i++)
        keys[i] = unhex(argv[4 + i], &lens[i]);

    if (cmp_fetch(p, (const char *const *)keys, lens, n, max_value_bytes, ps) < 0)
        fprintf(stderr, "primary: %s\n", rconn_errstr(p));
    if (cmp_fetch(r, (const char *const *)keys, lens, n, max_value_bytes, rs) < 0)
        fprintf(stderr, "replica: %s\n", rconn_errstr(r));

    for (size_t i = 0; i < n; i++) {
        int deep = 0;
        uint64_t pd = ps[i].digest, rd = rs[i].digest;
        const char *why = NULL;
        enum cmp_kind k = cmp_judge(&ps[i], &rs[i], &o, &deep);

        if (deep) {
            k = cmp_deep(p, r, keys[i], lens[i], &ps[i], &rs[i], max_value_bytes, &pd, &rd, &why);
            if (k == CMP_EQUAL)
                k = cmp_judge_ttl(&ps[i], &rs[i], &o);
        }
        printf("%s %s %016llx %016llx\n", argv[4 + i], cmp_kind_name(k), (unsigned long long)pd,
               (unsigned long long)rd);
        if (why)
            fprintf(stderr, "%s: %s\n", argv[4 + i], why);
        cmp_side_clear(&ps[i]);
        cmp_side_clear(&rs[i]);
        free(keys[i]);
    }
    rconn_free(p);
    rconn_free(r);
    free(keys);
    free(lens);
    free(ps);
    free(rs);
    return 0;
}
