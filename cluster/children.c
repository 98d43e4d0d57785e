/*
 * children.c - the parents' side of the children: registry, admission of
 * their streams, health reports and the children listing.
 *
 * Registry: /cluster/children/<id> holds the child's ChildInfo (encoded
 * with codec_child_info_encode); /cluster/last_child_id the highest id
 * ever handed out, so ids are never reused.  A join is one transaction
 * that writes both, guarded by "the id is free", so two leaders can never
 * hand out the same id.  A leave deletes the record and the health record.
 *
 * Streams: any parent serves a child's stream (api.c: a watch of every key
 * that starts at the child's revision, pushed with request id 0, with an
 * empty batch as heartbeat every second).  Admission is here: the cluster
 * id must match and the child must be registered.  A parent that has not
 * yet applied the child's registration answers BUSY (try another), not
 * REVOKED, which is final.
 *
 * Reports: children report their services' health to the leader every few
 * seconds.  The leader keeps the latest of each in memory (lost with
 * leadership: the next leader has them again within one report period)
 * and records changes of the up/down set under /cluster/health/<id>, at
 * most once per HEALTH_RECORD_MIN_MS per child and HEALTH_WRITES_PER_S in
 * all, so a flapping service cannot flood the log.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "metrics.h"
#include "server_int.h"

#define CHILD_PREFIX "/cluster/children/"
#define HEALTH_PREFIX "/cluster/health/"
#define LAST_CHILD_ID "/cluster/last_child_id"
#define CHILD_GONE_MS 15000         /* no report for this long: gone */
#define HEALTH_RECORD_MIN_MS 10000u /* per child, between health records */
#define HEALTH_WRITES_PER_S 20u     /* health records, all children */
#define HEALTH_TEXT_MAX 4096

struct child_seen
{
    uint64_t id;
    uint64_t last_seen; /* loop time of the last report */
    uint64_t revision;
    uint64_t staleness_ms;
    char state[16];
    struct cd_service_health *services; /* strings owned */
    size_t n_services;
    uint64_t recorded_ms; /* loop time of the last health record */
    char *recorded;       /* its text; NULL until known */
};

static void child_key(char *buf, size_t len, const char *prefix, uint64_t id)
{
    snprintf(buf, len, "%s%" PRIu64, prefix, id);
}

static void services_free(struct child_seen *e)
{
    for (size_t i = 0; i < e->n_services; i++) {
        free((char *)(uintptr_t)e->services[i].name);
        free((char *)(uintptr_t)e->services[i].detail);
    }
    free(e->services);
    e->services = NULL;
    e->n_services = 0;
}

void server__children_free(struct server *s)
{
    for (size_t i = 0; i < s->n_children; i++) {
        services_free(&s->children[i]);
        free(s->children[i].recorded);
    }
    free(s->children);
    s->children = NULL;
    s->n_children = s->cap_children = 0;
}

void server__children_reset(struct server *s)
{
    server__children_free(s);
    s->children_since_ms = uv_now(s->loop);
}

static struct child_seen *seen_find(struct server *s, uint64_t id, int create)
{
    for (size_t i = 0; i < s->n_children; i++) {
        if (s->children[i].id == id) {
            return &s->children[i];
        }
    }
    if (!create) {
        return NULL;
    }
    if (s->n_children == s->cap_children) {
        size_t cap = s->cap_children ? s->cap_children * 2 : 16;
        struct child_seen *p = realloc(s->children, cap * sizeof *p);
        if (p == NULL) {
            return NULL;
        }
        s->children = p;
        s->cap_children = cap;
    }
    struct child_seen *e = &s->children[s->n_children++];
    memset(e, 0, sizeof *e);
    e->id = id;
    return e;
}

static void seen_drop(struct server *s, uint64_t id)
{
    struct child_seen *e = seen_find(s, id, 0);
    if (e != NULL) {
        services_free(e);
        free(e->recorded);
        *e = s->children[--s->n_children];
    }
}

/* 1 registered, 0 not, or a negative read error.  *create_rev (may be
 * NULL) receives the revision of the registration. */
static int registered(struct server *s, uint64_t id, uint64_t *create_rev)
{
    char key[64];
    struct store_read *r;
    struct store_kv kv;
    child_key(key, sizeof key, CHILD_PREFIX, id);
    int rc = store_read_begin(s->store, &r);
    if (rc != 0) {
        return rc;
    }
    rc = store_read_get(r, key, strlen(key), &kv);
    store_read_end(r);
    if (rc == 0 && create_rev != NULL) {
        *create_rev = kv.create_rev;
    }
    return rc == 0 ? 1 : rc == CD_ENOTFOUND ? 0 : rc;
}

int server__child_hello(struct server *s, const struct cd_msg *hello)
{
    const uint64_t id = hello->u.hello.child_id;
    struct store_meta meta;
    uint64_t reg_rev = 0;
    if (hello->u.hello.cluster_id != s->cluster_id) {
        return CD_EBADCLUSTER;
    }
    if (id == 0) {
        return CD_EMALFORMED;
    }
    int rc = server__store_meta(s, &meta);
    if (rc != 0) {
        return rc;
    }
    /* Revisions compare only within one history.  A fresh cache (revision
     * 0) has no history of its own yet: it takes this one's. */
    int same_history =
        hello->u.hello.epoch == meta.epoch || hello->u.hello.revision == 0;
    rc = registered(s, id, &reg_rev);
    if (rc < 0) {
        return rc;
    }
    if (rc == 0) {
        /* Final only if this parent has applied the registration: a
         * parent behind it simply does not know the child yet.  Across a
         * change of history (a restore from a backup older than the
         * registration, a forced new cluster that had not applied it) the
         * registration is not in this history at all. */
        if (same_history && s->fsm.revision < hello->u.hello.registered_rev) {
            return CD_EBUSY;
        }
        return CD_EREVOKED;
    }
    if (hello->u.hello.registered_rev != 0 &&
        reg_rev != hello->u.hello.registered_rev) {
        /* The id is registered, but by another join: a restored cluster
         * hands out again the ids given after its backup was taken. */
        log_warn("children",
                 "child %" PRIu64 " registered at revision %" PRIu64
                 " says hello, but that id was registered at revision "
                 "%" PRIu64 " in this history: refused",
                 id, hello->u.hello.registered_rev, reg_rev);
        return CD_EREVOKED;
    }
    log_debug("children",
              "child %" PRIu64 " (%s) follows from revision %" PRIu64, id,
              hello->u.hello.hostname != NULL ? hello->u.hello.hostname : "?",
              hello->u.hello.revision);
    return hello->u.hello.epoch == meta.epoch ? 0 : SERVER_HELLO_RESET;
}

/* --- join and leave ------------------------------------------------------ */

/* What a join's transaction points into. */
struct join_write
{
    char child_key[64];
    char last_value[24];
    struct cd_compare cmp;
    struct cd_op then[2];
    size_t info_len;
    uint8_t info[];
};

static uint64_t read_last_child_id(struct server *s)
{
    struct store_read *r;
    struct store_kv kv;
    uint64_t id = 0;
    if (store_read_begin(s->store, &r) != 0) {
        return 0;
    }
    if (store_read_get(r, LAST_CHILD_ID, strlen(LAST_CHILD_ID), &kv) == 0) {
        char buf[24];
        size_t n =
            kv.value_len < sizeof buf - 1 ? kv.value_len : sizeof buf - 1;
        memcpy(buf, kv.value, n);
        buf[n] = '\0';
        id = strtoull(buf, NULL, 10);
    }
    store_read_end(r);
    return id;
}

int server__child_join(struct conn *c, struct cd_msg *msg)
{
    struct server *s = server__conn_server(c);
    if (s->lead != LEAD_READY) {
        server__send_error(c, msg->request_id, CD_ENOTLEADER);
        return 0;
    }
    if (!server__token_valid(s, msg->u.child_join.token)) {
        server__send_error(c, msg->request_id, -EACCES);
        return 0;
    }
    uint64_t last = read_last_child_id(s);
    uint64_t id =
        (last > s->child_id_reserved ? last : s->child_id_reserved) + 1;

    struct cd_child_info info = msg->u.child_join.info;
    info.id = id;
    info.joined_ms = server__wall_ms();
    uint8_t *bytes = NULL;
    size_t len = 0;
    int rc = codec_child_info_encode(&info, &bytes, &len);
    struct join_write *j = rc == 0 ? calloc(1, sizeof *j + len) : NULL;
    if (j == NULL) {
        free(bytes);
        server__send_error(c, msg->request_id, rc != 0 ? rc : -ENOMEM);
        return 0;
    }
    memcpy(j->info, bytes, len);
    j->info_len = len;
    free(bytes);
    child_key(j->child_key, sizeof j->child_key, CHILD_PREFIX, id);
    snprintf(j->last_value, sizeof j->last_value, "%" PRIu64, id);
    j->cmp = (struct cd_compare){
        .key = {j->child_key, strlen(j->child_key)},
        .target = CD_CMP_EXISTS,
        .result = CD_CMP_EQUAL,
        .number = 0,
    };
    j->then[0] = (struct cd_op){
        .type = CD_OP_PUT,
        .key = {LAST_CHILD_ID, strlen(LAST_CHILD_ID)},
        .value = {j->last_value, strlen(j->last_value)},
    };
    j->then[1] = (struct cd_op){
        .type = CD_OP_PUT,
        .key = {j->child_key, strlen(j->child_key)},
        .value = {j->info, j->info_len},
    };
    struct cd_op op = {
        .type = CD_OP_TXN,
        .compares = &j->cmp,
        .n_compares = 1,
        .then_ops = j->then,
        .n_then = 2,
    };
    log_info("children", "registering child %" PRIu64 " (%s)", id,
             info.hostname != NULL ? info.hostname : "no hostname");
    s->child_id_reserved = id;
    return server__queue_op(c, msg, &op, SERVER_WRITE_CHILD_JOIN, id, j);
}

struct leave_write
{
    char child_key[64];
    char health_key[64];
    struct cd_op then[2];
};

int server__child_leave(struct conn *c, struct cd_msg *msg)
{
    struct server *s = server__conn_server(c);
    uint64_t id = msg->u.child_leave.child_id;
    if (s->lead != LEAD_READY) {
        server__send_error(c, msg->request_id, CD_ENOTLEADER);
        return 0;
    }
    int rc = registered(s, id, NULL);
    if (rc <= 0) {
        server__send_error(c, msg->request_id, rc == 0 ? CD_ENOTFOUND : rc);
        return 0;
    }
    struct leave_write *l = calloc(1, sizeof *l);
    if (l == NULL) {
        server__send_error(c, msg->request_id, -ENOMEM);
        return 0;
    }
    child_key(l->child_key, sizeof l->child_key, CHILD_PREFIX, id);
    child_key(l->health_key, sizeof l->health_key, HEALTH_PREFIX, id);
    l->then[0] = (struct cd_op){.type = CD_OP_DELETE,
                                .key = {l->child_key, strlen(l->child_key)}};
    l->then[1] = (struct cd_op){.type = CD_OP_DELETE,
                                .key = {l->health_key, strlen(l->health_key)}};
    struct cd_op op = {.type = CD_OP_TXN, .then_ops = l->then, .n_then = 2};
    log_info("children", "deregistering child %" PRIu64, id);
    seen_drop(s, id);
    return server__queue_op(c, msg, &op, SERVER_WRITE_OK, id, l);
}

/* --- reports ------------------------------------------------------------- */

/* "name up\nname down: detail\n" for every service, in report order. */
static void health_text(const struct cd_service_health *sv,
                        size_t n,
                        char *out,
                        size_t len)
{
    size_t used = 0;
    out[0] = '\0';
    if (sv == NULL) {
        return;
    }
    for (size_t i = 0; i < n && used < len; i++) {
        int k = snprintf(out + used, len - used, "%s %s%s%s\n", sv[i].name,
                         sv[i].up ? "up" : "down",
                         !sv[i].up && sv[i].detail != NULL ? ": " : "",
                         !sv[i].up && sv[i].detail != NULL ? sv[i].detail : "");
        if (k < 0) {
            break;
        }
        used += (size_t)k;
    }
}

/* The up/down set only: details (error texts) change without news. */
static void updown_text(const char *text, char *out, size_t len)
{
    size_t o = 0;
    int skip = 0;
    for (const char *p = text; *p != '\0' && o + 1 < len; p++) {
        if (*p == ':') {
            skip = 1;
        } else if (*p == '\n') {
            skip = 0;
        }
        if (!skip) {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
}

static void record_health(struct server *s,
                          struct child_seen *e,
                          const char *text)
{
    char key[64];
    uint64_t now = uv_now(s->loop);
    child_key(key, sizeof key, HEALTH_PREFIX, e->id);
    if (e->recorded == NULL) {
        /* A new leader: what the store has is the last record. */
        struct store_read *r;
        struct store_kv kv;
        if (store_read_begin(s->store, &r) == 0) {
            if (store_read_get(r, key, strlen(key), &kv) == 0) {
                e->recorded = strndup(kv.value, kv.value_len);
            }
            store_read_end(r);
        }
        if (e->recorded == NULL) {
            e->recorded = strdup("");
        }
    }
    char was[HEALTH_TEXT_MAX], now_set[HEALTH_TEXT_MAX];
    updown_text(e->recorded != NULL ? e->recorded : "", was, sizeof was);
    updown_text(text, now_set, sizeof now_set);
    if (strcmp(was, now_set) == 0) {
        return;
    }
    if (e->recorded_ms != 0 && now - e->recorded_ms < HEALTH_RECORD_MIN_MS) {
        return; /* a later report records it */
    }
    if (now / 1000 != s->health_window_ms / 1000) {
        s->health_window_ms = now;
        s->health_writes = 0;
    }
    if (s->health_writes >= HEALTH_WRITES_PER_S) {
        return;
    }
    struct cd_op op = {.type = CD_OP_PUT,
                       .key = {key, strlen(key)},
                       .value = {text, strlen(text)}};
    if (server__propose_op(s, &op) == 0) {
        s->health_writes++;
        e->recorded_ms = now;
        free(e->recorded);
        e->recorded = strdup(text);
        /* One log line: "smtp up, imap down". */
        size_t k = strlen(now_set);
        while (k > 0 && now_set[k - 1] == '\n') {
            now_set[--k] = '\0';
        }
        for (char *p = strchr(now_set, '\n'); p != NULL; p = strchr(p, '\n')) {
            *p = ',';
        }
        log_info("children", "child %" PRIu64 " health: %s", e->id,
                 now_set[0] != '\0' ? now_set : "(no checks)");
    }
}

void server__child_report(struct conn *c, const struct cd_msg *msg)
{
    struct server *s = server__conn_server(c);
    uint64_t id = msg->u.child_report.child_id;
    if (s->lead != LEAD_READY) {
        server__send_error(c, msg->request_id, CD_ENOTLEADER);
        return;
    }
    int rc = registered(s, id, NULL);
    if (rc <= 0) {
        server__send_error(c, msg->request_id, rc == 0 ? CD_EREVOKED : rc);
        return;
    }
    struct child_seen *e = seen_find(s, id, 1);
    if (e == NULL) {
        server__send_error(c, msg->request_id, -ENOMEM);
        return;
    }
    e->last_seen = uv_now(s->loop);
    e->revision = msg->u.child_report.revision;
    e->staleness_ms = msg->u.child_report.staleness_ms;
    snprintf(e->state, sizeof e->state, "%s",
             msg->u.child_report.state != NULL ? msg->u.child_report.state
                                               : "following");
    services_free(e);
    size_t n = msg->u.child_report.n_services;
    e->services = n > 0 ? calloc(n, sizeof *e->services) : NULL;
    if (e->services != NULL) {
        for (size_t i = 0; i < n; i++) {
            const struct cd_service_health *in =
                &msg->u.child_report.services[i];
            e->services[i].name = strdup(in->name != NULL ? in->name : "");
            e->services[i].up = in->up;
            e->services[i].detail =
                in->detail != NULL ? strdup(in->detail) : NULL;
        }
        e->n_services = n;
    }
    char *text = malloc(HEALTH_TEXT_MAX);
    if (text != NULL) {
        health_text(e->services, e->n_services, text, HEALTH_TEXT_MAX);
        record_health(s, e, text);
        free(text);
    }
    server__send_ok(c, msg->request_id);
}

/* --- the listing --------------------------------------------------------- */

struct list_acc
{
    struct cd_child_status *st;
    size_t n, cap;
    int failed;
};

static int list_collect(void *arg, const struct store_kv *kv)
{
    struct list_acc *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 64;
        struct cd_child_status *p = realloc(a->st, cap * sizeof *p);
        if (p == NULL) {
            a->failed = -ENOMEM;
            return 1;
        }
        a->st = p;
        a->cap = cap;
    }
    struct cd_child_status *st = &a->st[a->n];
    memset(st, 0, sizeof *st);
    if (codec_child_info_decode(kv->value, kv->value_len, &st->info) != 0) {
        log_warn("children", "unreadable registry record %.*s: skipped",
                 (int)kv->key_len, (const char *)kv->key);
        return 0;
    }
    a->n++;
    return 0;
}

static int by_id(const void *a, const void *b)
{
    uint64_t x = ((const struct cd_child_status *)a)->info.id;
    uint64_t y = ((const struct cd_child_status *)b)->info.id;
    return x < y ? -1 : x > y;
}

void server__children_list(struct conn *c, const struct cd_msg *msg)
{
    struct server *s = server__conn_server(c);
    struct list_acc a = {NULL, 0, 0, 0};
    struct store_read *r;
    if (s->lead != LEAD_READY) {
        server__send_error(c, msg->request_id, CD_ENOTLEADER);
        return;
    }
    int rc = store_read_begin(s->store, &r);
    if (rc == 0) {
        rc = store_read_range(r, CHILD_PREFIX, strlen(CHILD_PREFIX), NULL, 0, 0,
                              list_collect, &a, NULL);
        store_read_end(r);
    }
    if (rc == 0) {
        rc = a.failed;
    }
    if (rc != 0) {
        for (size_t i = 0; i < a.n; i++) {
            codec_child_info_free(&a.st[i].info);
        }
        free(a.st);
        server__send_error(c, msg->request_id, rc);
        return;
    }
    if (a.n > 1) {
        qsort(a.st, a.n, sizeof *a.st, by_id);
    }
    uint64_t now = uv_now(s->loop);
    for (size_t i = 0; i < a.n; i++) {
        struct cd_child_status *st = &a.st[i];
        const struct child_seen *e = seen_find(s, st->info.id, 0);
        if (e == NULL) {
            st->state =
                now - s->children_since_ms < CHILD_GONE_MS ? "unknown" : "gone";
            continue;
        }
        st->has_last_seen = 1;
        st->last_seen_ms_ago = now - e->last_seen;
        st->state = st->last_seen_ms_ago > CHILD_GONE_MS ? "gone" : e->state;
        st->revision = e->revision;
        st->lag =
            s->fsm.revision > e->revision ? s->fsm.revision - e->revision : 0;
        st->services = e->services;
        st->n_services = e->n_services;
        st->staleness_ms = e->staleness_ms;
    }
    struct cd_msg m;
    memset(&m, 0, sizeof m);
    m.request_id = msg->request_id;
    m.type = CD_MSG_CHILDREN_RESP;
    m.u.children_resp.children = a.st;
    m.u.children_resp.n_children = a.n;
    m.u.children_resp.revision = s->fsm.revision;
    server__send(c, &m);
    for (size_t i = 0; i < a.n; i++) {
        codec_child_info_free(&a.st[i].info);
    }
    free(a.st);
}

/* --- metrics ------------------------------------------------------------- */

struct stats_acc
{
    struct server *s;
    struct metrics_state *st;
    uint64_t now;
};

static void stale_max(struct metrics_state *st, int state, uint64_t ms)
{
    if (ms > st->staleness_max_ms[state]) {
        st->staleness_max_ms[state] = ms;
    }
}

static int stats_collect(void *arg, const struct store_kv *kv)
{
    struct stats_acc *a = arg;
    struct server *s = a->s;
    char buf[24];
    size_t plen = strlen(CHILD_PREFIX);
    size_t n = kv->key_len - plen;
    a->st->children_registered++;
    if (s->lead != LEAD_READY || n == 0 || n >= sizeof buf) {
        return 0;
    }
    memcpy(buf, (const char *)kv->key + plen, n);
    buf[n] = '\0';
    const struct child_seen *e = seen_find(s, strtoull(buf, NULL, 10), 0);
    if (e == NULL) {
        /* As in the listing: unknown early in a leadership, then gone. */
        a->st->children[a->now - s->children_since_ms < CHILD_GONE_MS
                            ? METRICS_CHILD_UNKNOWN
                            : METRICS_CHILD_GONE]++;
        return 0;
    }
    uint64_t ago = a->now - e->last_seen;
    if (ago > CHILD_GONE_MS) {
        a->st->children[METRICS_CHILD_GONE]++;
        stale_max(a->st, METRICS_CHILD_GONE, ago + e->staleness_ms);
    } else if (strcmp(e->state, "following") == 0) {
        a->st->children[METRICS_CHILD_FOLLOWING]++;
        stale_max(a->st, METRICS_CHILD_FOLLOWING, e->staleness_ms);
    } else {
        a->st->children[METRICS_CHILD_DEGRADED]++;
        stale_max(a->st, METRICS_CHILD_DEGRADED, e->staleness_ms + ago);
    }
    return 0;
}

/* One walk of the registry's keys (values are not decoded). */
void server__children_stats(struct server *s, struct metrics_state *st)
{
    struct stats_acc a = {s, st, uv_now(s->loop)};
    struct store_read *r;
    if (store_read_begin(s->store, &r) == 0) {
        store_read_range(r, CHILD_PREFIX, strlen(CHILD_PREFIX), NULL, 0, 0,
                         stats_collect, &a, NULL);
        store_read_end(r);
    }
}
