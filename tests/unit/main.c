/*
 * The unit-test runner: no servers, pure functions only.
 */
#include "unit.h"

#include <stdlib.h>

#define MAX_TESTS 512

static struct {
    const char *name;
    unit_fn fn;
} tests[MAX_TESTS];
static int ntests;
int unit_failed_checks;

void unit_register(const char *name, unit_fn fn)
{
    if (ntests < MAX_TESTS) {
        tests[ntests].name = name;
        tests[ntests].fn = fn;
        ntests++;
    }
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;

    for (int i = 0; i < ntests; i++) {
        if (argc > 1 && !strstr(tests[i].name, argv[1]))
            continue;
        int before = unit_failed_checks;
        tests[i].fn();
        if (unit_failed_checks == before) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL %s\n", tests[i].name);
        }
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
