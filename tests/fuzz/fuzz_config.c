/*
 * libFuzzer harness for the config parser: cfg_init, cfg_parse_text over
 * arbitrary bytes, then cfg_free. LeakSanitizer (on by default under
 * libFuzzer) reports anything an error path forgets to free. cfg_finish and
 * cfg_load are left out: they read files and the environment.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char err[CFG_ERR_MAX];
    char val[2048];

    cfg_init(&c);
    err[0] = '\0';
    int rc = cfg_parse_text(&c, "fuzz.conf", (const char *)data, size, err, sizeof(err));
    if (rc != 0 && rc != -1)
        abort();
    if (rc == -1 && (!memchr(err, '\0', sizeof(err)) || !err[0]))
        abort(); /* every error says what is wrong */
    if (c.nreplicas < 0 || c.nreplicas > CFG_MAX_REPLICAS || c.ndbs < 1 || c.ndbs > CFG_MAX_DBS ||
        c.ndiscovery_addrs < 0 || c.ndiscovery_addrs > CFG_MAX_SENTINEL)
        abort();
    /* Whatever was accepted can be rendered. */
    for (int i = 0; i < cfg_option_count(); i++)
        cfg_option_render(&c, i, val, sizeof(val));
    cfg_free(&c);
    return 0;
}
