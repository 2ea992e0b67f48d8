/*
 * libFuzzer harness for the INFO parser: info_parse and info_field over
 * arbitrary bytes. libFuzzer hands over an exact-size buffer, so
 * AddressSanitizer flags any read past len; the checks below flag results that
 * break the documented contract.
 */
#include "info.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Aborts unless s is NUL-terminated within its n-byte array. */
static void check_str(const char *s, size_t n)
{
    if (!memchr(s, '\0', n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const fields[] = {"role", "master_repl_offset", "slave0", "db0", ""};
    const char *text = (const char *)data;
    struct info_repl r;
    char out[16];

    int rc = info_parse(text, size, &r);
    if (rc != 0 && rc != -1)
        abort();
    if (r.nslaves < 0 || r.nslaves > INFO_MAX_SLAVES)
        abort();
    check_str(r.role, sizeof(r.role));
    check_str(r.run_id, sizeof(r.run_id));
    check_str(r.master_replid, sizeof(r.master_replid));
    check_str(r.master_host, sizeof(r.master_host));
    for (int i = 0; i < r.nslaves; i++) {
        check_str(r.slaves[i].ip, sizeof(r.slaves[i].ip));
        check_str(r.slaves[i].state, sizeof(r.slaves[i].state));
    }
    if (rc == -1 && (r.role[0] || r.master_repl_offset != -1 || r.nslaves || r.db0_keys != -1))
        abort();

    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        int f = info_field(text, size, fields[i], out, sizeof(out));
        if (f != 0 && f != 1)
            abort();
        if (f)
            check_str(out, sizeof(out));
    }
    /* The first line's key, as a field name taken from the input itself. */
    const char *colon = memchr(text, ':', size < 64 ? size : 64);
    if (colon) {
        char key[65];
        size_t kl = (size_t)(colon - text);
        memcpy(key, text, kl);
        key[kl] = '\0';
        if (!memchr(key, '\n', kl) && !memchr(key, '\0', kl) && (kl == 0 || key[0] != '#') &&
            !info_field(text, size, key, out, 1))
            abort();
    }
    return 0;
}
