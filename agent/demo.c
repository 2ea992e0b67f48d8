/*
 * demo -- `keydrift demo`: a throwaway local topology and the agent.
 *
 * Starts, in a temporary directory, a primary, two native replicas and two
 * pubsub caches (redis-server on free loopback ports), a `keydrift sync` for
 * each cache, a writer that updates keys and publishes each update but drops
 * a share of the publishes (the lost updates keydrift exists to catch), and
 * `keydrift run` watching it all. Prints the URLs, a status line every few
 * seconds, and removes everything on Ctrl-C (or after --duration).
 */
#include "clock.h"
#include "cmds.h"
#include "config.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEMO_MAX_PROCS 16

struct demo {
    char dir[64];
    pid_t pids[DEMO_MAX_PROCS];
    int npids;
    int port_primary, port_r1, port_r2, port_ca, port_cb, port_http;
    double drop_share;
    int writes_per_sec;
    volatile int stop;
    unsigned long long writes, dropped;
};

static volatile sig_atomic_t demo_signalled;

static void on_signal(int sig)
{
    (void)sig;
    demo_signalled = 1;
}

/*
 * Picks n distinct free loopback ports: all sockets stay bound until every
 * port is chosen, so the kernel cannot hand out the same port twice.
 */
static int free_ports(int *ports, int n)
{
    int fds[8];
    int rc = 0;

    for (int i = 0; i < n && i < 8; i++) {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(sa);
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            getsockname(fds[i], (struct sockaddr *)&sa, &len) < 0) {
            rc = -1;
            ports[i] = -1;
        } else {
            ports[i] = ntohs(sa.sin_port);
        }
    }
    for (int i = 0; i < n && i < 8; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc;
}

static int port_is_free(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)port)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1, ok;

    if (fd < 0)
        return 0;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    close(fd);
    return ok;
}

/* Forks and execs argv with output to logpath; the child dies with us. */
static pid_t spawn(struct demo *d, char *const argv[], const char *logpath)
{
    pid_t pid = fork();

    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
        signal(SIGINT, SIG_IGN); /* Ctrl-C is the demo's to handle */
        execvp(argv[0], argv);
        fprintf(stderr, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    if (d->npids < DEMO_MAX_PROCS)
        d->pids[d->npids++] = pid;
    return pid;
}

static int wait_ping(int port, int timeout_ms)
{
    uint64_t until = clock_mono_us() + (uint64_t)timeout_ms * 1000u;
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};

    while (clock_mono_us() < until) {
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err) {
            redisReply *r = redisCommand(c, "PING");
            int ok = r && r->type == REDIS_REPLY_STATUS;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (ok)
                return 0;
        } else if (c) {
            redisFree(c);
        }
        usleep(50000);
    }
    return -1;
}

static int start_redis(struct demo *d, const char *name, int port, int replicaof)
{
    char dir[128], log[160], ports[16], mport[16];

    snprintf(dir, sizeof(dir), "%s/%s", d->dir, name);
    snprintf(log, sizeof(log), "%s/redis.log", dir);
    snprintf(ports, sizeof(ports), "%d", port);
    snprintf(mport, sizeof(mport), "%d", replicaof);
    if (mkdir(dir, 0700) < 0)
        return -1;
    char *argv[] = {"redis-server", "--port",      ports,    "--bind",    "127.0.0.1",
                    "--dir",        dir,           "--save", "",          "--appendonly",
                    "no",           "--daemonize", "no",     "--logfile", log,
                    "--replicaof",  "127.0.0.1",   mport,    NULL};
    if (!replicaof)
        argv[15] = NULL;
    if (spawn(d, argv, log) < 0 || wait_ping(port, 10000) < 0) {
        fprintf(stderr, "keydrift demo: redis-server %s on port %d did not start (see %s)\n", name,
                port, log);
        return -1;
    }
    return 0;
}

static int start_sync(struct demo *d, const char *self, const char *name, int cache_port)
{
    char primary[32], cache[32], log[160];

    snprintf(primary, sizeof(primary), "127.0.0.1:%d", d->port_primary);
    snprintf(cache, sizeof(cache), "127.0.0.1:%d", cache_port);
    snprintf(log, sizeof(log), "%s/sync-%s.log", d->dir, name);
    char *argv[] = {(char *)self, "sync", "--primary", primary, "--cache", cache, NULL};
    return spawn(d, argv, log) < 0 ? -1 : 0;
}

static int write_config(struct demo *d, char *path, size_t pathsz)
{
    FILE *f;

    snprintf(path, pathsz, "%s/keydrift.conf", d->dir);
    f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "# keydrift demo topology\n"
            "primary 127.0.0.1:%d\n"
            "replica replica-1 127.0.0.1:%d native\n"
            "replica replica-2 127.0.0.1:%d native\n"
            "replica cache-a 127.0.0.1:%d pubsub\n"
            "replica cache-b 127.0.0.1:%d pubsub\n"
            "channel cache_update\n"
            "message-format key\n"
            "http-listen 127.0.0.1:%d\n"
            "history-db %s/keydrift.db\n"
            "agent-id demo\n"
            "repair auto\n"
            "# the writer loses publishes on purpose, and each lost one diverges on\n"
            "# both caches: too many at start-up for the production guard\n"
            "repair-max-share 50%%\n",
            d->port_primary, d->port_r1, d->port_r2, d->port_ca, d->port_cb, d->port_http, d->dir);
    return fclose(f);
}

/*
 * The writer: updates demo keys on the primary and publishes each update on
 * cache_update, but "loses" drop_share of the publishes, as a flaky pub/sub
 * link would.
 */
static void *writer_main(void *arg)
{
    struct demo *d = arg;
    struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
    redisContext *c = NULL;
    unsigned long long n = 0;
    uint64_t seed = clock_mono_us();
    int batch = d->writes_per_sec / 50 > 0 ? d->writes_per_sec / 50 : 1;

    while (!d->stop) {
        if (!c || c->err) {
            if (c)
                redisFree(c);
            c = redisConnectWithTimeout("127.0.0.1", d->port_primary, tv);
            if (!c || c->err) {
                usleep(200000);
                continue;
            }
        }
        int pending = 0;
        for (int i = 0; i < batch; i++, n++) {
            char key[64], val[64];
            seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
            unsigned id = (unsigned)(seed >> 33) % 5000;
            if (id % 3 == 0) {
                snprintf(key, sizeof(key), "demo:user:%u", id);
                snprintf(val, sizeof(val), "%llu", n);
                redisAppendCommand(c, "HSET %s name user%u visits %s", key, id, val);
            } else {
                snprintf(key, sizeof(key), "demo:page:%u", id);
                snprintf(val, sizeof(val), "v%llu", n);
                redisAppendCommand(c, "SET %s %s EX 3600", key, val);
            }
            pending++;
            double u = (double)((seed >> 11) & 0xfffff) / (double)0x100000;
            if (u >= d->drop_share) {
                redisAppendCommand(c, "PUBLISH cache_update %s", key);
                pending++;
            } else {
                __atomic_add_fetch(&d->dropped, 1, __ATOMIC_RELAXED);
            }
        }
        for (int i = 0; i < pending; i++) {
            void *r = NULL;
            if (redisGetReply(c, &r) != REDIS_OK)
                break;
            freeReplyObject(r);
        }
        __atomic_add_fetch(&d->writes, (unsigned long long)batch, __ATOMIC_RELAXED);
        usleep(20000);
    }
    if (c)
        redisFree(c);
    return NULL;
}

static size_t collect_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    char **buf = userdata;
    size_t have = *buf ? strlen(*buf) : 0, add = size * nmemb;
    char *nb = realloc(*buf, have + add + 1);
    if (!nb)
        return 0;
    memcpy(nb + have, ptr, add);
    nb[have + add] = '\0';
    *buf = nb;
    return add;
}

/* One line: each replica's status and lag, from the agent's /api/v1/status. */
static void print_status(struct demo *d)
{
    char url[64];
    char *body = NULL;
    CURL *h = curl_easy_init();
    json_t *j = NULL;

    if (!h)
        return;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/v1/status", d->port_http);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    if (curl_easy_perform(h) == CURLE_OK && body)
        j = json_loads(body, 0, NULL);
    curl_easy_cleanup(h);
    free(body);

    printf("writes %llu (publishes dropped %llu) |", d->writes, d->dropped);
    json_t *reps = j ? json_object_get(j, "replicas") : NULL;
    size_t i;
    json_t *r;
    json_array_foreach(reps, i, r)
    {
        json_t *lag = json_object_get(r, "lag_seconds");
        printf(" %s %s %.0fms |", json_string_value(json_object_get(r, "name")),
               json_string_value(json_object_get(r, "status")) ?: "?",
               json_is_number(lag) ? json_number_value(lag) * 1000 : -1.0);
    }
    if (!reps)
        printf(" agent not answering yet");
    printf("\n");
    fflush(stdout);
    json_decref(j);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void teardown(struct demo *d, int keep)
{
    for (int i = d->npids - 1; i >= 0; i--)
        kill(d->pids[i], SIGTERM);
    for (int i = d->npids - 1; i >= 0; i--) {
        int st;
        for (int t = 0; t < 50; t++) {
            if (waitpid(d->pids[i], &st, WNOHANG) != 0)
                break;
            usleep(100000);
            if (t == 49) {
                kill(d->pids[i], SIGKILL);
                waitpid(d->pids[i], &st, 0);
            }
        }
    }
    if (keep)
        printf("kept %s\n", d->dir);
    else
        nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void demo_usage(FILE *f)
{
    fprintf(f, "usage: keydrift demo [--duration SECONDS] [--drop-share 0.02] [--rate N]\n"
               "                     [--http-port PORT] [--keep]\n"
               "\n"
               "Starts a throwaway topology on free loopback ports: a primary, two native\n"
               "replicas, two pubsub caches with their `keydrift sync`, a writer doing N\n"
               "updates/s (default 200) that drops a share of its publishes, and the agent.\n"
               "Needs redis-server (make deps). Ctrl-C stops and removes everything.\n");
}

int cmd_demo(int argc, char **argv)
{
    struct demo d;
    double duration = 0;
    int keep = 0;
    char self[512], conf[160], log[160];
    pthread_t writer;

    memset(&d, 0, sizeof(d));
    d.drop_share = 0.02;
    d.writes_per_sec = 200;
    d.port_http = 9643;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            demo_usage(stdout);
            return 0;
        } else if (!strcmp(a, "--keep")) {
            keep = 1;
            continue;
        } else if (!v) {
            fprintf(stderr, "keydrift demo: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--duration"))
            duration = strtod(v, &end);
        else if (!strcmp(a, "--drop-share"))
            d.drop_share = strtod(v, &end);
        else if (!strcmp(a, "--rate"))
            d.writes_per_sec = (int)strtol(v, &end, 10);
        else if (!strcmp(a, "--http-port"))
            d.port_http = (int)strtol(v, &end, 10);
        else {
            fprintf(stderr, "keydrift demo: unknown option %s\n", a);
            demo_usage(stderr);
            return 2;
        }
        if (!end || *end || duration < 0 || d.drop_share < 0 || d.drop_share > 1 ||
            d.writes_per_sec < 1 || d.writes_per_sec > 100000 || d.port_http < 1 ||
            d.port_http > 65535) {
            fprintf(stderr, "keydrift demo: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl < 0) {
        perror("keydrift demo: /proc/self/exe");
        return 2;
    }
    self[sl] = '\0';
    if (system("command -v redis-server >/dev/null 2>&1") != 0) {
        fprintf(stderr, "keydrift demo: redis-server not found; run `make deps` "
                        "(or apt-get install redis-server)\n");
        return 2;
    }
    snprintf(d.dir, sizeof(d.dir), "/tmp/keydrift-demo.XXXXXX");
    if (!mkdtemp(d.dir)) {
        perror("keydrift demo: mkdtemp");
        return 2;
    }
    int ports[6];
    if (free_ports(ports, 6) < 0) {
        perror("keydrift demo: choosing ports");
        return 2;
    }
    if (!port_is_free(d.port_http))
        d.port_http = ports[5];
    d.port_primary = ports[0];
    d.port_r1 = ports[1];
    d.port_r2 = ports[2];
    d.port_ca = ports[3];
    d.port_cb = ports[4];

    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    printf("keydrift demo in %s\n", d.dir);
    int ok = start_redis(&d, "primary", d.port_primary, 0) == 0 &&
             start_redis(&d, "replica-1", d.port_r1, d.port_primary) == 0 &&
             start_redis(&d, "replica-2", d.port_r2, d.port_primary) == 0 &&
             start_redis(&d, "cache-a", d.port_ca, 0) == 0 &&
             start_redis(&d, "cache-b", d.port_cb, 0) == 0 &&
             start_sync(&d, self, "cache-a", d.port_ca) == 0 &&
             start_sync(&d, self, "cache-b", d.port_cb) == 0 &&
             write_config(&d, conf, sizeof(conf)) == 0;
    if (ok) {
        snprintf(log, sizeof(log), "%s/agent.log", d.dir);
        char *argv2[] = {self, "run", conf, NULL};
        ok = spawn(&d, argv2, log) > 0;
    }
    if (!ok) {
        teardown(&d, keep);
        return 2;
    }
    printf("  primary    127.0.0.1:%d\n"
           "  replica-1  127.0.0.1:%d (native)\n"
           "  replica-2  127.0.0.1:%d (native)\n"
           "  cache-a    127.0.0.1:%d (pubsub, keydrift sync)\n"
           "  cache-b    127.0.0.1:%d (pubsub, keydrift sync)\n"
           "  writer     %d updates/s, dropping %.0f%% of its publishes\n"
           "\n"
           "  metrics    http://127.0.0.1:%d/metrics\n"
           "  status     http://127.0.0.1:%d/api/v1/status\n"
           "  agent log  %s\n"
           "\nCtrl-C stops the demo and removes %s\n\n",
           d.port_primary, d.port_r1, d.port_r2, d.port_ca, d.port_cb, d.writes_per_sec,
           d.drop_share * 100, d.port_http, d.port_http, log, d.dir);
    fflush(stdout);

    if (pthread_create(&writer, NULL, writer_main, &d) != 0) {
        teardown(&d, keep);
        return 2;
    }
    uint64_t start = clock_mono_us(), next = start + 2000000;
    while (!demo_signalled) {
        uint64_t now = clock_mono_us();
        if (duration > 0 && (double)(now - start) / 1e6 >= duration)
            break;
        if (now >= next) {
            print_status(&d);
            next = now + 3000000;
        }
        int st;
        for (int i = 0; i < d.npids; i++) {
            if (waitpid(d.pids[i], &st, WNOHANG) == d.pids[i]) {
                fprintf(stderr, "keydrift demo: a process exited (see the logs in %s)\n", d.dir);
                d.pids[i] = d.pids[--d.npids];
                keep = 1;
                demo_signalled = 1;
                break;
            }
        }
        usleep(100000);
    }
    d.stop = 1;
    pthread_join(writer, NULL);
    printf("stopping...\n");
    teardown(&d, keep);
    return 0;
}
