#include "cmds.h"
#include <stdio.h>
int cmd_repair(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "keydrift: not available in this build\n");
    return 2;
}
int cmd_status(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fprintf(stderr, "keydrift: not available in this build\n");
    return 2;
}
