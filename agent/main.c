/*
 * keydrift -- replication-lag monitoring and repair for Redis.
 *
 * One binary, subcommands like git's. Each subcommand lives in its own module
 * and takes (argc, argv) with argv[0] the subcommand name.
 */
#include "cmds.h"
#include "log.h"

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <microhttpd.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

static int cmd_version(int argc, char **argv);
static int cmd_help(int argc, char **argv);

struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    {"run", cmd_run, "run the agent daemon (keydrift run [CONFIG] [--option value...])"},
    {"check", cmd_check, "one full pass over the keyspace, then exit 0/1/2"},
    {"sync", cmd_sync, "the subscriber that applies cache_update messages to one cache"},
    {"repair", cmd_repair, "ask a running agent to repair keys"},
    {"status", cmd_status, "show a running agent's state"},
    {"history", cmd_history, "query the divergence history (SQLite)"},
    {"demo", cmd_demo, "start a throwaway local topology and the agent"},
    {"version", cmd_version, "print the version and library versions"},
    {"help", cmd_help, "this list"},
};

#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static int cmd_help(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("usage: keydrift COMMAND [ARGS]\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        printf("  %-8s %s\n", commands[i].name, commands[i].summary);
    printf("\n'keydrift COMMAND --help' tells more. Docs: README.md, docs/.\n");
    return 0;
}

static int cmd_version(int argc, char **argv)
{
    const curl_version_info_data *cv = curl_version_info(CURLVERSION_NOW);
    unsigned xv = XXH_versionNumber();

    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: keydrift version\n");
        return 0;
    }
    printf("keydrift %s\n", KEYDRIFT_VERSION);
    printf("hiredis %d.%d.%d\n", HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH);
    printf("sqlite %s\n", sqlite3_libversion());
    printf("libcurl %s\n", cv->version);
    printf("libmicrohttpd %s\n", MHD_get_version());
    printf("jansson %s\n", jansson_version_str());
    printf("xxhash %u.%u.%u\n", xv / 10000, (xv / 100) % 100, xv % 100);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    log_init("keydrift", 0);
    if (argc < 2) {
        cmd_help(0, NULL);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
        return cmd_help(0, NULL);
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-v"))
        return cmd_version(1, argv + 1);
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "keydrift: unknown command '%s' (see 'keydrift help')\n", argv[1]);
    return 2;
}
