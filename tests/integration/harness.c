/*
 * harness.c - see harness.h.
 */
#include "harness.h"

#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lib/err.h"
#include "storage/clusterd.h"
#include "storage/store.h"

uint64_t harness_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void harness_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

int harness_port_free(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0) {
        return 0;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/*
 * A block of 200 ports (raft base+1.., API base+101..) that is free now,
 * chosen at random in 20000..59999 so that concurrent runs (two checkouts,
 * a benchmark) rarely meet, and checked so that a meeting is noticed.
 */
static int pick_ports(void)
{
    unsigned seed = (unsigned)getpid() ^ (unsigned)harness_now_ms();
    for (int attempt = 0; attempt < 50; attempt++) {
        int base = 20000 + (int)(rand_r(&seed) % 200) * 200;
        int ok = 1;
        /* The whole block: tests take more ports from it (metrics). */
        for (int i = 1; i < 200 && ok; i++) {
            ok = harness_port_free(base + i);
        }
        if (ok) {
            return base;
        }
    }
    return -1;
}

int harness_init(struct harness *h, int n, const char *const *extra)
{
    char exe[PATH_MAX];
    memset(h, 0, sizeof *h);
    snprintf(h->base, sizeof h->base, "/tmp/cd-integ-XXXXXX");
    if (mkdtemp(h->base) == NULL) {
        return -errno;
    }
    /* build/tests/<test> -> build/bin/clusterd */
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) {
        return -errno;
    }
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    *slash = '\0';
    snprintf(h->bin, sizeof h->bin, "%s/../bin/clusterd", exe);
    if (access(h->bin, X_OK) != 0) {
        fprintf(stderr, "harness: no clusterd at %s\n", h->bin);
        return -ENOENT;
    }
    h->port = pick_ports();
    if (h->port < 0) {
        return -EADDRINUSE;
    }
    h->n = n;
    for (int i = 0; i < n; i++) {
        struct hnode *d = &h->node[i];
        snprintf(d->dir, sizeof d->dir, "%s/n%d", h->base, i + 1);
        snprintf(d->log, sizeof d->log, "%s/n%d.log", h->base, i + 1);
        snprintf(d->raft, sizeof d->raft, "127.0.0.1:%d", h->port + i + 1);
        snprintf(d->api, sizeof d->api, "127.0.0.1:%d", h->port + 101 + i);
    }
    for (int i = 0; extra != NULL && extra[i] != NULL && i < 15; i++) {
        h->extra[i] = extra[i];
    }
    snprintf(h->child_bin, sizeof h->child_bin, "%s-child", h->bin);
    for (int i = 0; i < HARNESS_MAX_CHILDREN; i++) {
        snprintf(h->child[i].dir, sizeof h->child[i].dir, "%s/c%d", h->base,
                 i + 1);
        snprintf(h->child[i].log, sizeof h->child[i].log, "%s/c%d.log", h->base,
                 i + 1);
    }
    return 0;
}

int harness_setup(void **state)
{
    struct harness *h = calloc(1, sizeof *h);
    *state = h;
    return h == NULL ? -1 : 0;
}

int harness_teardown(void **state)
{
    harness_destroy(*state);
    free(*state);
    return 0;
}

void harness_destroy(struct harness *h)
{
    for (int i = 0; i < HARNESS_MAX_CHILDREN; i++) {
        if (h->child[i].pid > 0) {
            harness_child_stop(h, i, SIGKILL);
        }
    }
    for (int i = 0; i < h->n; i++) {
        if (h->node[i].pid > 0) {
            harness_stop(h, i, SIGKILL);
        }
    }
    if (getenv("CD_KEEP_TEST_DIR") == NULL && h->base[0] != '\0') {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->base);
        if (system(cmd) != 0) {
            fprintf(stderr, "harness: could not remove %s\n", h->base);
        }
    } else if (h->base[0] != '\0') {
        fprintf(stderr, "harness: kept %s\n", h->base);
    }
}

int harness_token(struct harness *h, char *tok, size_t len)
{
    struct cd_client *c = harness_client(h, 0, 10000);
    struct cd_msg req, resp;
    if (c == NULL) {
        return -ENOMEM;
    }
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_TOKEN;
    req.u.token.ttl_s = 600;
    int rc = cd_client_call(c, &req, &resp);
    if (rc == 0) {
        snprintf(tok, len, "%s", resp.u.token_resp.token);
        codec_msg_free(&resp);
    }
    cd_client_close(c);
    return rc;
}

static int read_token(struct harness *h, int via, char *tok, size_t len)
{
    char path[200];
    snprintf(path, sizeof path, "%s/join-token", h->node[via].dir);
    /* The first joins use the token the bootstrap node leaves in its data
     * directory (the path the docs give operators); any later join asks
     * the cluster for a fresh one. */
    if (h->joins_done > 0 || via != 0) {
        return harness_token(h, tok, len);
    }
    uint64_t deadline = harness_now_ms() + 10000;
    while (harness_now_ms() < deadline) {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            char *ok = fgets(tok, (int)len, f);
            fclose(f);
            if (ok != NULL && strlen(tok) > 30) {
                tok[strcspn(tok, "\n")] = '\0';
                return 0;
            }
        }
        harness_sleep_ms(20);
    }
    return CD_ETIMEOUT;
}

int harness_start(struct harness *h, int i, enum hstart how, int via)
{
    struct hnode *d = &h->node[i];
    char token[64] = "";
    /* execv wants char *const[]; the strings are ours and not modified. */
    const char *args[48];
    char *argv[48];
    int a = 0;
    if (how == H_JOIN && read_token(h, via, token, sizeof token) != 0) {
        return CD_ETIMEOUT;
    }
    if (how == H_JOIN && h->formed) {
        h->joins_done++;
    }
#define argv args
    argv[a++] = h->bin;
    argv[a++] = "--data";
    argv[a++] = d->dir;
    argv[a++] = "--raft";
    argv[a++] = d->raft;
    argv[a++] = "--api";
    argv[a++] = d->api;
    if (how == H_BOOTSTRAP) {
        argv[a++] = "--bootstrap";
        if (h->restore != NULL) {
            argv[a++] = "--restore";
            argv[a++] = h->restore;
        }
    } else if (how == H_FORCE_NEW_CLUSTER) {
        argv[a++] = "--force-new-cluster";
    } else if (how == H_JOIN) {
        argv[a++] = "--join";
        argv[a++] = h->node[via].api;
        argv[a++] = "--token";
        argv[a++] = token;
    }
    for (int j = 0; h->extra[j] != NULL; j++) {
        argv[a++] = h->extra[j];
    }
    argv[a] = NULL;
#undef argv
    for (int j = 0; j <= a; j++) {
        argv[j] = (char *)(uintptr_t)args[j];
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(h->bin, argv);
        _exit(127);
    }
    d->pid = pid;
    return 0;
}

int harness_stop(struct harness *h, int i, int sig)
{
    struct hnode *d = &h->node[i];
    int status = 0;
    if (d->pid <= 0) {
        return -1;
    }
    kill(d->pid, sig);
    uint64_t deadline = harness_now_ms() + 15000;
    for (;;) {
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid || (r < 0 && errno == ECHILD)) {
            break;
        }
        if (harness_now_ms() > deadline) {
            kill(d->pid, SIGKILL);
            waitpid(d->pid, &status, 0);
            break;
        }
        harness_sleep_ms(10);
    }
    d->pid = 0;
    return status;
}

void harness_wipe(struct harness *h, int i)
{
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", h->node[i].dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "harness: could not remove %s\n", h->node[i].dir);
    }
}

struct cd_client *harness_client(struct harness *h,
                                 unsigned mask,
                                 unsigned timeout_ms)
{
    const char *eps[HARNESS_MAX_NODES];
    size_t n = 0;
    struct cd_client *c = NULL;
    for (int i = 0; i < h->n; i++) {
        if (mask == 0 || (mask & (1u << i))) {
            eps[n++] = h->node[i].api;
        }
    }
    struct cd_client_config cfg = {
        .endpoints = eps,
        .n_endpoints = n,
        .timeout_ms = 2000,
        .total_timeout_ms = timeout_ms,
    };
    if (cd_client_open(&cfg, &c) != 0) {
        return NULL;
    }
    return c;
}

int harness_status(struct harness *h, int i, struct cd_msg *st)
{
    struct cd_client *c = harness_client(h, 1u << i, 1500);
    struct cd_msg req;
    if (c == NULL) {
        return -ENOMEM;
    }
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_STATUS;
    int rc = cd_client_call(c, &req, st);
    cd_client_close(c);
    return rc;
}

int harness_wait_voters(struct harness *h, unsigned voters, unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < deadline) {
        struct cd_client *c = harness_client(h, 0, 2000);
        struct cd_msg req, resp;
        memset(&req, 0, sizeof req);
        req.type = CD_MSG_MEMBERS;
        if (c != NULL && cd_client_call(c, &req, &resp) == 0) {
            unsigned v = 0;
            for (size_t j = 0; j < resp.u.members_resp.n_members; j++) {
                v += resp.u.members_resp.members[j].role == CD_ROLE_VOTER;
            }
            codec_msg_free(&resp);
            if (v == voters) {
                cd_client_close(c);
                return 0;
            }
        }
        cd_client_close(c);
        harness_sleep_ms(50);
    }
    return CD_ETIMEOUT;
}

int harness_leader(struct harness *h, unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < deadline) {
        for (int i = 0; i < h->n; i++) {
            struct cd_msg st;
            if (h->node[i].pid <= 0 || harness_status(h, i, &st) != 0) {
                continue;
            }
            int leads = st.u.status_resp.state != NULL &&
                        strcmp(st.u.status_resp.state, "leader") == 0;
            codec_msg_free(&st);
            if (leads) {
                return i;
            }
        }
        harness_sleep_ms(20);
    }
    return -1;
}

int harness_wait_revision(struct harness *h, uint64_t rev, unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    while (harness_now_ms() < deadline) {
        int behind = 0;
        for (int i = 0; i < h->n; i++) {
            struct cd_msg st;
            if (h->node[i].pid <= 0) {
                continue;
            }
            if (harness_status(h, i, &st) != 0) {
                behind = 1;
                continue;
            }
            behind |= st.u.status_resp.revision < rev;
            codec_msg_free(&st);
        }
        if (!behind) {
            return 0;
        }
        harness_sleep_ms(20);
    }
    return CD_ETIMEOUT;
}

struct digest
{
    uint64_t hash;
    uint64_t keys;
};

static void mix(uint64_t *h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        /* NOLINTNEXTLINE: b holds len initialised bytes (store data). */
        *h = (*h ^ b[i]) * 1099511628211ULL;
    }
}

static int digest_kv(void *arg, const struct store_kv *kv)
{
    struct digest *d = arg;
    uint64_t nums[3] = {kv->create_rev, kv->mod_rev, kv->version};
    uint64_t lens[2] = {kv->key_len, kv->value_len};
    mix(&d->hash, lens, sizeof lens);
    mix(&d->hash, kv->key, kv->key_len);
    mix(&d->hash, kv->value, kv->value_len);
    mix(&d->hash, nums, sizeof nums);
    d->keys++;
    return 0;
}

int harness_store_digest(const char *path, struct harness_digest *out)
{
    struct store_config cfg;
    struct store *s;
    struct store_read *r;
    struct store_meta m;
    struct digest d = {1469598103934665603ULL, 0};
    store_config_init(&cfg, path);
    cfg.read_only = 1;
    int rc = store_open(&cfg, &s);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_begin(s, &r);
    if (rc == 0) {
        rc = store_read_meta(r, &m);
        if (rc == 0) {
            rc = store_read_range(r, NULL, 0, NULL, 0, 0, digest_kv, &d, NULL);
        }
        store_read_end(r);
    }
    store_close(s);
    if (rc == 0) {
        out->revision = m.revision;
        out->epoch = m.epoch;
        out->keys = d.keys;
        out->hash = d.hash;
    }
    return rc;
}

int harness_compare_stores(struct harness *h, char *why, size_t why_len)
{
    struct harness_digest first = {0, 0, 0, 0};
    int have = -1;
    for (int i = 0; i < h->n; i++) {
        char path[200];
        struct harness_digest d;
        if (h->node[i].pid <= 0) {
            continue;
        }
        snprintf(path, sizeof path, "%s/state.mdb", h->node[i].dir);
        int rc = harness_store_digest(path, &d);
        if (rc != 0) {
            snprintf(why, why_len, "node %d: %s", i + 1, cd_strerror(rc));
            return rc;
        }
        if (have < 0) {
            first = d;
            have = i;
        } else if (d.hash != first.hash || d.keys != first.keys ||
                   d.revision != first.revision || d.epoch != first.epoch) {
            snprintf(why, why_len,
                     "node %d (rev %llu, epoch %016llx, %llu keys, digest "
                     "%016llx) differs from node %d (rev %llu, epoch %016llx, "
                     "%llu keys, digest %016llx)",
                     i + 1, (unsigned long long)d.revision,
                     (unsigned long long)d.epoch, (unsigned long long)d.keys,
                     (unsigned long long)d.hash, have + 1,
                     (unsigned long long)first.revision,
                     (unsigned long long)first.epoch,
                     (unsigned long long)first.keys,
                     (unsigned long long)first.hash);
            return CD_ECORRUPT;
        }
    }
    return have < 0 ? -ENOENT : 0;
}

int harness_store_meta(struct harness *h, int i, struct store_meta *m)
{
    char path[200];
    struct store_config cfg;
    struct store *s;
    struct store_read *r;
    snprintf(path, sizeof path, "%s/state.mdb", h->node[i].dir);
    store_config_init(&cfg, path);
    cfg.read_only = 1;
    int rc = store_open(&cfg, &s);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_begin(s, &r);
    if (rc == 0) {
        rc = store_read_meta(r, m);
        store_read_end(r);
    }
    store_close(s);
    return rc;
}

int harness_file_has(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    int found = 0;
    if (f == NULL) {
        return 0;
    }
    while (!found && fgets(line, sizeof line, f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

int harness_log_has(struct harness *h, int i, const char *needle)
{
    return harness_file_has(h->node[i].log, needle);
}

pid_t harness_spawn(const char *const *argv,
                    const char *log,
                    const char *const *env)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid != 0) {
        return pid;
    }
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
    }
    for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
        putenv((char *)(uintptr_t)env[i]);
    }
    execv(argv[0], (char *const *)(uintptr_t)argv);
    _exit(127);
}

int harness_reap(pid_t pid, int sig, unsigned timeout_ms)
{
    int st = 0;
    if (pid <= 0) {
        return -1;
    }
    if (sig != 0) {
        kill(pid, sig);
    }
    uint64_t deadline = harness_now_ms() + timeout_ms;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (harness_now_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        harness_sleep_ms(10);
    }
    return st;
}

int harness_ctlv(struct harness *h, const char *log, const char *const *args)
{
    char bin[4300], eps[HARNESS_MAX_NODES * 32 + 1] = "";
    const char *argv[24];
    int n = 0;
    snprintf(bin, sizeof bin, "%s", h->bin);
    char *slash = strrchr(bin, '/');
    snprintf(slash + 1, sizeof bin - (size_t)(slash + 1 - bin), "clusterctl");
    for (int i = 0; i < h->n; i++) {
        size_t used = strlen(eps);
        snprintf(eps + used, sizeof eps - used, "%s%s", i ? "," : "",
                 h->node[i].api);
    }
    argv[n++] = bin;
    argv[n++] = "--endpoints";
    argv[n++] = eps;
    for (size_t i = 0; args[i] != NULL && n < 23; i++) {
        argv[n++] = args[i];
    }
    argv[n] = NULL;
    int st = harness_reap(harness_spawn(argv, log, NULL), 0, 60000);
    return st >= 0 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* --- children ------------------------------------------------------------ */

int harness_child_start(struct harness *h,
                        int i,
                        const char *token,
                        const char *endpoints)
{
    struct hchild *c = &h->child[i];
    char all[HARNESS_MAX_NODES * 32 + 1] = "";
    const char *argv[16];
    int n = 0;
    if (endpoints == NULL) {
        for (int j = 0; j < h->n; j++) {
            size_t used = strlen(all);
            snprintf(all + used, sizeof all - used, "%s%s", j ? "," : "",
                     h->node[j].api);
        }
        endpoints = all;
    }
    argv[n++] = h->child_bin;
    argv[n++] = "--data";
    argv[n++] = c->dir;
    argv[n++] = "--endpoints";
    argv[n++] = endpoints;
    argv[n++] = "--set";
    argv[n++] = "report_interval_ms=300";
    argv[n++] = "--set";
    argv[n++] = "check=self process-name clusterd-child";
    if (token != NULL) {
        argv[n++] = "--token";
        argv[n++] = token;
    }
    argv[n] = NULL;
    c->pid = harness_spawn(argv, c->log, NULL);
    return c->pid > 0 ? 0 : -ECHILD;
}

int harness_child_stop(struct harness *h, int i, int sig)
{
    int st = harness_reap(h->child[i].pid, sig, 10000);
    h->child[i].pid = 0;
    return st;
}

void harness_cache_path(struct harness *h, int i, char *out, size_t len)
{
    snprintf(out, len, "%s/cache.mdb", h->child[i].dir);
}

int harness_cache_get(struct harness *h, int i, const char *key, char **out)
{
    char path[256];
    clusterd_db *db;
    size_t len;
    harness_cache_path(h, i, path, sizeof path);
    int rc = clusterd_open(path, &db);
    if (rc != 0) {
        return rc;
    }
    rc = clusterd_get(db, key, strlen(key), out, &len);
    clusterd_close(db);
    return rc;
}

uint64_t harness_cache_revision(struct harness *h, int i)
{
    char path[256];
    clusterd_db *db;
    uint64_t rev = 0;
    harness_cache_path(h, i, path, sizeof path);
    if (clusterd_open(path, &db) == 0) {
        clusterd_revision(db, &rev);
        clusterd_close(db);
    }
    return rev;
}

int harness_wait_cache(struct harness *h,
                       int i,
                       const char *key,
                       const char *want,
                       unsigned timeout_ms)
{
    uint64_t deadline = harness_now_ms() + timeout_ms;
    do {
        char *v = NULL;
        if (harness_cache_get(h, i, key, &v) == 0) {
            int same = strcmp(v, want) == 0;
            free(v);
            if (same) {
                return 0;
            }
        }
        harness_sleep_ms(20);
    } while (harness_now_ms() < deadline);
    return CD_ETIMEOUT;
}
