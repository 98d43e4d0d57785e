/*
 * child_metrics.c - see child_metrics.h.
 */
#include "child_metrics.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../cluster/metrics.h"
#include "../storage/store.h"

struct service
{
    char name[HEALTH_NAME_MAX];
    int up;
};

struct child_metrics
{
    struct follower *f;
    uint64_t child_id;
    struct metrics_http *http;
    pthread_mutex_t mu; /* guards the copy of the checks below */
    size_t n;
    struct service sv[HEALTH_MAX_CHECKS];
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The last contact with a parent: this run's, else the cache's record. */
static uint64_t last_contact_ms(struct follower *f)
{
    uint64_t contact = follower_contact_ms(f);
    struct store_read *r;
    struct store_meta meta;
    if (contact == 0 && store_read_begin(follower_store(f), &r) == 0) {
        if (store_read_meta(r, &meta) == 0) {
            contact = meta.contact_ms;
        }
        store_read_end(r);
    }
    return contact;
}

static void render(struct child_metrics *m, struct mtext *t)
{
    struct service sv[HEALTH_MAX_CHECKS];
    int following = follower_state(m->f) == FOLLOWER_FOLLOWING;
    uint64_t contact = last_contact_ms(m->f);
    uint64_t now = wall_ms();
    uint64_t stale =
        following || contact == 0 || contact > now ? 0 : now - contact;
    mtext_family(t, "clusterd_child_id", "gauge", "This child's id.");
    mtext_printf(t, "clusterd_child_id %" PRIu64 "\n", m->child_id);
    mtext_family(t, "clusterd_child_revision", "gauge",
                 "Revision of the child's cache.");
    mtext_printf(t, "clusterd_child_revision %" PRIu64 "\n",
                 follower_revision(m->f));
    mtext_gauge(t, "clusterd_child_state",
                "1 following (a parent stream is live), 0 degraded (serving "
                "the cache alone).",
                following);
    mtext_gauge(t, "clusterd_child_staleness_seconds",
                "Time since the last contact with a parent while degraded; 0 "
                "while following.",
                (double)stale / 1000);
    mtext_gauge(t, "clusterd_child_last_contact_timestamp_seconds",
                "Wall-clock time of the last frame from a parent (0: never).",
                (double)contact / 1000);

    pthread_mutex_lock(&m->mu);
    size_t n = m->n;
    memcpy(sv, m->sv, n * sizeof *sv);
    pthread_mutex_unlock(&m->mu);
    unsigned up = 0;
    mtext_family(t, "clusterd_child_service_up", "gauge",
                 "1 if the service's check passed at its last run, else 0.");
    for (size_t i = 0; i < n; i++) {
        /* Check names are letters, digits, '-', '_', '.' (health.h). */
        if (mtext_label_ok(sv[i].name)) {
            mtext_printf(t, "clusterd_child_service_up{name=\"%s\"} %d\n",
                         sv[i].name, sv[i].up);
        }
        up += sv[i].up != 0;
    }
    mtext_family(t, "clusterd_child_services", "gauge",
                 "Configured checks by their last result.");
    mtext_printf(t, "clusterd_child_services{state=\"up\"} %u\n", up);
    mtext_printf(t, "clusterd_child_services{state=\"down\"} %zu\n", n - up);
    mtext_process(t);
}

static unsigned handler(void *arg, const char *path, struct mtext *body)
{
    struct child_metrics *m = arg;
    if (strcmp(path, "/metrics") == 0) {
        render(m, body);
        return MHD_HTTP_OK;
    }
    if (strcmp(path, "/healthz") == 0) {
        mtext_printf(body, "ok\n");
        return MHD_HTTP_OK;
    }
    if (strcmp(path, "/readyz") == 0) {
        /* The cache is open (it is for as long as this server runs):
         * programs on the child can read it, following or not. */
        mtext_printf(body, "ready: %s at revision %" PRIu64 "\n",
                     follower_state(m->f) == FOLLOWER_FOLLOWING ? "following"
                                                                : "degraded",
                     follower_revision(m->f));
        return MHD_HTTP_OK;
    }
    mtext_printf(body, "not found; try /metrics, /healthz or /readyz\n");
    return MHD_HTTP_NOT_FOUND;
}

void child_metrics_services(struct child_metrics *m, const struct health *h)
{
    if (m == NULL) {
        return;
    }
    pthread_mutex_lock(&m->mu);
    m->n = h->n < HEALTH_MAX_CHECKS ? h->n : HEALTH_MAX_CHECKS;
    for (size_t i = 0; i < m->n; i++) {
        snprintf(m->sv[i].name, sizeof m->sv[i].name, "%s", h->checks[i].name);
        m->sv[i].up = h->checks[i].up != 0;
    }
    pthread_mutex_unlock(&m->mu);
}

int child_metrics_start(const char *addr,
                        struct follower *f,
                        uint64_t child_id,
                        const struct health *h,
                        struct child_metrics **out)
{
    struct child_metrics *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return -ENOMEM;
    }
    m->f = f;
    m->child_id = child_id;
    pthread_mutex_init(&m->mu, NULL);
    child_metrics_services(m, h);
    int rc = metrics_http_start(addr, handler, m, &m->http);
    if (rc != 0) {
        pthread_mutex_destroy(&m->mu);
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void child_metrics_stop(struct child_metrics *m)
{
    if (m == NULL) {
        return;
    }
    metrics_http_stop(m->http);
    pthread_mutex_destroy(&m->mu);
    free(m);
}
