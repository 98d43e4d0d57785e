/*
 * server_backup.c - the leader takes the scheduled backups (backup.h).
 *
 * The schedule is a record in the store (/cluster/backup/schedule), set
 * through the API (BACKUP, `clusterctl backup schedule`), so it survives
 * leader changes and restores like any key.  On each housekeeping tick the
 * leader reads it and the last result (/cluster/backup/last) and, when a
 * backup is due, runs backup_take() on libuv's thread pool: the loop never
 * copies or writes the store itself.  The result is written back to the
 * store through Raft, so that the next leader goes on from it and every
 * parent reports it (`clusterctl backup status`, /metrics).  A backup that
 * fails (a full disk, a directory that cannot be written) is logged and
 * recorded, and tried again later (backup.h); it never stops the node.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "../lib/log.h"
#include "backup.h"
#include "metrics.h"
#include "server_int.h"

#define SCHEDULE_KEY "/cluster/backup/schedule"
#define LAST_KEY "/cluster/backup/last"
#define MAX_INTERVAL_S (366ull * 86400ull)
#define MAX_RETAIN 100000u

struct backup_job
{
    uv_work_t work;
    struct server *s;
    char dir[CD_BACKUP_DIR_MAX];
    unsigned retain;
    uint64_t started_ms; /* wall clock */
    uint64_t started_ns; /* uv_hrtime */
    int has_prev;
    struct cd_backup_result prev; /* the record before this attempt */
    int rc;
    struct backup_outcome out;
};

/* The records; *has_* says which exist.  A record that does not decode is
 * taken as absent (and logged): a schedule can always be set again. */
static void read_records(struct server *s,
                         int *has_schedule,
                         struct cd_backup_schedule *bs,
                         int *has_last,
                         struct cd_backup_result *last)
{
    struct store_read *r;
    struct store_kv kv;
    *has_schedule = *has_last = 0;
    if (store_read_begin(s->store, &r) != 0) {
        return;
    }
    if (bs != NULL &&
        store_read_get(r, SCHEDULE_KEY, strlen(SCHEDULE_KEY), &kv) == 0) {
        int rc = codec_backup_schedule_decode(kv.value, kv.value_len, bs);
        *has_schedule = rc == 0;
        if (rc != 0) {
            log_warn("backup", "%s does not decode: %s", SCHEDULE_KEY,
                     cd_strerror(rc));
        }
    }
    if (last != NULL &&
        store_read_get(r, LAST_KEY, strlen(LAST_KEY), &kv) == 0) {
        *has_last =
            codec_backup_result_decode(kv.value, kv.value_len, last) == 0;
    }
    store_read_end(r);
}

static void record_result(struct server *s, const struct cd_backup_result *br)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = codec_backup_result_encode(br, &buf, &len);
    if (rc == 0) {
        struct cd_op op = {.type = CD_OP_PUT,
                           .key = {LAST_KEY, strlen(LAST_KEY)},
                           .value = {buf, len}};
        /* The entry holds a copy: buf can go at once. */
        rc = s->lead == LEAD_READY ? server__propose_op(s, &op) : CD_ENOTLEADER;
    }
    free(buf);
    if (rc != 0) {
        log_warn("backup",
                 "the result could not be recorded (%s): the next leader "
                 "takes a backup of its own",
                 cd_strerror(rc));
    }
}

static void job_work(uv_work_t *w)
{
    struct backup_job *job = w->data;
    job->rc = backup_take(job->s->store, job->dir, job->s->cluster_id,
                          job->retain, job->started_ms, &job->out);
}

static void job_done(uv_work_t *w, int status)
{
    struct backup_job *job = w->data;
    struct server *s = job->s;
    struct cd_backup_result br;
    s->backup_job = NULL;
    if (status != 0 && job->rc == 0) {
        job->rc = status; /* cancelled: never ran */
        snprintf(job->out.error, sizeof job->out.error, "not run: %s",
                 cd_strerror(status));
    }
    memset(&br, 0, sizeof br);
    br.time_ms = job->started_ms;
    br.node_id = s->id;
    br.duration_ms = (uv_hrtime() - job->started_ns) / 1000000;
    if (job->has_prev) {
        br.last_ok_ms = job->prev.last_ok_ms;
        snprintf(br.last_ok_file, sizeof br.last_ok_file, "%s",
                 job->prev.last_ok_file);
    }
    snprintf(br.error, sizeof br.error, "%s", job->out.error);
    if (job->rc == 0) {
        br.ok = 1;
        snprintf(br.file, sizeof br.file, "%s", job->out.file);
        br.revision = job->out.info.meta.revision;
        br.bytes = job->out.file_bytes;
        br.keys = job->out.info.keys;
        br.pruned = job->out.pruned;
        br.last_ok_ms = br.time_ms;
        snprintf(br.last_ok_file, sizeof br.last_ok_file, "%s", br.file);
        log_info("backup",
                 "%s: revision %" PRIu64 ", %" PRIu64 " keys, %" PRIu64
                 " bytes, checked, in %" PRIu64 " ms; %u old ones deleted%s%s",
                 br.file, br.revision, br.keys, br.bytes, br.duration_ms,
                 br.pruned, br.error[0] != '\0' ? "; " : "", br.error);
    } else {
        br.failures =
            (job->has_prev && !job->prev.ok ? job->prev.failures : 0) + 1;
        log_error("backup",
                  "backup into %s failed (%u in a row): %s; the node goes on, "
                  "and tries again in %u s at the latest",
                  job->dir, br.failures, br.error, BACKUP_RETRY_MS / 1000);
    }
    record_result(s, &br);
    free(job);
    server__work_done(s);
}

/* Start a backup into bs's directory now.  0, CD_EBUSY (one runs), or the
 * reason it could not start. */
static int start_job(struct server *s,
                     const struct cd_backup_schedule *bs,
                     int has_last,
                     const struct cd_backup_result *last)
{
    if (s->backup_job != NULL) {
        return CD_EBUSY;
    }
    if (s->stopping || s->lead != LEAD_READY) {
        return CD_ENOTLEADER;
    }
    struct backup_job *job = calloc(1, sizeof *job);
    if (job == NULL) {
        return -ENOMEM;
    }
    job->s = s;
    snprintf(job->dir, sizeof job->dir, "%s", bs->dir);
    job->retain = bs->retain;
    job->started_ms = server__wall_ms();
    job->started_ns = uv_hrtime();
    job->has_prev = has_last;
    if (has_last) {
        job->prev = *last;
    }
    job->work.data = job;
    int rc = uv_queue_work(s->loop, &job->work, job_work, job_done);
    if (rc != 0) {
        free(job);
        return rc;
    }
    s->backup_job = job;
    log_info("backup", "taking a backup into %s", bs->dir);
    return 0;
}

void server__backup_tick(struct server *s)
{
    struct cd_backup_schedule bs;
    struct cd_backup_result last;
    int has_bs, has_last;
    if (s->lead != LEAD_READY || s->stopping || s->backup_job != NULL) {
        return;
    }
    read_records(s, &has_bs, &bs, &has_last, &last);
    if (!has_bs || bs.dir[0] == '\0') {
        s->backup_now = 0;
        return;
    }
    uint64_t next = backup_next_ms(&bs, has_last ? &last : NULL);
    if (s->backup_now || (next != 0 && server__wall_ms() >= next)) {
        s->backup_now = 0;
        start_job(s, &bs, has_last, &last);
    }
}

static int schedule_valid(const struct cd_backup_schedule *bs, const char **why)
{
    if (bs->interval_s > MAX_INTERVAL_S) {
        *why = "the interval is at most 366 days";
    } else if (bs->interval_s > 0 && bs->dir[0] == '\0') {
        *why = "a directory is needed";
    } else if (bs->dir[0] != '\0' && bs->dir[0] != '/') {
        *why = "the directory must be an absolute path";
    } else if (bs->retain > MAX_RETAIN) {
        *why = "retain is at most 100000";
    } else if (bs->has_at && bs->at_minute >= 24 * 60) {
        *why = "the time of day is 00:00 to 23:59";
    } else {
        return 0;
    }
    return -EINVAL;
}

static void send_backup_status(struct conn *c, uint64_t request_id)
{
    struct server *s = server__conn_server(c);
    struct cd_msg m;
    memset(&m, 0, sizeof m);
    m.request_id = request_id;
    m.type = CD_MSG_BACKUP_RESP;
    read_records(s, &m.u.backup_resp.has_schedule, &m.u.backup_resp.schedule,
                 &m.u.backup_resp.has_last, &m.u.backup_resp.last);
    if (m.u.backup_resp.has_schedule &&
        m.u.backup_resp.schedule.dir[0] != '\0') {
        m.u.backup_resp.next_ms = backup_next_ms(
            &m.u.backup_resp.schedule,
            m.u.backup_resp.has_last ? &m.u.backup_resp.last : NULL);
    }
    m.u.backup_resp.running = s->backup_job != NULL || s->backup_now;
    server__send(c, &m);
}

/* What a schedule's write points into. */
struct schedule_write
{
    size_t len;
    uint8_t value[];
};

int server__backup_request(struct conn *c, struct cd_msg *msg)
{
    struct server *s = server__conn_server(c);
    const char *why = NULL;
    /* The leader answers: it takes the backups, and it has every
     * committed record. */
    if (s->lead != LEAD_READY) {
        server__send_error(c, msg->request_id, CD_ENOTLEADER);
        return 0;
    }
    if (!msg->u.backup.has_schedule) {
        if (msg->u.backup.now) {
            struct cd_backup_schedule bs;
            struct cd_backup_result last;
            int has_bs, has_last;
            read_records(s, &has_bs, &bs, &has_last, &last);
            if (!has_bs || bs.dir[0] == '\0') {
                server__send_error(c, msg->request_id, -ENOENT);
                return 0;
            }
            int rc = start_job(s, &bs, has_last, &last);
            if (rc != 0 && rc != CD_EBUSY) {
                server__send_error(c, msg->request_id, rc);
                return 0;
            }
        }
        send_backup_status(c, msg->request_id);
        return 0;
    }
    struct cd_backup_schedule bs = msg->u.backup.schedule;
    if (schedule_valid(&bs, &why) != 0) {
        log_info("backup", "schedule refused: %s", why);
        server__send_error(c, msg->request_id, -EINVAL);
        return 0;
    }
    bs.set_ms = server__wall_ms();
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = codec_backup_schedule_encode(&bs, &buf, &len);
    struct schedule_write *w = rc == 0 ? malloc(sizeof *w + len) : NULL;
    if (w == NULL) {
        free(buf);
        server__send_error(c, msg->request_id, rc != 0 ? rc : -ENOMEM);
        return 0;
    }
    memcpy(w->value, buf, len);
    w->len = len;
    free(buf);
    struct cd_op op = {.type = CD_OP_PUT,
                       .key = {SCHEDULE_KEY, strlen(SCHEDULE_KEY)},
                       .value = {w->value, w->len}};
    if (bs.interval_s == 0) {
        log_info("backup", "scheduled backups off");
    } else {
        log_info("backup",
                 "schedule: every %" PRIu64 " s%s into %s, keeping %u",
                 bs.interval_s, bs.has_at ? " (aligned on a time of day)" : "",
                 bs.dir, bs.retain);
    }
    s->backup_now = msg->u.backup.now;
    return server__queue_op(c, msg, &op, SERVER_WRITE_OK, 0, w);
}

void server__backup_stats(struct server *s, struct metrics_state *st)
{
    struct cd_backup_result last;
    int has_bs, has_last;
    read_records(s, &has_bs, NULL, &has_last, &last);
    st->backup_running = s->backup_job != NULL;
    if (!has_last) {
        return;
    }
    st->backup_recorded = 1;
    st->backup_last_ok = last.ok;
    st->backup_last_ms = last.time_ms;
    st->backup_last_ok_ms = last.last_ok_ms;
    st->backup_failures = last.failures;
    if (last.ok) {
        st->backup_last_bytes = last.bytes;
        st->backup_last_revision = last.revision;
        st->backup_last_duration_ms = last.duration_ms;
    }
}
