/*
 * msg_diff.h - deep comparison of codec messages, for tests and fuzzers.
 *
 * Shared by tests/unit/test_codec.c and tests/fuzz/fuzz_frame.c so that the
 * unit tests and the fuzzer hold the codec to the same idea of "equal".
 * Each function returns NULL when its two arguments are equal, or a
 * description of the first difference ("u.changes.events[2].kv.value"), so
 * that a failing test can say where it failed.  The description lives in a
 * static buffer: it is valid until the next call, and not thread-safe.
 *
 * Equal means: same type and scalars, byte-equal buffers (a NULL and an
 * empty buffer are equal), equal strings (NULL equals only NULL), and
 * flags equal as truth values, since the codec carries them as booleans.
 */
#ifndef CD_TESTS_MSG_DIFF_H
#define CD_TESTS_MSG_DIFF_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "proto/codec.h"

static char msg_diff_where[256];

static inline const char *msg_diff_at(const char *prefix,
                                      const char *field,
                                      size_t index)
{
    if (index == (size_t)-1) {
        snprintf(msg_diff_where, sizeof(msg_diff_where), "%s%s", prefix, field);
    } else {
        snprintf(msg_diff_where, sizeof(msg_diff_where), "%s[%zu]%s", prefix,
                 index, field);
    }
    return msg_diff_where;
}

static inline bool msg_diff_buf_eq(struct cd_buf a, struct cd_buf b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static inline bool msg_diff_str_eq(const char *a, const char *b)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    return strcmp(a, b) == 0;
}

static inline bool msg_diff_flag_eq(int a, int b)
{
    return !a == !b;
}

/* Compare two ops; name is the path of the op for the report. */
static inline const char *op_diff(const char *name,
                                  const struct cd_op *a,
                                  const struct cd_op *b)
{
    char path[128];
    size_t i;

    if (a->type != b->type) {
        return msg_diff_at(name, ".type", (size_t)-1);
    }
    if (a->client_id != b->client_id) {
        return msg_diff_at(name, ".client_id", (size_t)-1);
    }
    if (a->seq != b->seq) {
        return msg_diff_at(name, ".seq", (size_t)-1);
    }
    if (!msg_diff_buf_eq(a->key, b->key)) {
        return msg_diff_at(name, ".key", (size_t)-1);
    }
    if (!msg_diff_buf_eq(a->value, b->value)) {
        return msg_diff_at(name, ".value", (size_t)-1);
    }
    if (a->revision != b->revision) {
        return msg_diff_at(name, ".revision", (size_t)-1);
    }
    if (a->child_id != b->child_id) {
        return msg_diff_at(name, ".child_id", (size_t)-1);
    }
    if (a->log_seq != b->log_seq) {
        return msg_diff_at(name, ".log_seq", (size_t)-1);
    }
    if (a->log_time_ms != b->log_time_ms) {
        return msg_diff_at(name, ".log_time_ms", (size_t)-1);
    }
    if (a->n_compares != b->n_compares) {
        return msg_diff_at(name, ".n_compares", (size_t)-1);
    }
    for (i = 0; i < a->n_compares; i++) {
        const struct cd_compare *x = &a->compares[i];
        const struct cd_compare *y = &b->compares[i];

        snprintf(path, sizeof(path), "%s.compares", name);
        if (!msg_diff_buf_eq(x->key, y->key)) {
            return msg_diff_at(path, ".key", i);
        }
        if (x->target != y->target) {
            return msg_diff_at(path, ".target", i);
        }
        if (x->result != y->result) {
            return msg_diff_at(path, ".result", i);
        }
        if (!msg_diff_buf_eq(x->value, y->value)) {
            return msg_diff_at(path, ".value", i);
        }
        if (x->number != y->number) {
            return msg_diff_at(path, ".number", i);
        }
    }
    if (a->n_then != b->n_then) {
        return msg_diff_at(name, ".n_then", (size_t)-1);
    }
    for (i = 0; i < a->n_then; i++) {
        const char *d;

        snprintf(path, sizeof(path), "%s.then_ops[%zu]", name, i);
        d = op_diff(path, &a->then_ops[i], &b->then_ops[i]);
        if (d != NULL) {
            return d;
        }
    }
    if (a->n_else != b->n_else) {
        return msg_diff_at(name, ".n_else", (size_t)-1);
    }
    for (i = 0; i < a->n_else; i++) {
        const char *d;

        snprintf(path, sizeof(path), "%s.else_ops[%zu]", name, i);
        d = op_diff(path, &a->else_ops[i], &b->else_ops[i]);
        if (d != NULL) {
            return d;
        }
    }
    return NULL;
}

static inline const char *batch_diff(const char *name,
                                     const struct cd_batch *a,
                                     const struct cd_batch *b)
{
    char path[128];
    size_t i;

    if (a->time_ms != b->time_ms) {
        return msg_diff_at(name, ".time_ms", (size_t)-1);
    }
    if (a->n_ops != b->n_ops) {
        return msg_diff_at(name, ".n_ops", (size_t)-1);
    }
    for (i = 0; i < a->n_ops; i++) {
        const char *d;

        snprintf(path, sizeof(path), "%s.ops[%zu]", name, i);
        d = op_diff(path, &a->ops[i], &b->ops[i]);
        if (d != NULL) {
            return d;
        }
    }
    return NULL;
}

static inline const char *kv_diff(const char *name,
                                  size_t i,
                                  const struct cd_kv *a,
                                  const struct cd_kv *b)
{
    if (!msg_diff_buf_eq(a->key, b->key)) {
        return msg_diff_at(name, ".key", i);
    }
    if (!msg_diff_buf_eq(a->value, b->value)) {
        return msg_diff_at(name, ".value", i);
    }
    if (a->create_rev != b->create_rev) {
        return msg_diff_at(name, ".create_rev", i);
    }
    if (a->mod_rev != b->mod_rev) {
        return msg_diff_at(name, ".mod_rev", i);
    }
    if (a->version != b->version) {
        return msg_diff_at(name, ".version", i);
    }
    return NULL;
}

/* Backup records: every field; the texts held in place compare as
 * strings. */
static inline const char *backup_schedule_diff(
    const char *name,
    const struct cd_backup_schedule *a,
    const struct cd_backup_schedule *b)
{
    if (a->interval_s != b->interval_s) {
        return msg_diff_at(name, ".interval_s", (size_t)-1);
    }
    if (a->retain != b->retain) {
        return msg_diff_at(name, ".retain", (size_t)-1);
    }
    if (!msg_diff_flag_eq(a->has_at, b->has_at) ||
        (a->has_at && a->at_minute != b->at_minute)) {
        return msg_diff_at(name, ".at_minute", (size_t)-1);
    }
    if (a->set_ms != b->set_ms) {
        return msg_diff_at(name, ".set_ms", (size_t)-1);
    }
    if (strcmp(a->dir, b->dir) != 0) {
        return msg_diff_at(name, ".dir", (size_t)-1);
    }
    return NULL;
}

static inline const char *backup_result_diff(const char *name,
                                             const struct cd_backup_result *a,
                                             const struct cd_backup_result *b)
{
    const uint64_t x[] = {a->time_ms,  a->node_id, a->revision,
                          a->bytes,    a->keys,    a->duration_ms,
                          a->failures, a->pruned,  a->last_ok_ms};
    const uint64_t y[] = {b->time_ms,  b->node_id, b->revision,
                          b->bytes,    b->keys,    b->duration_ms,
                          b->failures, b->pruned,  b->last_ok_ms};
    static const char *const names[] = {".time_ms",  ".node_id", ".revision",
                                        ".bytes",    ".keys",    ".duration_ms",
                                        ".failures", ".pruned",  ".last_ok_ms"};

    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++) {
        if (x[i] != y[i]) {
            return msg_diff_at(name, names[i], (size_t)-1);
        }
    }
    if (!msg_diff_flag_eq(a->ok, b->ok)) {
        return msg_diff_at(name, ".ok", (size_t)-1);
    }
    if (strcmp(a->file, b->file) != 0) {
        return msg_diff_at(name, ".file", (size_t)-1);
    }
    if (strcmp(a->last_ok_file, b->last_ok_file) != 0) {
        return msg_diff_at(name, ".last_ok_file", (size_t)-1);
    }
    if (strcmp(a->error, b->error) != 0) {
        return msg_diff_at(name, ".error", (size_t)-1);
    }
    return NULL;
}

static inline const char *child_info_diff(const char *name,
                                          const struct cd_child_info *a,
                                          const struct cd_child_info *b)
{
    char path[128];
    size_t i;

    if (a->id != b->id) {
        return msg_diff_at(name, ".id", (size_t)-1);
    }
    if (!msg_diff_str_eq(a->hostname, b->hostname)) {
        return msg_diff_at(name, ".hostname", (size_t)-1);
    }
    if (a->n_addresses != b->n_addresses) {
        return msg_diff_at(name, ".n_addresses", (size_t)-1);
    }
    snprintf(path, sizeof(path), "%s.addresses", name);
    for (i = 0; i < a->n_addresses; i++) {
        if (!msg_diff_str_eq(a->addresses[i], b->addresses[i])) {
            return msg_diff_at(path, "", i);
        }
    }
    if (!msg_diff_str_eq(a->mac, b->mac)) {
        return msg_diff_at(name, ".mac", (size_t)-1);
    }
    if (!msg_diff_str_eq(a->os, b->os)) {
        return msg_diff_at(name, ".os", (size_t)-1);
    }
    if (!msg_diff_str_eq(a->app_version, b->app_version)) {
        return msg_diff_at(name, ".app_version", (size_t)-1);
    }
    if (a->joined_ms != b->joined_ms) {
        return msg_diff_at(name, ".joined_ms", (size_t)-1);
    }
    return NULL;
}

/* Compare n services; name is the path of the array. */
static inline const char *services_diff(const char *name,
                                        const struct cd_service_health *a,
                                        const struct cd_service_health *b,
                                        size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (!msg_diff_str_eq(a[i].name, b[i].name)) {
            return msg_diff_at(name, ".name", i);
        }
        if (!msg_diff_flag_eq(a[i].up, b[i].up)) {
            return msg_diff_at(name, ".up", i);
        }
        if (!msg_diff_str_eq(a[i].detail, b[i].detail)) {
            return msg_diff_at(name, ".detail", i);
        }
    }
    return NULL;
}

static inline const char *child_status_diff(const char *name,
                                            const struct cd_child_status *a,
                                            const struct cd_child_status *b)
{
    char path[128];

    snprintf(path, sizeof(path), "%s.info", name);
    if (child_info_diff(path, &a->info, &b->info) != NULL) {
        return msg_diff_where;
    }
    if (!msg_diff_str_eq(a->state, b->state)) {
        return msg_diff_at(name, ".state", (size_t)-1);
    }
    if (!msg_diff_flag_eq(a->has_last_seen, b->has_last_seen)) {
        return msg_diff_at(name, ".has_last_seen", (size_t)-1);
    }
    if (a->has_last_seen && a->last_seen_ms_ago != b->last_seen_ms_ago) {
        return msg_diff_at(name, ".last_seen_ms_ago", (size_t)-1);
    }
    if (a->revision != b->revision) {
        return msg_diff_at(name, ".revision", (size_t)-1);
    }
    if (a->lag != b->lag) {
        return msg_diff_at(name, ".lag", (size_t)-1);
    }
    if (a->n_services != b->n_services) {
        return msg_diff_at(name, ".n_services", (size_t)-1);
    }
    snprintf(path, sizeof(path), "%s.services", name);
    if (services_diff(path, a->services, b->services, a->n_services) != NULL) {
        return msg_diff_where;
    }
    if (a->staleness_ms != b->staleness_ms) {
        return msg_diff_at(name, ".staleness_ms", (size_t)-1);
    }
    return NULL;
}

#define MSG_DIFF_NUM(field)                           \
    if (a->u.field != b->u.field) {                   \
        return msg_diff_at("u.", #field, (size_t)-1); \
    }
#define MSG_DIFF_FLAG(field)                          \
    if (!msg_diff_flag_eq(a->u.field, b->u.field)) {  \
        return msg_diff_at("u.", #field, (size_t)-1); \
    }
#define MSG_DIFF_BUF(field)                           \
    if (!msg_diff_buf_eq(a->u.field, b->u.field)) {   \
        return msg_diff_at("u.", #field, (size_t)-1); \
    }
#define MSG_DIFF_STR(field)                           \
    if (!msg_diff_str_eq(a->u.field, b->u.field)) {   \
        return msg_diff_at("u.", #field, (size_t)-1); \
    }

static inline const char *msg_diff(const struct cd_msg *a,
                                   const struct cd_msg *b)
{
    size_t i;
    const char *d;

    if (a->type != b->type) {
        return "type";
    }
    if (a->request_id != b->request_id) {
        return "request_id";
    }
    if (!msg_diff_flag_eq(a->has_cluster_id, b->has_cluster_id)) {
        return "has_cluster_id";
    }
    if (a->has_cluster_id && a->cluster_id != b->cluster_id) {
        return "cluster_id";
    }
    switch (a->type) {
        case CD_MSG_ERROR:
            MSG_DIFF_NUM(error.code);
            MSG_DIFF_STR(error.name);
            MSG_DIFF_STR(error.message);
            MSG_DIFF_STR(error.leader);
            break;
        case CD_MSG_WRITE:
            return op_diff("u.write.op", &a->u.write.op, &b->u.write.op);
        case CD_MSG_WRITE_RESP:
            MSG_DIFF_NUM(write_resp.revision);
            MSG_DIFF_FLAG(write_resp.succeeded);
            MSG_DIFF_NUM(write_resp.deleted);
            break;
        case CD_MSG_GET:
            MSG_DIFF_BUF(get.key);
            MSG_DIFF_FLAG(get.serializable);
            break;
        case CD_MSG_RANGE:
            MSG_DIFF_BUF(range.prefix);
            MSG_DIFF_BUF(range.start);
            MSG_DIFF_NUM(range.limit);
            MSG_DIFF_FLAG(range.serializable);
            MSG_DIFF_FLAG(range.keys_only);
            break;
        case CD_MSG_RANGE_RESP:
            MSG_DIFF_NUM(range_resp.n_kvs);
            for (i = 0; i < a->u.range_resp.n_kvs; i++) {
                d = kv_diff("u.range_resp.kvs", i, &a->u.range_resp.kvs[i],
                            &b->u.range_resp.kvs[i]);
                if (d != NULL) {
                    return d;
                }
            }
            MSG_DIFF_FLAG(range_resp.more);
            MSG_DIFF_NUM(range_resp.revision);
            MSG_DIFF_FLAG(range_resp.serializable);
            break;
        case CD_MSG_WATCH:
            MSG_DIFF_NUM(watch.since);
            MSG_DIFF_BUF(watch.prefix);
            break;
        case CD_MSG_CHANGES:
            MSG_DIFF_NUM(changes.n_events);
            for (i = 0; i < a->u.changes.n_events; i++) {
                const struct cd_event *x = &a->u.changes.events[i];
                const struct cd_event *y = &b->u.changes.events[i];

                if (x->type != y->type) {
                    return msg_diff_at("u.changes.events", ".type", i);
                }
                if (x->sub != y->sub) {
                    return msg_diff_at("u.changes.events", ".sub", i);
                }
                d = kv_diff("u.changes.events.kv", i, &x->kv, &y->kv);
                if (d != NULL) {
                    return d;
                }
            }
            MSG_DIFF_NUM(changes.revision);
            MSG_DIFF_FLAG(changes.compacted);
            MSG_DIFF_NUM(changes.compact_rev);
            MSG_DIFF_NUM(changes.epoch);
            break;
        case CD_MSG_STATUS_RESP:
            MSG_DIFF_NUM(status_resp.id);
            MSG_DIFF_NUM(status_resp.leader_id);
            MSG_DIFF_STR(status_resp.leader_api);
            MSG_DIFF_NUM(status_resp.term);
            MSG_DIFF_NUM(status_resp.revision);
            MSG_DIFF_NUM(status_resp.applied_index);
            MSG_DIFF_NUM(status_resp.commit_index);
            MSG_DIFF_STR(status_resp.state);
            MSG_DIFF_STR(status_resp.version);
            MSG_DIFF_NUM(status_resp.epoch);
            break;
        case CD_MSG_MEMBERS_RESP:
            MSG_DIFF_NUM(members_resp.n_members);
            for (i = 0; i < a->u.members_resp.n_members; i++) {
                const struct cd_member *x = &a->u.members_resp.members[i];
                const struct cd_member *y = &b->u.members_resp.members[i];

                if (x->id != y->id) {
                    return msg_diff_at("u.members_resp.members", ".id", i);
                }
                if (!msg_diff_str_eq(x->address, y->address)) {
                    return msg_diff_at("u.members_resp.members", ".address", i);
                }
                if (x->role != y->role) {
                    return msg_diff_at("u.members_resp.members", ".role", i);
                }
                if (!msg_diff_str_eq(x->api_address, y->api_address)) {
                    return msg_diff_at("u.members_resp.members", ".api_address",
                                       i);
                }
                if (!msg_diff_flag_eq(x->leader, y->leader)) {
                    return msg_diff_at("u.members_resp.members", ".leader", i);
                }
                if (!msg_diff_flag_eq(x->reachable, y->reachable)) {
                    return msg_diff_at("u.members_resp.members", ".reachable",
                                       i);
                }
            }
            break;
        case CD_MSG_MEMBER_CHANGE:
            MSG_DIFF_NUM(member_change.action);
            MSG_DIFF_NUM(member_change.id);
            MSG_DIFF_STR(member_change.address);
            MSG_DIFF_NUM(member_change.role);
            MSG_DIFF_STR(member_change.token);
            MSG_DIFF_STR(member_change.api_address);
            break;
        case CD_MSG_TRANSFER:
            MSG_DIFF_NUM(transfer.to);
            break;
        case CD_MSG_SNAPSHOT_CHUNK:
            MSG_DIFF_NUM(snapshot_chunk.offset);
            MSG_DIFF_BUF(snapshot_chunk.data);
            MSG_DIFF_FLAG(snapshot_chunk.last);
            MSG_DIFF_NUM(snapshot_chunk.revision);
            break;
        case CD_MSG_HELLO:
            MSG_DIFF_NUM(hello.cluster_id);
            MSG_DIFF_NUM(hello.child_id);
            MSG_DIFF_NUM(hello.revision);
            MSG_DIFF_STR(hello.hostname);
            MSG_DIFF_STR(hello.version);
            MSG_DIFF_NUM(hello.registered_rev);
            MSG_DIFF_NUM(hello.epoch);
            break;
        case CD_MSG_LOG_UPLOAD:
            MSG_DIFF_NUM(log_upload.child_id);
            MSG_DIFF_NUM(log_upload.n_records);
            for (i = 0; i < a->u.log_upload.n_records; i++) {
                const struct cd_log_record *x = &a->u.log_upload.records[i];
                const struct cd_log_record *y = &b->u.log_upload.records[i];

                if (x->seq != y->seq) {
                    return msg_diff_at("u.log_upload.records", ".seq", i);
                }
                if (x->time_ms != y->time_ms) {
                    return msg_diff_at("u.log_upload.records", ".time_ms", i);
                }
                if (!msg_diff_buf_eq(x->record, y->record)) {
                    return msg_diff_at("u.log_upload.records", ".record", i);
                }
            }
            break;
        case CD_MSG_LOG_ACK:
            MSG_DIFF_NUM(log_ack.committed_seq);
            break;
        case CD_MSG_COMMAND:
            return batch_diff("u.command", &a->u.command, &b->u.command);
        case CD_MSG_TOKEN:
            MSG_DIFF_NUM(token.ttl_s);
            break;
        case CD_MSG_TOKEN_RESP:
            MSG_DIFF_STR(token_resp.token);
            MSG_DIFF_NUM(token_resp.expires_ms);
            break;
        case CD_MSG_CHILD_JOIN:
            MSG_DIFF_STR(child_join.token);
            return child_info_diff("u.child_join.info", &a->u.child_join.info,
                                   &b->u.child_join.info);
        case CD_MSG_CHILD_JOIN_RESP:
            MSG_DIFF_NUM(child_join_resp.child_id);
            MSG_DIFF_NUM(child_join_resp.cluster_id);
            MSG_DIFF_NUM(child_join_resp.registered_rev);
            break;
        case CD_MSG_CHILD_LEAVE:
            MSG_DIFF_NUM(child_leave.child_id);
            break;
        case CD_MSG_CHILD_REPORT:
            MSG_DIFF_NUM(child_report.child_id);
            MSG_DIFF_NUM(child_report.revision);
            MSG_DIFF_STR(child_report.state);
            MSG_DIFF_NUM(child_report.n_services);
            d = services_diff(
                "u.child_report.services", a->u.child_report.services,
                b->u.child_report.services, a->u.child_report.n_services);
            if (d != NULL) {
                return d;
            }
            MSG_DIFF_NUM(child_report.staleness_ms);
            break;
        case CD_MSG_CHILDREN_RESP:
            MSG_DIFF_NUM(children_resp.n_children);
            for (i = 0; i < a->u.children_resp.n_children; i++) {
                char path[64];

                snprintf(path, sizeof(path), "u.children_resp.children[%zu]",
                         i);
                d = child_status_diff(path, &a->u.children_resp.children[i],
                                      &b->u.children_resp.children[i]);
                if (d != NULL) {
                    return d;
                }
            }
            MSG_DIFF_NUM(children_resp.revision);
            break;
        case CD_MSG_BACKUP:
            MSG_DIFF_FLAG(backup.now);
            MSG_DIFF_FLAG(backup.has_schedule);
            if (a->u.backup.has_schedule) {
                return backup_schedule_diff("u.backup.schedule",
                                            &a->u.backup.schedule,
                                            &b->u.backup.schedule);
            }
            break;
        case CD_MSG_BACKUP_RESP:
            MSG_DIFF_NUM(backup_resp.next_ms);
            MSG_DIFF_FLAG(backup_resp.running);
            MSG_DIFF_FLAG(backup_resp.has_schedule);
            MSG_DIFF_FLAG(backup_resp.has_last);
            if (a->u.backup_resp.has_schedule &&
                (d = backup_schedule_diff(
                     "u.backup_resp.schedule", &a->u.backup_resp.schedule,
                     &b->u.backup_resp.schedule)) != NULL) {
                return d;
            }
            if (a->u.backup_resp.has_last) {
                return backup_result_diff("u.backup_resp.last",
                                          &a->u.backup_resp.last,
                                          &b->u.backup_resp.last);
            }
            break;
        case CD_MSG_CHILDREN:
        case CD_MSG_SHUTDOWN:
        case CD_MSG_OK:
        case CD_MSG_STATUS:
        case CD_MSG_MEMBERS:
        case CD_MSG_NONE:
            break;
        case CD_MSG_SNAPSHOT:
            MSG_DIFF_FLAG(snapshot.recent);
            break;
    }
    return NULL;
}

#undef MSG_DIFF_NUM
#undef MSG_DIFF_FLAG
#undef MSG_DIFF_BUF
#undef MSG_DIFF_STR

#endif
