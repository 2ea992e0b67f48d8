/*
 * Config parser: the lexer, every option's round trip, and each kind of error.
 */
#include "config.h"
#include "unit.h"

#include <stdlib.h>

static int split(const char *line, char **argv, char *buf, size_t bufsz, const char **why)
{
    return cfg_split(line, strlen(line), argv, NULL, 16, buf, bufsz, why);
}

TEST(config_split_quotes_and_escapes)
{
    char *argv[16];
    char buf[256];
    const char *why;

    CHECK(split("  primary  127.0.0.1:6379  # comment", argv, buf, sizeof(buf), &why) == 2);
    CHECK_STR(argv[0], "primary");
    CHECK_STR(argv[1], "127.0.0.1:6379");
    CHECK(split("channel \"a b\\n\\x41\"", argv, buf, sizeof(buf), &why) == 2);
    CHECK_STR(argv[1], "a b\nA");
    CHECK(split("channel 'it\\'s'", argv, buf, sizeof(buf), &why) == 2);
    CHECK_STR(argv[1], "it's");
    CHECK(split("# only a comment", argv, buf, sizeof(buf), &why) == 0);
    CHECK(split("", argv, buf, sizeof(buf), &why) == 0);
    CHECK(split("channel \"open", argv, buf, sizeof(buf), &why) == -1);
    CHECK_STR(why, "unbalanced quotes");
    CHECK(split("channel \"a\"b", argv, buf, sizeof(buf), &why) == -1);
    CHECK(split("channel \"\\xZZ\"", argv, buf, sizeof(buf), &why) == -1);
}

TEST(config_defaults)
{
    struct config c;
    cfg_init(&c);
    CHECK_STR(c.primary.host, "127.0.0.1");
    CHECK(c.primary.port == 6379);
    CHECK_STR(c.channel, "cache_update");
    CHECK(c.message_format == FMT_KEY);
    CHECK(c.heartbeat_interval == 20);
    CHECK(c.retention == 30LL * 86400 * 1000);
    CHECK(c.max_value_bytes == 1024 * 1024);
    CHECK(c.repair_max_share > 0.0499 && c.repair_max_share < 0.0501);
    CHECK(c.nreplicas == 0);
    CHECK(c.ndbs == 1 && c.dbs[0] == 0);
    CHECK(c.modes == (MODE_SCAN | MODE_REPLICA_SCAN | MODE_RANDOM | MODE_WATCH));
    cfg_free(&c);
}

/* Every option: the rendered default parses back to the same rendering. */
TEST(config_every_option_round_trips)
{
    for (int i = 0; i < cfg_option_count(); i++) {
        struct config a, b;
        char va[1024], vb[1024], line[1200], err[512];

        cfg_init(&a);
        cfg_init(&b);
        cfg_option_render(&a, i, va, sizeof(va));
        if (!strcmp(cfg_option_name(i), "replica")) /* a list; test below */
            snprintf(va, sizeof(va), "r1 127.0.0.1:7001 pubsub missing-is-divergence no");
        snprintf(line, sizeof(line), "%s %s\n", cfg_option_name(i), va);
        int rc = cfg_parse_text(&b, "t.conf", line, strlen(line), err, sizeof(err));
        if (rc != 0)
            fprintf(stderr, "  option %s: %s\n", cfg_option_name(i), err);
        CHECK(rc == 0);
        cfg_option_render(&b, i, vb, sizeof(vb));
        if (strcmp(va, vb) != 0)
            fprintf(stderr, "  option %s: '%s' != '%s'\n", cfg_option_name(i), va, vb);
        CHECK(strcmp(va, vb) == 0);
        cfg_free(&a);
        cfg_free(&b);
    }
}

TEST(config_full_file)
{
    const char *text = "primary 10.0.0.1:6379\n"
                       "replica cache-a 127.0.0.1:6380 pubsub\n"
                       "replica replica-1 127.0.0.1:6381 native\n"
                       "replica cache-b 127.0.0.1:6382 pubsub missing-is-divergence no\n"
                       "channel cache_update\r\n"
                       "message-format json\n"
                       "heartbeat-interval 250ms\n"
                       "lag-warn 2s\n"
                       "max-value-bytes 64mb\n"
                       "repair-max-share 0.1\n"
                       "sample-modes scan watch\n"
                       "db 0 3\n"
                       "discovery sentinel mymaster 127.0.0.1:26379 127.0.0.1:26380\n"
                       "address-map 10.0.0.5:6380 127.0.0.1:16380\n"
                       "address-map 10.0.0.6:6380 127.0.0.1:16381\n";
    struct config c;
    char err[512];

    cfg_init(&c);
    CHECK(cfg_parse_text(&c, "k.conf", text, strlen(text), err, sizeof(err)) == 0);
    CHECK(c.nreplicas == 3);
    CHECK_STR(c.replicas[0].name, "cache-a");
    CHECK(c.replicas[0].kind == REPLICA_PUBSUB);
    CHECK(c.replicas[1].kind == REPLICA_NATIVE);
    CHECK(c.replicas[2].missing_is_divergence == 0);
    CHECK(c.replicas[0].missing_is_divergence == 1);
    CHECK(c.message_format == FMT_JSON);
    CHECK(c.heartbeat_interval == 250);
    CHECK(c.lag_warn == 2000);
    CHECK(c.max_value_bytes == 64LL << 20);
    CHECK(c.modes == (MODE_SCAN | MODE_WATCH));
    CHECK(c.ndbs == 2 && c.dbs[1] == 3);
    CHECK(c.discovery == DISCOVERY_SENTINEL && c.ndiscovery_addrs == 2);
    CHECK_STR(c.discovery_master, "mymaster");
    CHECK(c.naddr_map == 2 && c.addr_map[1].from.port == 6380 && c.addr_map[1].to.port == 16381);
    CHECK_STR(c.addr_map[1].from.host, "10.0.0.6");
    CHECK(cfg_find_replica(&c, "replica-1") == &c.replicas[1]);
    CHECK(cfg_find_replica(&c, "nope") == NULL);
    cfg_free(&c);
}

static void expect_error(const char *text, const char *want)
{
    struct config c;
    char err[512];

    cfg_init(&c);
    int rc = cfg_parse_text(&c, "bad.conf", text, strlen(text), err, sizeof(err));
    CHECK(rc == -1);
    if (rc == -1 && !strstr(err, want)) {
        fprintf(stderr, "  error '%s' lacks '%s'\n", err, want);
        unit_failed_checks++;
    }
    cfg_free(&c);
}

TEST(config_errors_name_file_line_option)
{
    expect_error("primary 127.0.0.1:6379\nbogus-option 1\n",
                 "bad.conf:2: unknown option 'bogus-option'");
    expect_error("\n\nheartbeat-interval 5x\n",
                 "bad.conf:3: option 'heartbeat-interval': '5x' is not a duration");
    expect_error("heartbeat-interval 1ms\n", "from 10ms to 60000ms");
    expect_error("primary nohost\n", "bad.conf:1: option 'primary': 'nohost' is not HOST:PORT");
    expect_error("primary 127.0.0.1:70000\n", "is not HOST:PORT");
    expect_error("message-format xml\n", "'xml' is not one of key|json");
    expect_error("repair-dry-run maybe\n", "'maybe' is not yes|no");
    expect_error("scan-count 0\n", "is not a whole number from 1 to 100000");
    expect_error("scan-count 12abc\n", "is not a whole number");
    expect_error("max-value-bytes 12zb\n", "is not a size");
    expect_error("repair-max-share 150%\n", "is not a share");
    expect_error("replica a 127.0.0.1:1 weird\n", "kind 'weird' is not one of native|pubsub");
    expect_error("replica a 127.0.0.1:1\n", "wants NAME HOST:PORT");
    expect_error("replica a 127.0.0.1:1 native\nreplica a 127.0.0.1:2 native\n",
                 "bad.conf:2: option 'replica': replica name 'a' is used twice");
    expect_error("replica bad/name 127.0.0.1:1 native\n", "is not a valid name");
    expect_error("channel\n", "option 'channel': must not be empty");
    expect_error("channel \"unterminated\n", "bad.conf:1: unbalanced quotes");
    expect_error("lag-warn 1s 2s\n", "wants exactly one value, got 2");
    expect_error("sample-modes scan nope\n", "'nope' is not one of scan");
    expect_error("shard-index 3/2\n", "wants I/N");
    expect_error("db 0 0\n", "database 0 is listed twice");
    expect_error("log-level loud\n", "wants one of debug|info");
    expect_error("discovery sentinel\n", "sentinel wants MASTER-NAME");
    expect_error("address-map 10.0.0.5:6380\n", "option 'address-map': wants DISCOVERED-HOST:PORT");
    expect_error("address-map 10.0.0.5:6380 local\n", "'local' is not HOST:PORT");
    expect_error("address-map a:1 b:2\naddress-map a:1 c:3\n",
                 "bad.conf:2: option 'address-map': 'a:1' is mapped twice");
}

TEST(config_command_line_overrides)
{
    struct config c;
    char err[512];
    char *argv[] = {"--primary", "127.0.0.1:7000",       "--replica", "c1", "127.0.0.1:7001",
                    "pubsub",    "--heartbeat-interval", "50ms"};

    CHECK(cfg_load(&c, NULL, 8, argv, err, sizeof(err)) == 0);
    CHECK(c.primary.port == 7000);
    CHECK(c.nreplicas == 1 && c.replicas[0].addr.port == 7001);
    CHECK(c.heartbeat_interval == 50);
    CHECK(c.agent_id && *c.agent_id);
    cfg_free(&c);

    char *bad[] = {"--heartbeat-interval", "fast"};
    CHECK(cfg_load(&c, NULL, 2, bad, err, sizeof(err)) == -1);
    CHECK(strstr(err, "command line argument 1: option 'heartbeat-interval'") != NULL);
    cfg_free(&c);

    char *stray[] = {"oops"};
    CHECK(cfg_load(&c, NULL, 1, stray, err, sizeof(err)) == -1);
    CHECK(strstr(err, "expected --option") != NULL);
    cfg_free(&c);
}

TEST(config_missing_file)
{
    struct config c;
    char err[512];
    CHECK(cfg_load(&c, "/nonexistent/keydrift.conf", 0, NULL, err, sizeof(err)) == -1);
    CHECK(strstr(err, "/nonexistent/keydrift.conf: cannot open") != NULL);
    cfg_free(&c);
}

TEST(config_durations)
{
    long long v;
    CHECK(cfg_parse_duration_ms("100ms", &v) == 0 && v == 100);
    CHECK(cfg_parse_duration_ms("2s", &v) == 0 && v == 2000);
    CHECK(cfg_parse_duration_ms("1.5s", &v) == 0 && v == 1500);
    CHECK(cfg_parse_duration_ms("5m", &v) == 0 && v == 300000);
    CHECK(cfg_parse_duration_ms("1h", &v) == 0 && v == 3600000);
    CHECK(cfg_parse_duration_ms("30d", &v) == 0 && v == 30LL * 86400000);
    CHECK(cfg_parse_duration_ms("250", &v) == 0 && v == 250);
    CHECK(cfg_parse_duration_ms("-1s", &v) == -1);
    CHECK(cfg_parse_duration_ms("", &v) == -1);
    CHECK(cfg_parse_duration_ms("s", &v) == -1);
    CHECK(cfg_parse_duration_ms("nan", &v) == -1);
    CHECK(cfg_parse_duration_ms("1e300s", &v) == -1);
}

/* docs/config.md has a section for every option in the table, and no other. */
TEST(config_every_option_is_documented)
{
    FILE *f = fopen("docs/config.md", "r");
    char line[512];
    int documented = 0;

    CHECK(f != NULL);
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        char name[128];
        if (sscanf(line, "### `%127[^`]`", name) != 1)
            continue;
        int found = 0;
        for (int i = 0; i < cfg_option_count(); i++)
            found |= !strcmp(cfg_option_name(i), name);
        if (!found)
            fprintf(stderr, "  docs/config.md documents unknown option '%s'\n", name);
        CHECK(found);
        documented++;
    }
    fclose(f);
    for (int i = 0; i < cfg_option_count(); i++) {
        char want[160];
        int found = 0;
        f = fopen("docs/config.md", "r");
        snprintf(want, sizeof(want), "### `%s`\n", cfg_option_name(i));
        while (f && fgets(line, sizeof(line), f))
            found |= !strcmp(line, want);
        if (f)
            fclose(f);
        if (!found)
            fprintf(stderr, "  option '%s' is not in docs/config.md\n", cfg_option_name(i));
        CHECK(found);
    }
    CHECK(documented == cfg_option_count());
}
