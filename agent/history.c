#include "cmds.h"
#include <stdio.h>
int cmd_history(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "keydrift: not available in this build\n");
    return 2;
}
