/*
 * codec.c - clusterd's wire format: frames, Envelope <-> struct cd_msg,
 * Command <-> struct cd_batch and ChildInfo <-> struct cd_child_info.
 *
 * This is the only file that includes the code protoc-c generates.  Both
 * directions go through the generated structs: decoding unpacks with
 * protobuf-c and then translates into the plain structs of codec.h and
 * lib/ops.h, checking everything protobuf-c does not (enum ranges, fields
 * an operation needs, bounds); encoding checks the same rules while it
 * builds temporary generated structs, then packs them.  The two directions
 * apply one set of rules, so whatever codec_encode() accepts,
 * codec_decode() accepts and gives back equal, with two normalisations:
 * flags come back as 0 or 1, and an empty buffer comes back with data NULL.
 *
 * Optional fields go on the wire when they are nonzero, or when the
 * operation reads them (a PUT's key, a COMPACT's revision): a receiver can
 * then tell "absent" from "zero" where it matters and reject the former.
 */
#include "codec.h"

#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/err.h"
#include "clusterd.pb-c.h"

/* --- framing ----------------------------------------------------------- */

void codec_reader_init(struct codec_reader *r, size_t max_frame)
{
    memset(r, 0, sizeof(*r));
    /* A zero maximum would refuse every frame; treat it as "the default"
     * so that a zeroed configuration still works. */
    r->max_frame = max_frame != 0 ? max_frame : CODEC_DEFAULT_MAX_FRAME;
}

void codec_reader_free(struct codec_reader *r)
{
    if (r == NULL) {
        return;
    }
    free(r->payload);
    r->payload = NULL;
    r->payload_len = 0;
    r->payload_have = 0;
    r->header_have = 0;
}

static uint32_t get_header(const uint8_t in[CODEC_HEADER_SIZE])
{
    return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 |
           (uint32_t)in[2] << 8 | (uint32_t)in[3];
}

void codec_put_header(uint8_t out[CODEC_HEADER_SIZE], uint32_t len)
{
    out[0] = (uint8_t)(len >> 24);
    out[1] = (uint8_t)(len >> 16);
    out[2] = (uint8_t)(len >> 8);
    out[3] = (uint8_t)len;
}

int codec_reader_feed(struct codec_reader *r,
                      const uint8_t *data,
                      size_t len,
                      size_t *consumed,
                      const uint8_t **payload,
                      size_t *payload_len)
{
    size_t used = 0;

    *consumed = 0;
    *payload = NULL;
    *payload_len = 0;
    if (r->failed) {
        return CD_EFRAMETOOBIG;
    }

    /* The frame handed out by the previous call was only lent until now. */
    if (r->header_have == CODEC_HEADER_SIZE &&
        r->payload_have == r->payload_len) {
        free(r->payload);
        r->payload = NULL;
        r->payload_len = 0;
        r->payload_have = 0;
        r->header_have = 0;
    }

    if (r->header_have < CODEC_HEADER_SIZE) {
        size_t want = CODEC_HEADER_SIZE - r->header_have;
        size_t n = len < want ? len : want;
        uint32_t frame_len;

        if (n > 0) {
            memcpy(r->header + r->header_have, data, n);
        }
        r->header_have += n;
        used += n;
        if (r->header_have < CODEC_HEADER_SIZE) {
            *consumed = used;
            return 0;
        }
        /* Check the announced length before allocating anything: a peer
         * must not be able to make us reserve 4 GiB with four bytes. */
        frame_len = get_header(r->header);
        if (frame_len > r->max_frame) {
            r->failed = 1;
            *consumed = used;
            return CD_EFRAMETOOBIG;
        }
        if (frame_len > 0) {
            r->payload = malloc(frame_len);
            if (r->payload == NULL) {
                /* Give back this call's header bytes: nothing is consumed,
                 * and the caller may feed the same data again. */
                r->header_have -= n;
                return -ENOMEM;
            }
        }
        r->payload_len = frame_len;
        r->payload_have = 0;
    }

    if (r->payload_have < r->payload_len) {
        size_t want = r->payload_len - r->payload_have;
        size_t n = len - used < want ? len - used : want;

        if (n > 0) {
            memcpy(r->payload + r->payload_have, data + used, n);
        }
        r->payload_have += n;
        used += n;
    }
    *consumed = used;
    if (r->payload_have < r->payload_len) {
        return 0;
    }
    /* A zero-length frame has no buffer; lend the header so that the
     * caller still gets a valid pointer. */
    *payload = r->payload != NULL ? r->payload : r->header;
    *payload_len = r->payload_len;
    return 1;
}

/* --- names and errors -------------------------------------------------- */

const char *codec_msg_type_name(enum cd_msg_type t)
{
    switch (t) {
        case CD_MSG_ERROR:
            return "ERROR";
        case CD_MSG_OK:
            return "OK";
        case CD_MSG_WRITE:
            return "WRITE";
        case CD_MSG_WRITE_RESP:
            return "WRITE_RESP";
        case CD_MSG_GET:
            return "GET";
        case CD_MSG_RANGE:
            return "RANGE";
        case CD_MSG_RANGE_RESP:
            return "RANGE_RESP";
        case CD_MSG_WATCH:
            return "WATCH";
        case CD_MSG_CHANGES:
            return "CHANGES";
        case CD_MSG_STATUS:
            return "STATUS";
        case CD_MSG_STATUS_RESP:
            return "STATUS_RESP";
        case CD_MSG_MEMBERS:
            return "MEMBERS";
        case CD_MSG_MEMBERS_RESP:
            return "MEMBERS_RESP";
        case CD_MSG_MEMBER_CHANGE:
            return "MEMBER_CHANGE";
        case CD_MSG_TRANSFER:
            return "TRANSFER";
        case CD_MSG_SNAPSHOT:
            return "SNAPSHOT";
        case CD_MSG_SNAPSHOT_CHUNK:
            return "SNAPSHOT_CHUNK";
        case CD_MSG_HELLO:
            return "HELLO";
        case CD_MSG_LOG_UPLOAD:
            return "LOG_UPLOAD";
        case CD_MSG_LOG_ACK:
            return "LOG_ACK";
        case CD_MSG_COMMAND:
            return "COMMAND";
        case CD_MSG_SHUTDOWN:
            return "SHUTDOWN";
        case CD_MSG_TOKEN:
            return "TOKEN";
        case CD_MSG_TOKEN_RESP:
            return "TOKEN_RESP";
        case CD_MSG_CHILD_JOIN:
            return "CHILD_JOIN";
        case CD_MSG_CHILD_JOIN_RESP:
            return "CHILD_JOIN_RESP";
        case CD_MSG_CHILD_LEAVE:
            return "CHILD_LEAVE";
        case CD_MSG_CHILD_REPORT:
            return "CHILD_REPORT";
        case CD_MSG_CHILDREN:
            return "CHILDREN";
        case CD_MSG_CHILDREN_RESP:
            return "CHILDREN_RESP";
        case CD_MSG_BACKUP:
            return "BACKUP";
        case CD_MSG_BACKUP_RESP:
            return "BACKUP_RESP";
        case CD_MSG_NONE:
            break;
    }
    return "UNKNOWN";
}

void codec_error_msg(struct cd_msg *m,
                     uint64_t request_id,
                     int code,
                     const char *leader)
{
    /* An error reply that says "success" is a bug in the caller. */
    assert(code < 0);
    memset(m, 0, sizeof(*m));
    m->request_id = request_id;
    m->type = CD_MSG_ERROR;
    m->u.error.code = code;
    m->u.error.name = cd_errname(code);
    m->u.error.message = cd_strerror(code);
    m->u.error.leader = leader;
}

/* --- rules shared by both directions ----------------------------------- */

static bool op_type_valid(int t)
{
    return t >= CD_OP_PUT && t <= CD_OP_LOG_APPEND;
}

/* Transaction branches hold plain key writes only: no nesting, and nothing
 * whose effect (compaction, log records) does not belong to one key. */
static bool txn_op_type_valid(int t)
{
    return t == CD_OP_PUT || t == CD_OP_DELETE || t == CD_OP_DELETE_PREFIX;
}

static bool cmp_target_valid(int t)
{
    return t >= CD_CMP_VALUE && t <= CD_CMP_EXISTS;
}

static bool cmp_result_valid(int r)
{
    return r >= CD_CMP_EQUAL && r <= CD_CMP_GREATER;
}

static bool event_type_valid(int t)
{
    return t == CD_EVENT_PUT || t == CD_EVENT_DELETE;
}

/* CD_ROLE_UNSET is not a wire value: it is the absence of the field. */
static bool role_valid(int r)
{
    return r >= CD_ROLE_VOTER && r <= CD_ROLE_SPARE;
}

static bool action_valid(int a)
{
    return a >= CD_MEMBER_ADD && a <= CD_MEMBER_ASSIGN;
}

/*
 * Which optional Op fields an op type reads.  The encoder always sends them;
 * the decoder requires them, except a PUT's value: an absent value is an
 * empty one, which is what a sender that leaves empty fields unset means.
 */
static bool op_needs_key(int t)
{
    return t == CD_OP_PUT || t == CD_OP_DELETE || t == CD_OP_DELETE_PREFIX;
}

static bool op_needs_value(int t)
{
    return t == CD_OP_PUT || t == CD_OP_LOG_APPEND;
}

/* --- decoding ---------------------------------------------------------- */

/*
 * protobuf-c allocates while it parses, before we can look at any count,
 * and it merges repeated occurrences of a non-repeated message field by
 * concatenating their arrays, which costs time and memory quadratic in the
 * number of occurrences.  Every allocation it makes for one payload is
 * therefore charged to a budget proportional to the payload's size.  An
 * honest message stays well below it (the densest, a Command of empty
 * TXN ops, costs about 67 bytes unpacked per wire byte); a hostile one
 * fails as soon as it crosses it, and is reported as CD_ETOOMANY.
 */
#define UNPACK_BYTES_PER_WIRE_BYTE 128u
#define UNPACK_BASE_BUDGET (64u << 10)

struct unpack_budget
{
    size_t left;
    bool over;  /* an allocation would have crossed the budget */
    bool nomem; /* malloc failed */
};

static void *budget_alloc(void *data, size_t size)
{
    struct unpack_budget *b = data;
    void *p;

    if (size > b->left) {
        b->over = true;
        return NULL;
    }
    p = malloc(size != 0 ? size : 1);
    if (p == NULL) {
        b->nomem = true;
        return NULL;
    }
    b->left -= size;
    return p;
}

/* Memory from budget_alloc() is plain malloc memory, so that what we
 * unpacked can later be freed with protobuf-c's default allocator, after
 * the budget (a local of unpack()) is gone. */
static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

static int unpack(const ProtobufCMessageDescriptor *desc,
                  const uint8_t *buf,
                  size_t len,
                  ProtobufCMessage **out)
{
    struct unpack_budget b = {0};
    ProtobufCAllocator a = {budget_alloc, budget_free, &b};

    if (len > (SIZE_MAX - UNPACK_BASE_BUDGET) / UNPACK_BYTES_PER_WIRE_BYTE) {
        b.left = SIZE_MAX;
    } else {
        b.left = UNPACK_BASE_BUDGET + len * UNPACK_BYTES_PER_WIRE_BYTE;
    }
    *out = protobuf_c_message_unpack(desc, &a, len,
                                     buf != NULL ? buf : (const uint8_t *)"");
    if (*out != NULL) {
        return 0;
    }
    if (b.nomem) {
        return -ENOMEM;
    }
    return b.over ? CD_ETOOMANY : CD_EMALFORMED;
}

/*
 * What a decoded message owns: the unpacked protobuf-c message (strings and
 * bytes point into it) and one block, sized before translation starts, for
 * every array of the plain structs.
 */
struct decoded
{
    ProtobufCMessage *root;
    unsigned char *next;
    size_t left;
};

/* Array carving keeps every piece aligned for any of the element types. */
#define ARRAY_ALIGN sizeof(uint64_t)

static size_t array_bytes(size_t n, size_t size)
{
    size_t bytes = n * size;

    return (bytes + ARRAY_ALIGN - 1) & ~(ARRAY_ALIGN - 1);
}

static int decoded_new(ProtobufCMessage *root,
                       size_t array_size,
                       struct decoded **out)
{
    size_t head = array_bytes(1, sizeof(struct decoded));
    struct decoded *d = malloc(head + array_size);

    if (d == NULL) {
        return -ENOMEM;
    }
    d->root = root;
    d->next = (unsigned char *)d + head;
    d->left = array_size;
    *out = d;
    return 0;
}

static void *decoded_array(struct decoded *d, size_t n, size_t size)
{
    size_t bytes = array_bytes(n, size);
    void *p;

    if (n == 0) {
        return NULL;
    }
    /* The sizing pass counted exactly these arrays. */
    assert(bytes <= d->left);
    p = d->next;
    d->next += bytes;
    d->left -= bytes;
    return p;
}

/* Sizing pass: bounds first, then the bytes of the arrays an op needs. */
static int op_size(const Clusterd__Op *op, size_t *size)
{
    if (op->n_compares > CODEC_MAX_TXN_OPS ||
        op->n_then_ops > CODEC_MAX_TXN_OPS ||
        op->n_else_ops > CODEC_MAX_TXN_OPS) {
        return CD_ETOOMANY;
    }
    *size += array_bytes(op->n_compares, sizeof(struct cd_compare)) +
             array_bytes(op->n_then_ops, sizeof(struct cd_op)) +
             array_bytes(op->n_else_ops, sizeof(struct cd_op));
    return 0;
}

static int command_size(const Clusterd__Command *c, size_t *size)
{
    size_t i;
    int rc;

    if (c->n_ops > CODEC_MAX_OPS) {
        return CD_ETOOMANY;
    }
    *size += array_bytes(c->n_ops, sizeof(struct cd_op));
    for (i = 0; i < c->n_ops; i++) {
        rc = op_size(c->ops[i], size);
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

/* A child's addresses borrow the unpacked array: only the bound. */
static int child_info_size(const Clusterd__ChildInfo *ci)
{
    return ci->n_addresses > CODEC_MAX_ADDRESSES ? CD_ETOOMANY : 0;
}

static int services_size(size_t n, size_t *size)
{
    if (n > CODEC_MAX_SERVICES) {
        return CD_ETOOMANY;
    }
    *size += array_bytes(n, sizeof(struct cd_service_health));
    return 0;
}

static int children_size(const Clusterd__ChildrenResponse *r, size_t *size)
{
    size_t i;
    int rc;

    if (r->n_children > CODEC_MAX_CHILDREN) {
        return CD_ETOOMANY;
    }
    *size += array_bytes(r->n_children, sizeof(struct cd_child_status));
    for (i = 0; i < r->n_children; i++) {
        const Clusterd__ChildStatus *c = r->children[i];

        if (c->info == NULL) {
            return CD_EMALFORMED;
        }
        rc = child_info_size(c->info);
        if (rc == 0) {
            rc = services_size(c->n_services, size);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static int envelope_size(const Clusterd__Envelope *e, size_t *size)
{
    switch (e->body_case) {
        case CLUSTERD__ENVELOPE__BODY_WRITE:
            if (e->write->op == NULL) {
                return CD_EMALFORMED;
            }
            return op_size(e->write->op, size);
        case CLUSTERD__ENVELOPE__BODY_COMMAND:
            return command_size(e->command, size);
        case CLUSTERD__ENVELOPE__BODY_RANGE_RESP:
            *size += array_bytes(e->range_resp->n_kvs, sizeof(struct cd_kv));
            return 0;
        case CLUSTERD__ENVELOPE__BODY_CHANGES:
            *size += array_bytes(e->changes->n_events, sizeof(struct cd_event));
            return 0;
        case CLUSTERD__ENVELOPE__BODY_MEMBERS_RESP:
            *size += array_bytes(e->members_resp->n_members,
                                 sizeof(struct cd_member));
            return 0;
        case CLUSTERD__ENVELOPE__BODY_LOG_UPLOAD:
            *size += array_bytes(e->log_upload->n_records,
                                 sizeof(struct cd_log_record));
            return 0;
        case CLUSTERD__ENVELOPE__BODY_CHILD_JOIN:
            if (e->child_join->info == NULL) {
                return CD_EMALFORMED;
            }
            return child_info_size(e->child_join->info);
        case CLUSTERD__ENVELOPE__BODY_CHILD_REPORT:
            return services_size(e->child_report->n_services, size);
        case CLUSTERD__ENVELOPE__BODY_CHILDREN_RESP:
            return children_size(e->children_resp, size);
        default:
            return 0;
    }
}

/* An empty field comes back with data NULL whatever protobuf-c left. */
static struct cd_buf buf_from_pb(ProtobufCBinaryData b)
{
    struct cd_buf out = {b.len != 0 ? b.data : NULL, b.len};

    return out;
}

static struct cd_buf opt_buf_from_pb(int has, ProtobufCBinaryData b)
{
    struct cd_buf none = {NULL, 0};

    return has ? buf_from_pb(b) : none;
}

static int compare_from_pb(const Clusterd__Compare *in, struct cd_compare *out)
{
    if (!cmp_target_valid((int)in->target) ||
        !cmp_result_valid((int)in->result)) {
        return CD_EBADOP;
    }
    if (in->target == CLUSTERD__COMPARE__TARGET__VALUE ? !in->has_value
                                                       : !in->has_number) {
        return CD_EMALFORMED;
    }
    out->key = buf_from_pb(in->key);
    out->target = (enum cd_cmp_target)in->target;
    out->result = (enum cd_cmp_result)in->result;
    out->value = opt_buf_from_pb(in->has_value, in->value);
    out->number = in->number;
    return 0;
}

static int txn_op_from_pb(const Clusterd__TxnOp *in, struct cd_op *out)
{
    if (!txn_op_type_valid((int)in->type)) {
        return CD_EBADOP;
    }
    if (!in->has_key) {
        return CD_EMALFORMED;
    }
    memset(out, 0, sizeof(*out));
    out->type = (enum cd_op_type)in->type;
    out->key = buf_from_pb(in->key);
    out->value = opt_buf_from_pb(in->has_value, in->value);
    return 0;
}

static int txn_ops_from_pb(Clusterd__TxnOp *const *in,
                           size_t n,
                           struct decoded *d,
                           const struct cd_op **out)
{
    struct cd_op *ops = decoded_array(d, n, sizeof(*ops));
    size_t i;
    int rc;

    for (i = 0; i < n; i++) {
        rc = txn_op_from_pb(in[i], &ops[i]);
        if (rc != 0) {
            return rc;
        }
    }
    *out = ops;
    return 0;
}

static int op_from_pb(const Clusterd__Op *in,
                      struct decoded *d,
                      struct cd_op *out)
{
    int t = (int)in->type;
    struct cd_compare *cmps;
    size_t i;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!op_type_valid(t)) {
        return CD_EBADOP;
    }
    if ((op_needs_key(t) && !in->has_key) ||
        (t == CD_OP_COMPACT && !in->has_revision) ||
        (t == CD_OP_LOG_APPEND && (!in->has_value || !in->has_child_id ||
                                   !in->has_log_seq || !in->has_log_time_ms))) {
        return CD_EMALFORMED;
    }
    /* Branches and compares on anything but a TXN would be silently
     * ignored by the store; refuse them so that the sender learns. */
    if (t != CD_OP_TXN &&
        (in->n_compares != 0 || in->n_then_ops != 0 || in->n_else_ops != 0)) {
        return CD_EMALFORMED;
    }
    out->type = (enum cd_op_type)t;
    out->client_id = in->client_id;
    out->seq = in->seq;
    out->key = opt_buf_from_pb(in->has_key, in->key);
    out->value = opt_buf_from_pb(in->has_value, in->value);
    out->revision = in->revision;
    out->child_id = in->child_id;
    out->log_seq = in->log_seq;
    out->log_time_ms = in->log_time_ms;

    cmps = decoded_array(d, in->n_compares, sizeof(*cmps));
    for (i = 0; i < in->n_compares; i++) {
        rc = compare_from_pb(in->compares[i], &cmps[i]);
        if (rc != 0) {
            return rc;
        }
    }
    out->compares = cmps;
    out->n_compares = in->n_compares;
    rc = txn_ops_from_pb(in->then_ops, in->n_then_ops, d, &out->then_ops);
    if (rc != 0) {
        return rc;
    }
    out->n_then = in->n_then_ops;
    rc = txn_ops_from_pb(in->else_ops, in->n_else_ops, d, &out->else_ops);
    if (rc != 0) {
        return rc;
    }
    out->n_else = in->n_else_ops;
    return 0;
}

static int batch_from_pb(const Clusterd__Command *in,
                         struct decoded *d,
                         struct cd_batch *out)
{
    struct cd_op *ops = decoded_array(d, in->n_ops, sizeof(*ops));
    size_t i;
    int rc;

    for (i = 0; i < in->n_ops; i++) {
        rc = op_from_pb(in->ops[i], d, &ops[i]);
        if (rc != 0) {
            return rc;
        }
    }
    out->time_ms = in->time_ms;
    out->ops = ops;
    out->n_ops = in->n_ops;
    return 0;
}

static void kv_from_pb(const Clusterd__KeyValue *in, struct cd_kv *out)
{
    out->key = buf_from_pb(in->key);
    out->value = opt_buf_from_pb(in->has_value, in->value);
    out->create_rev = in->create_rev;
    out->mod_rev = in->mod_rev;
    out->version = in->version;
}

static int role_from_pb(int has, int role, enum cd_member_role *out)
{
    if (!has) {
        *out = CD_ROLE_UNSET;
        return 0;
    }
    if (!role_valid(role)) {
        return CD_EBADOP;
    }
    *out = (enum cd_member_role)role;
    return 0;
}

static int range_resp_from_pb(const Clusterd__RangeResponse *in,
                              struct decoded *d,
                              struct cd_msg *m)
{
    struct cd_kv *kvs = decoded_array(d, in->n_kvs, sizeof(*kvs));
    size_t i;

    for (i = 0; i < in->n_kvs; i++) {
        kv_from_pb(in->kvs[i], &kvs[i]);
    }
    m->u.range_resp.kvs = kvs;
    m->u.range_resp.n_kvs = in->n_kvs;
    m->u.range_resp.more = !!in->more;
    m->u.range_resp.revision = in->revision;
    m->u.range_resp.serializable = !!in->serializable;
    return 0;
}

static int changes_from_pb(const Clusterd__ChangeBatch *in,
                           struct decoded *d,
                           struct cd_msg *m)
{
    struct cd_event *evs = decoded_array(d, in->n_events, sizeof(*evs));
    size_t i;

    for (i = 0; i < in->n_events; i++) {
        const Clusterd__Event *e = in->events[i];

        if (!event_type_valid((int)e->type)) {
            return CD_EBADOP;
        }
        if (e->kv == NULL) {
            return CD_EMALFORMED;
        }
        evs[i].type = (enum cd_event_type)e->type;
        evs[i].sub = e->sub;
        kv_from_pb(e->kv, &evs[i].kv);
    }
    m->u.changes.events = evs;
    m->u.changes.n_events = in->n_events;
    m->u.changes.revision = in->revision;
    m->u.changes.compacted = !!in->compacted;
    m->u.changes.compact_rev = in->compact_rev;
    m->u.changes.epoch = in->epoch;
    return 0;
}

static int members_resp_from_pb(const Clusterd__MembersResponse *in,
                                struct decoded *d,
                                struct cd_msg *m)
{
    struct cd_member *ms = decoded_array(d, in->n_members, sizeof(*ms));
    size_t i;
    int rc;

    for (i = 0; i < in->n_members; i++) {
        const Clusterd__Member *p = in->members[i];

        if (p->address == NULL) {
            return CD_EMALFORMED;
        }
        rc = role_from_pb(p->has_role, (int)p->role, &ms[i].role);
        if (rc != 0) {
            return rc;
        }
        ms[i].id = p->id;
        ms[i].address = p->address;
        ms[i].api_address = p->api_address;
        ms[i].leader = !!p->leader;
        ms[i].reachable = !!p->reachable;
    }
    m->u.members_resp.members = ms;
    m->u.members_resp.n_members = in->n_members;
    return 0;
}

static int member_change_from_pb(const Clusterd__MemberChangeRequest *in,
                                 struct cd_msg *m)
{
    int a = (int)in->action;
    int rc;

    if (!action_valid(a)) {
        return CD_EBADOP;
    }
    rc = role_from_pb(in->has_role, (int)in->role, &m->u.member_change.role);
    if (rc != 0) {
        return rc;
    }
    /* What each action acts on: a new member's address, an existing
     * member's id, and for ASSIGN the role to give it. */
    if ((a == CD_MEMBER_ADD && in->address == NULL) ||
        (a != CD_MEMBER_ADD && !in->has_id) ||
        (a == CD_MEMBER_ASSIGN && !in->has_role)) {
        return CD_EMALFORMED;
    }
    m->u.member_change.action = (enum cd_member_action)a;
    m->u.member_change.id = in->id;
    m->u.member_change.address = in->address;
    m->u.member_change.token = in->token;
    m->u.member_change.api_address = in->api_address;
    return 0;
}

static int log_upload_from_pb(const Clusterd__LogUpload *in,
                              struct decoded *d,
                              struct cd_msg *m)
{
    struct cd_log_record *rs = decoded_array(d, in->n_records, sizeof(*rs));
    size_t i;

    for (i = 0; i < in->n_records; i++) {
        rs[i].seq = in->records[i]->seq;
        rs[i].time_ms = in->records[i]->time_ms;
        rs[i].record = buf_from_pb(in->records[i]->record);
    }
    m->u.log_upload.child_id = in->child_id;
    m->u.log_upload.records = rs;
    m->u.log_upload.n_records = in->n_records;
    return 0;
}

/* Strings and the address array borrow from the unpacked message. */
static void child_info_from_pb(const Clusterd__ChildInfo *in,
                               struct cd_child_info *out)
{
    out->id = in->id;
    out->hostname = in->hostname;
    out->addresses =
        in->n_addresses != 0 ? (const char *const *)in->addresses : NULL;
    out->n_addresses = in->n_addresses;
    out->mac = in->mac;
    out->os = in->os;
    out->app_version = in->app_version;
    out->joined_ms = in->joined_ms;
}

static int services_from_pb(Clusterd__ServiceHealth *const *in,
                            size_t n,
                            struct decoded *d,
                            const struct cd_service_health **out)
{
    struct cd_service_health *sv = decoded_array(d, n, sizeof(*sv));
    size_t i;

    for (i = 0; i < n; i++) {
        if (in[i]->name == NULL) {
            return CD_EMALFORMED;
        }
        sv[i].name = in[i]->name;
        sv[i].up = !!in[i]->up;
        sv[i].detail = in[i]->detail;
    }
    *out = sv;
    return 0;
}

static int child_report_from_pb(const Clusterd__ChildReport *in,
                                struct decoded *d,
                                struct cd_msg *m)
{
    int rc = services_from_pb(in->services, in->n_services, d,
                              &m->u.child_report.services);

    if (rc != 0) {
        return rc;
    }
    m->u.child_report.child_id = in->child_id;
    m->u.child_report.revision = in->revision;
    m->u.child_report.state = in->state;
    m->u.child_report.n_services = in->n_services;
    m->u.child_report.staleness_ms = in->staleness_ms;
    return 0;
}

static int children_resp_from_pb(const Clusterd__ChildrenResponse *in,
                                 struct decoded *d,
                                 struct cd_msg *m)
{
    struct cd_child_status *cs = decoded_array(d, in->n_children, sizeof(*cs));
    size_t i;
    int rc;

    for (i = 0; i < in->n_children; i++) {
        const Clusterd__ChildStatus *p = in->children[i];

        /* The sizing pass refused a status without info. */
        child_info_from_pb(p->info, &cs[i].info);
        cs[i].state = p->state;
        cs[i].has_last_seen = !!p->has_last_seen_ms_ago;
        cs[i].last_seen_ms_ago =
            p->has_last_seen_ms_ago ? p->last_seen_ms_ago : 0;
        cs[i].revision = p->revision;
        cs[i].lag = p->lag;
        rc = services_from_pb(p->services, p->n_services, d, &cs[i].services);
        if (rc != 0) {
            return rc;
        }
        cs[i].n_services = p->n_services;
        cs[i].staleness_ms = p->staleness_ms;
    }
    m->u.children_resp.children = cs;
    m->u.children_resp.n_children = in->n_children;
    m->u.children_resp.revision = in->revision;
    return 0;
}

/* Backup records (defined with the encoding helpers they share). */
static int schedule_from_pb(const Clusterd__BackupSchedule *in,
                            struct cd_backup_schedule *out);
static int backup_resp_from_pb(const Clusterd__BackupResponse *in,
                               struct cd_msg *m);

static int body_from_pb(const Clusterd__Envelope *e,
                        struct decoded *d,
                        struct cd_msg *m)
{
    switch (e->body_case) {
        case CLUSTERD__ENVELOPE__BODY_ERROR:
            /* An error reply always carries a failure code. */
            if (e->error->code >= 0) {
                return CD_EMALFORMED;
            }
            m->u.error.code = e->error->code;
            m->u.error.name = e->error->name;
            m->u.error.message = e->error->message;
            m->u.error.leader = e->error->leader;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_SNAPSHOT:
            m->u.snapshot.recent = !!e->snapshot->recent;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_OK:
        case CLUSTERD__ENVELOPE__BODY_STATUS:
        case CLUSTERD__ENVELOPE__BODY_MEMBERS:
        case CLUSTERD__ENVELOPE__BODY_SHUTDOWN:
        case CLUSTERD__ENVELOPE__BODY_CHILDREN:
            return 0;
        case CLUSTERD__ENVELOPE__BODY_TOKEN:
            m->u.token.ttl_s = e->token->ttl_s;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_TOKEN_RESP:
            if (e->token_resp->token == NULL) {
                return CD_EMALFORMED;
            }
            m->u.token_resp.token = e->token_resp->token;
            m->u.token_resp.expires_ms = e->token_resp->expires_ms;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_WRITE: {
            int rc;

            if (e->write->op == NULL) {
                return CD_EMALFORMED;
            }
            rc = op_from_pb(e->write->op, d, &m->u.write.op);
            if (rc == 0 && m->u.write.op.type == CD_OP_LOG_APPEND) {
                /* Log records come from children over their own stream,
                 * never from an API client. */
                rc = CD_EBADOP;
            }
            return rc;
        }
        case CLUSTERD__ENVELOPE__BODY_WRITE_RESP:
            m->u.write_resp.revision = e->write_resp->revision;
            m->u.write_resp.succeeded = !!e->write_resp->succeeded;
            m->u.write_resp.deleted = e->write_resp->deleted;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_GET:
            m->u.get.key = buf_from_pb(e->get->key);
            m->u.get.serializable = !!e->get->serializable;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_RANGE:
            m->u.range.prefix =
                opt_buf_from_pb(e->range->has_prefix, e->range->prefix);
            m->u.range.start =
                opt_buf_from_pb(e->range->has_start, e->range->start);
            m->u.range.limit = e->range->limit;
            m->u.range.serializable = !!e->range->serializable;
            m->u.range.keys_only = !!e->range->keys_only;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_RANGE_RESP:
            return range_resp_from_pb(e->range_resp, d, m);
        case CLUSTERD__ENVELOPE__BODY_WATCH:
            m->u.watch.since = e->watch->since;
            m->u.watch.prefix =
                opt_buf_from_pb(e->watch->has_prefix, e->watch->prefix);
            return 0;
        case CLUSTERD__ENVELOPE__BODY_CHANGES:
            return changes_from_pb(e->changes, d, m);
        case CLUSTERD__ENVELOPE__BODY_STATUS_RESP: {
            const Clusterd__StatusResponse *s = e->status_resp;

            m->u.status_resp.id = s->id;
            m->u.status_resp.leader_id = s->leader_id;
            m->u.status_resp.leader_api = s->leader_api;
            m->u.status_resp.term = s->term;
            m->u.status_resp.revision = s->revision;
            m->u.status_resp.applied_index = s->applied_index;
            m->u.status_resp.commit_index = s->commit_index;
            m->u.status_resp.state = s->state;
            m->u.status_resp.version = s->version;
            m->u.status_resp.epoch = s->epoch;
            return 0;
        }
        case CLUSTERD__ENVELOPE__BODY_MEMBERS_RESP:
            return members_resp_from_pb(e->members_resp, d, m);
        case CLUSTERD__ENVELOPE__BODY_MEMBER_CHANGE:
            return member_change_from_pb(e->member_change, m);
        case CLUSTERD__ENVELOPE__BODY_TRANSFER:
            m->u.transfer.to = e->transfer->to;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_SNAPSHOT_CHUNK:
            m->u.snapshot_chunk.offset = e->snapshot_chunk->offset;
            m->u.snapshot_chunk.data = buf_from_pb(e->snapshot_chunk->data);
            m->u.snapshot_chunk.last = !!e->snapshot_chunk->last;
            m->u.snapshot_chunk.revision = e->snapshot_chunk->revision;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_HELLO:
            m->u.hello.cluster_id = e->hello->cluster_id;
            m->u.hello.child_id = e->hello->child_id;
            m->u.hello.revision = e->hello->revision;
            m->u.hello.hostname = e->hello->hostname;
            m->u.hello.version = e->hello->version;
            m->u.hello.registered_rev = e->hello->registered_rev;
            m->u.hello.epoch = e->hello->epoch;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_LOG_UPLOAD:
            return log_upload_from_pb(e->log_upload, d, m);
        case CLUSTERD__ENVELOPE__BODY_LOG_ACK:
            m->u.log_ack.committed_seq = e->log_ack->committed_seq;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_COMMAND:
            /* The Command's own cluster_id is not carried: in a frame the
             * Envelope's cluster_id is the one that is checked. */
            return batch_from_pb(e->command, d, &m->u.command);
        case CLUSTERD__ENVELOPE__BODY_CHILD_JOIN:
            /* The sizing pass refused a request without info. */
            if (e->child_join->token == NULL) {
                return CD_EMALFORMED;
            }
            m->u.child_join.token = e->child_join->token;
            child_info_from_pb(e->child_join->info, &m->u.child_join.info);
            return 0;
        case CLUSTERD__ENVELOPE__BODY_CHILD_JOIN_RESP:
            m->u.child_join_resp.child_id = e->child_join_resp->child_id;
            m->u.child_join_resp.cluster_id = e->child_join_resp->cluster_id;
            m->u.child_join_resp.registered_rev =
                e->child_join_resp->registered_rev;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_CHILD_LEAVE:
            m->u.child_leave.child_id = e->child_leave->child_id;
            return 0;
        case CLUSTERD__ENVELOPE__BODY_CHILD_REPORT:
            return child_report_from_pb(e->child_report, d, m);
        case CLUSTERD__ENVELOPE__BODY_CHILDREN_RESP:
            return children_resp_from_pb(e->children_resp, d, m);
        case CLUSTERD__ENVELOPE__BODY_BACKUP:
            m->u.backup.now = !!e->backup->now;
            if (e->backup->schedule == NULL) {
                return 0;
            }
            m->u.backup.has_schedule = 1;
            return schedule_from_pb(e->backup->schedule, &m->u.backup.schedule);
        case CLUSTERD__ENVELOPE__BODY_BACKUP_RESP:
            return backup_resp_from_pb(e->backup_resp, m);
        default:
            /* No body, or one that only a newer peer knows. */
            return CD_EMALFORMED;
    }
}

int codec_decode(const uint8_t *payload, size_t len, struct cd_msg *out)
{
    ProtobufCMessage *root = NULL;
    const Clusterd__Envelope *e;
    struct decoded *d = NULL;
    size_t arrays = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = unpack(&clusterd__envelope__descriptor, payload, len, &root);
    if (rc != 0) {
        return rc;
    }
    e = (const Clusterd__Envelope *)root;
    if (e->body_case == CLUSTERD__ENVELOPE__BODY__NOT_SET) {
        rc = CD_EMALFORMED;
        goto err_after_unpack;
    }
    rc = envelope_size(e, &arrays);
    if (rc != 0) {
        goto err_after_unpack;
    }
    rc = decoded_new(root, arrays, &d);
    if (rc != 0) {
        goto err_after_unpack;
    }
    out->request_id = e->request_id;
    out->has_cluster_id = !!e->has_cluster_id;
    out->cluster_id = e->cluster_id;
    out->type = (enum cd_msg_type)e->body_case;
    rc = body_from_pb(e, d, out);
    if (rc != 0) {
        goto err_after_decoded;
    }
    out->codec__owned = d;
    return 0;

err_after_decoded:
    free(d);
err_after_unpack:
    protobuf_c_message_free_unpacked(root, NULL);
    memset(out, 0, sizeof(*out));
    return rc;
}

void codec_msg_free(struct cd_msg *m)
{
    struct decoded *d;

    if (m == NULL || m->codec__owned == NULL) {
        return;
    }
    d = m->codec__owned;
    protobuf_c_message_free_unpacked(d->root, NULL);
    free(d);
    memset(m, 0, sizeof(*m));
}

int codec_command_decode(const uint8_t *buf,
                         size_t len,
                         struct codec_command *out)
{
    ProtobufCMessage *root = NULL;
    const Clusterd__Command *c;
    struct decoded *d = NULL;
    size_t arrays = 0;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = unpack(&clusterd__command__descriptor, buf, len, &root);
    if (rc != 0) {
        return rc;
    }
    c = (const Clusterd__Command *)root;
    rc = command_size(c, &arrays);
    if (rc != 0) {
        goto err_after_unpack;
    }
    rc = decoded_new(root, arrays, &d);
    if (rc != 0) {
        goto err_after_unpack;
    }
    rc = batch_from_pb(c, d, &out->batch);
    if (rc != 0) {
        goto err_after_decoded;
    }
    out->cluster_id = c->has_cluster_id ? c->cluster_id : 0;
    out->owned = d;
    return 0;

err_after_decoded:
    free(d);
err_after_unpack:
    protobuf_c_message_free_unpacked(root, NULL);
    memset(out, 0, sizeof(*out));
    return rc;
}

void codec_command_free(struct codec_command *c)
{
    struct decoded *d;

    if (c == NULL || c->owned == NULL) {
        return;
    }
    d = c->owned;
    protobuf_c_message_free_unpacked(d->root, NULL);
    free(d);
    memset(c, 0, sizeof(*c));
}

/* --- encoding ---------------------------------------------------------- */

/*
 * Temporaries for one encode: every generated struct and pointer array is
 * taken from here and released together, whatever step failed.
 */
struct scratch_chunk
{
    struct scratch_chunk *next;
    uint64_t data[]; /* aligned for any generated struct */
};

struct scratch
{
    struct scratch_chunk *head;
};

static void *scratch_alloc(struct scratch *s, size_t n, size_t size)
{
    struct scratch_chunk *c;

    if (n == 0 || n > (SIZE_MAX - sizeof(*c)) / size) {
        return NULL;
    }
    c = calloc(1, sizeof(*c) + n * size);
    if (c == NULL) {
        return NULL;
    }
    c->next = s->head;
    s->head = c;
    return c->data;
}

static void scratch_free(struct scratch *s)
{
    while (s->head != NULL) {
        struct scratch_chunk *c = s->head;

        s->head = c->next;
        free(c);
    }
}

/*
 * protobuf-c's structs are not const-correct: they hold char * and
 * uint8_t * even for packing.  These casts drop the const of borrowed
 * caller data, which packing only ever reads.
 */
static char *pb_str(const char *s)
{
    return (char *)(uintptr_t)s;
}

static char **pb_strs(const char *const *s)
{
    return (char **)(uintptr_t)s;
}

static int check_buf(struct cd_buf b)
{
    if (b.data == NULL && b.len != 0) {
        return CD_EBADOP;
    }
    /* protobuf-c writes length prefixes as 32-bit varints. */
    if (b.len > UINT32_MAX) {
        return CD_EFRAMETOOBIG;
    }
    return 0;
}

static ProtobufCBinaryData pb_bytes(struct cd_buf b)
{
    static const uint8_t empty[1];
    ProtobufCBinaryData out;

    out.len = b.len;
    /* Never hand protobuf-c a NULL source, even for zero bytes. */
    out.data = (uint8_t *)(uintptr_t)(b.data != NULL ? b.data : empty);
    return out;
}

/* Set an optional bytes field: present when needed or nonempty. */
static int put_opt_bytes(struct cd_buf b,
                         bool needed,
                         protobuf_c_boolean *has,
                         ProtobufCBinaryData *out)
{
    int rc = check_buf(b);

    if (rc != 0) {
        return rc;
    }
    *has = needed || b.len != 0;
    *out = pb_bytes(b);
    return 0;
}

static int put_bytes(struct cd_buf b, ProtobufCBinaryData *out)
{
    int rc = check_buf(b);

    if (rc != 0) {
        return rc;
    }
    *out = pb_bytes(b);
    return 0;
}

static void put_u64(uint64_t v,
                    bool needed,
                    protobuf_c_boolean *has,
                    uint64_t *out)
{
    *has = needed || v != 0;
    *out = v;
}

static void put_u32(uint32_t v, protobuf_c_boolean *has, uint32_t *out)
{
    *has = v != 0;
    *out = v;
}

static void put_flag(int v, protobuf_c_boolean *has, protobuf_c_boolean *out)
{
    *has = v != 0;
    *out = v != 0;
}

/* --- backup records ---------------------------------------------------- */

/* Copy a protobuf string (NULL: absent) into a fixed array.  A string that
 * does not fit is CD_EMALFORMED, or cut when cut is set. */
static int copy_str(const char *in, char *out, size_t size, int cut)
{
    size_t n = in != NULL ? strlen(in) : 0;

    if (n >= size) {
        if (!cut) {
            return CD_EMALFORMED;
        }
        n = size - 1;
    }
    if (n > 0) {
        memcpy(out, in, n);
    }
    out[n] = '\0';
    return 0;
}

/* A fixed array's string for protobuf: NULL when empty (left off the
 * wire); CD_EBADOP when the array holds no terminator. */
static int fixed_str(const char *in, size_t size, char **out)
{
    if (memchr(in, '\0', size) == NULL) {
        return CD_EBADOP;
    }
    *out = in[0] != '\0' ? pb_str(in) : NULL;
    return 0;
}

static int schedule_from_pb(const Clusterd__BackupSchedule *in,
                            struct cd_backup_schedule *out)
{
    memset(out, 0, sizeof(*out));
    out->interval_s = in->interval_s;
    out->retain = in->retain;
    out->has_at = !!in->has_at_minute;
    out->at_minute = in->at_minute;
    out->set_ms = in->set_ms;
    return copy_str(in->dir, out->dir, sizeof(out->dir), 0);
}

static int schedule_to_pb(const struct cd_backup_schedule *in,
                          Clusterd__BackupSchedule *out)
{
    clusterd__backup_schedule__init(out);
    put_u64(in->interval_s, false, &out->has_interval_s, &out->interval_s);
    put_u32(in->retain, &out->has_retain, &out->retain);
    out->has_at_minute = in->has_at != 0;
    out->at_minute = in->at_minute;
    put_u64(in->set_ms, false, &out->has_set_ms, &out->set_ms);
    return fixed_str(in->dir, sizeof(in->dir), &out->dir);
}

static int result_from_pb(const Clusterd__BackupResult *in,
                          struct cd_backup_result *out)
{
    int rc;

    memset(out, 0, sizeof(*out));
    out->time_ms = in->time_ms;
    out->ok = !!in->ok;
    out->node_id = in->node_id;
    out->revision = in->revision;
    out->bytes = in->bytes;
    out->keys = in->keys;
    out->duration_ms = in->duration_ms;
    out->failures = in->failures;
    out->pruned = in->pruned;
    out->last_ok_ms = in->last_ok_ms;
    rc = copy_str(in->file, out->file, sizeof(out->file), 0);
    if (rc == 0) {
        rc = copy_str(in->last_ok_file, out->last_ok_file,
                      sizeof(out->last_ok_file), 0);
    }
    if (rc == 0) {
        rc = copy_str(in->error, out->error, sizeof(out->error), 1);
    }
    return rc;
}

static int result_to_pb(const struct cd_backup_result *in,
                        Clusterd__BackupResult *out)
{
    int rc;

    clusterd__backup_result__init(out);
    out->time_ms = in->time_ms;
    put_flag(in->ok, &out->has_ok, &out->ok);
    put_u64(in->node_id, false, &out->has_node_id, &out->node_id);
    put_u64(in->revision, false, &out->has_revision, &out->revision);
    put_u64(in->bytes, false, &out->has_bytes, &out->bytes);
    put_u64(in->keys, false, &out->has_keys, &out->keys);
    put_u64(in->duration_ms, false, &out->has_duration_ms, &out->duration_ms);
    put_u32(in->failures, &out->has_failures, &out->failures);
    put_u32(in->pruned, &out->has_pruned, &out->pruned);
    put_u64(in->last_ok_ms, false, &out->has_last_ok_ms, &out->last_ok_ms);
    rc = fixed_str(in->file, sizeof(in->file), &out->file);
    if (rc == 0) {
        rc = fixed_str(in->last_ok_file, sizeof(in->last_ok_file),
                       &out->last_ok_file);
    }
    if (rc == 0) {
        rc = fixed_str(in->error, sizeof(in->error), &out->error);
    }
    return rc;
}

static int backup_resp_from_pb(const Clusterd__BackupResponse *in,
                               struct cd_msg *m)
{
    int rc = 0;

    m->u.backup_resp.next_ms = in->next_ms;
    m->u.backup_resp.running = !!in->running;
    if (in->schedule != NULL) {
        m->u.backup_resp.has_schedule = 1;
        rc = schedule_from_pb(in->schedule, &m->u.backup_resp.schedule);
    }
    if (rc == 0 && in->last != NULL) {
        m->u.backup_resp.has_last = 1;
        rc = result_from_pb(in->last, &m->u.backup_resp.last);
    }
    return rc;
}

/* Allocate n generated structs and the array of pointers to them that
 * protobuf-c wants for a repeated field. */
static void *pb_array(struct scratch *s, size_t n, size_t size, void ***ptrs)
{
    unsigned char *block;
    size_t structs = array_bytes(n, size);
    size_t i;

    *ptrs = NULL;
    /* The caller's array exists, so n is sane; still, never let the
     * size wrap into a short block. */
    if (n == 0 || n > SIZE_MAX / 2 / (size + sizeof(void *))) {
        return NULL;
    }
    block = scratch_alloc(s, 1, structs + n * sizeof(void *));
    if (block == NULL) {
        return NULL;
    }
    *ptrs = (void **)(void *)(block + structs);
    for (i = 0; i < n; i++) {
        (*ptrs)[i] = block + i * size;
    }
    return block;
}

static int compare_to_pb(const struct cd_compare *in, Clusterd__Compare *out)
{
    bool is_value = in->target == CD_CMP_VALUE;
    int rc;

    clusterd__compare__init(out);
    if (!cmp_target_valid((int)in->target) ||
        !cmp_result_valid((int)in->result)) {
        return CD_EBADOP;
    }
    rc = put_bytes(in->key, &out->key);
    if (rc == 0) {
        rc = put_opt_bytes(in->value, is_value, &out->has_value, &out->value);
    }
    out->target = (Clusterd__Compare__Target)in->target;
    out->result = (Clusterd__Compare__Result)in->result;
    put_u64(in->number, !is_value, &out->has_number, &out->number);
    return rc;
}

/* A branch op carries type, key and value only; anything else set in it
 * would be lost on the wire, so it is refused rather than dropped. */
static int txn_op_to_pb(const struct cd_op *in, Clusterd__TxnOp *out)
{
    int rc;

    clusterd__txn_op__init(out);
    if (!txn_op_type_valid((int)in->type) || in->client_id != 0 ||
        in->seq != 0 || in->revision != 0 || in->child_id != 0 ||
        in->log_seq != 0 || in->log_time_ms != 0 || in->n_compares != 0 ||
        in->n_then != 0 || in->n_else != 0) {
        return CD_EBADOP;
    }
    out->type = (Clusterd__Op__Type)in->type;
    rc = put_opt_bytes(in->key, true, &out->has_key, &out->key);
    if (rc == 0) {
        rc = put_opt_bytes(in->value, op_needs_value((int)in->type),
                           &out->has_value, &out->value);
    }
    return rc;
}

static int txn_ops_to_pb(const struct cd_op *in,
                         size_t n,
                         struct scratch *s,
                         Clusterd__TxnOp ***out)
{
    Clusterd__TxnOp *ops;
    void **ptrs;
    size_t i;
    int rc;

    if (n > 0 && in == NULL) {
        return CD_EBADOP;
    }
    ops = pb_array(s, n, sizeof(*ops), &ptrs);
    if (n > 0 && ops == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        rc = txn_op_to_pb(&in[i], &ops[i]);
        if (rc != 0) {
            return rc;
        }
    }
    *out = (Clusterd__TxnOp **)ptrs;
    return 0;
}

static int op_to_pb(const struct cd_op *in,
                    struct scratch *s,
                    Clusterd__Op *out)
{
    int t = (int)in->type;
    Clusterd__Compare *cmps;
    void **ptrs;
    size_t i;
    int rc;

    clusterd__op__init(out);
    if (!op_type_valid(t)) {
        return CD_EBADOP;
    }
    if (in->n_compares > CODEC_MAX_TXN_OPS || in->n_then > CODEC_MAX_TXN_OPS ||
        in->n_else > CODEC_MAX_TXN_OPS) {
        return CD_ETOOMANY;
    }
    if (t != CD_OP_TXN &&
        (in->n_compares != 0 || in->n_then != 0 || in->n_else != 0)) {
        return CD_EBADOP;
    }
    if (in->n_compares > 0 && in->compares == NULL) {
        return CD_EBADOP;
    }
    out->type = (Clusterd__Op__Type)t;
    put_u64(in->client_id, false, &out->has_client_id, &out->client_id);
    put_u64(in->seq, false, &out->has_seq, &out->seq);
    rc = put_opt_bytes(in->key, op_needs_key(t), &out->has_key, &out->key);
    if (rc != 0) {
        return rc;
    }
    rc = put_opt_bytes(in->value, op_needs_value(t), &out->has_value,
                       &out->value);
    if (rc != 0) {
        return rc;
    }
    put_u64(in->revision, t == CD_OP_COMPACT, &out->has_revision,
            &out->revision);
    put_u64(in->child_id, t == CD_OP_LOG_APPEND, &out->has_child_id,
            &out->child_id);
    put_u64(in->log_seq, t == CD_OP_LOG_APPEND, &out->has_log_seq,
            &out->log_seq);
    put_u64(in->log_time_ms, t == CD_OP_LOG_APPEND, &out->has_log_time_ms,
            &out->log_time_ms);

    cmps = pb_array(s, in->n_compares, sizeof(*cmps), &ptrs);
    if (in->n_compares > 0 && cmps == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < in->n_compares; i++) {
        rc = compare_to_pb(&in->compares[i], &cmps[i]);
        if (rc != 0) {
            return rc;
        }
    }
    out->compares = (Clusterd__Compare **)ptrs;
    out->n_compares = in->n_compares;
    rc = txn_ops_to_pb(in->then_ops, in->n_then, s, &out->then_ops);
    if (rc != 0) {
        return rc;
    }
    out->n_then_ops = in->n_then;
    rc = txn_ops_to_pb(in->else_ops, in->n_else, s, &out->else_ops);
    if (rc != 0) {
        return rc;
    }
    out->n_else_ops = in->n_else;
    return 0;
}

static int batch_to_pb(const struct cd_batch *b,
                       struct scratch *s,
                       Clusterd__Command *out)
{
    Clusterd__Op *ops;
    void **ptrs;
    size_t i;
    int rc;

    clusterd__command__init(out);
    if (b->n_ops > CODEC_MAX_OPS) {
        return CD_ETOOMANY;
    }
    if (b->n_ops > 0 && b->ops == NULL) {
        return CD_EBADOP;
    }
    ops = pb_array(s, b->n_ops, sizeof(*ops), &ptrs);
    if (b->n_ops > 0 && ops == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < b->n_ops; i++) {
        rc = op_to_pb(&b->ops[i], s, &ops[i]);
        if (rc != 0) {
            return rc;
        }
    }
    out->time_ms = b->time_ms;
    out->ops = (Clusterd__Op **)ptrs;
    out->n_ops = b->n_ops;
    return 0;
}

static int kv_to_pb(const struct cd_kv *in, Clusterd__KeyValue *out)
{
    int rc;

    clusterd__key_value__init(out);
    rc = put_bytes(in->key, &out->key);
    if (rc == 0) {
        rc = put_opt_bytes(in->value, false, &out->has_value, &out->value);
    }
    put_u64(in->create_rev, false, &out->has_create_rev, &out->create_rev);
    put_u64(in->mod_rev, false, &out->has_mod_rev, &out->mod_rev);
    put_u64(in->version, false, &out->has_version, &out->version);
    return rc;
}

static int role_to_pb(enum cd_member_role role,
                      protobuf_c_boolean *has,
                      Clusterd__Member__Role *out)
{
    *has = role != CD_ROLE_UNSET;
    if (*has && !role_valid((int)role)) {
        return CD_EBADOP;
    }
    if (*has) {
        *out = (Clusterd__Member__Role)role;
    }
    return 0;
}

/* Strings are borrowed; an address list may not hold NULL, which protobuf
 * cannot send as an element. */
static int child_info_to_pb(const struct cd_child_info *in,
                            Clusterd__ChildInfo *out)
{
    size_t i;

    clusterd__child_info__init(out);
    if (in->n_addresses > CODEC_MAX_ADDRESSES) {
        return CD_ETOOMANY;
    }
    if (in->n_addresses > 0 && in->addresses == NULL) {
        return CD_EBADOP;
    }
    for (i = 0; i < in->n_addresses; i++) {
        if (in->addresses[i] == NULL) {
            return CD_EBADOP;
        }
    }
    out->id = in->id;
    out->hostname = pb_str(in->hostname);
    out->addresses = in->n_addresses > 0 ? pb_strs(in->addresses) : NULL;
    out->n_addresses = in->n_addresses;
    out->mac = pb_str(in->mac);
    out->os = pb_str(in->os);
    out->app_version = pb_str(in->app_version);
    put_u64(in->joined_ms, false, &out->has_joined_ms, &out->joined_ms);
    return 0;
}

static int services_to_pb(const struct cd_service_health *in,
                          size_t n,
                          struct scratch *s,
                          Clusterd__ServiceHealth ***out)
{
    Clusterd__ServiceHealth *sv;
    void **ptrs;
    size_t i;

    if (n > CODEC_MAX_SERVICES) {
        return CD_ETOOMANY;
    }
    if (n > 0 && in == NULL) {
        return CD_EBADOP;
    }
    sv = pb_array(s, n, sizeof(*sv), &ptrs);
    if (n > 0 && sv == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        clusterd__service_health__init(&sv[i]);
        if (in[i].name == NULL) {
            return CD_EBADOP;
        }
        sv[i].name = pb_str(in[i].name);
        sv[i].up = in[i].up != 0;
        sv[i].detail = pb_str(in[i].detail);
    }
    *out = (Clusterd__ServiceHealth **)ptrs;
    return 0;
}

/* The body structs of an Envelope; only the one for the type is used. */
union pb_body {
    Clusterd__Error error;
    Clusterd__Ok ok;
    struct
    {
        Clusterd__WriteRequest req;
        Clusterd__Op op;
    } write;
    Clusterd__WriteResponse write_resp;
    Clusterd__GetRequest get;
    Clusterd__RangeRequest range;
    Clusterd__RangeResponse range_resp;
    Clusterd__WatchRequest watch;
    Clusterd__ChangeBatch changes;
    Clusterd__StatusRequest status;
    Clusterd__StatusResponse status_resp;
    Clusterd__MembersRequest members;
    Clusterd__MembersResponse members_resp;
    Clusterd__MemberChangeRequest member_change;
    Clusterd__TransferRequest transfer;
    Clusterd__SnapshotRequest snapshot;
    Clusterd__SnapshotChunk snapshot_chunk;
    Clusterd__Hello hello;
    Clusterd__LogUpload log_upload;
    Clusterd__LogAck log_ack;
    Clusterd__Command command;
    Clusterd__ShutdownRequest shutdown;
    Clusterd__TokenRequest token;
    Clusterd__TokenResponse token_resp;
    struct
    {
        Clusterd__ChildJoinRequest req;
        Clusterd__ChildInfo info;
    } child_join;
    Clusterd__ChildJoinResponse child_join_resp;
    Clusterd__ChildLeaveRequest child_leave;
    Clusterd__ChildReport child_report;
    Clusterd__ChildrenRequest children;
    Clusterd__ChildrenResponse children_resp;
    struct
    {
        Clusterd__BackupRequest req;
        Clusterd__BackupSchedule schedule;
    } backup;
    struct
    {
        Clusterd__BackupResponse resp;
        Clusterd__BackupSchedule schedule;
        Clusterd__BackupResult last;
    } backup_resp;
};

static int range_resp_to_pb(const struct cd_msg *m,
                            struct scratch *s,
                            Clusterd__RangeResponse *out)
{
    size_t n = m->u.range_resp.n_kvs;
    Clusterd__KeyValue *kvs;
    void **ptrs;
    size_t i;
    int rc;

    clusterd__range_response__init(out);
    if (n > 0 && m->u.range_resp.kvs == NULL) {
        return CD_EBADOP;
    }
    kvs = pb_array(s, n, sizeof(*kvs), &ptrs);
    if (n > 0 && kvs == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        rc = kv_to_pb(&m->u.range_resp.kvs[i], &kvs[i]);
        if (rc != 0) {
            return rc;
        }
    }
    out->kvs = (Clusterd__KeyValue **)ptrs;
    out->n_kvs = n;
    put_flag(m->u.range_resp.more, &out->has_more, &out->more);
    put_u64(m->u.range_resp.revision, false, &out->has_revision,
            &out->revision);
    put_flag(m->u.range_resp.serializable, &out->has_serializable,
             &out->serializable);
    return 0;
}

static int changes_to_pb(const struct cd_msg *m,
                         struct scratch *s,
                         Clusterd__ChangeBatch *out)
{
    size_t n = m->u.changes.n_events;
    const struct cd_event *in = m->u.changes.events;
    Clusterd__Event *evs;
    Clusterd__KeyValue *kvs;
    void **ptrs;
    void **kv_ptrs;
    size_t i;
    int rc;

    clusterd__change_batch__init(out);
    if (n > 0 && in == NULL) {
        return CD_EBADOP;
    }
    evs = pb_array(s, n, sizeof(*evs), &ptrs);
    kvs = pb_array(s, n, sizeof(*kvs), &kv_ptrs);
    if (n > 0 && (evs == NULL || kvs == NULL)) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        clusterd__event__init(&evs[i]);
        if (!event_type_valid((int)in[i].type)) {
            return CD_EBADOP;
        }
        evs[i].type = (Clusterd__Event__Type)in[i].type;
        evs[i].has_sub = in[i].sub != 0;
        evs[i].sub = in[i].sub;
        rc = kv_to_pb(&in[i].kv, &kvs[i]);
        if (rc != 0) {
            return rc;
        }
        evs[i].kv = &kvs[i];
    }
    out->events = (Clusterd__Event **)ptrs;
    out->n_events = n;
    out->revision = m->u.changes.revision;
    put_flag(m->u.changes.compacted, &out->has_compacted, &out->compacted);
    put_u64(m->u.changes.compact_rev, false, &out->has_compact_rev,
            &out->compact_rev);
    put_u64(m->u.changes.epoch, false, &out->has_epoch, &out->epoch);
    return 0;
}

static int members_resp_to_pb(const struct cd_msg *m,
                              struct scratch *s,
                              Clusterd__MembersResponse *out)
{
    size_t n = m->u.members_resp.n_members;
    const struct cd_member *in = m->u.members_resp.members;
    Clusterd__Member *ms;
    void **ptrs;
    size_t i;
    int rc;

    clusterd__members_response__init(out);
    if (n > 0 && in == NULL) {
        return CD_EBADOP;
    }
    ms = pb_array(s, n, sizeof(*ms), &ptrs);
    if (n > 0 && ms == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        clusterd__member__init(&ms[i]);
        if (in[i].address == NULL) {
            return CD_EBADOP;
        }
        rc = role_to_pb(in[i].role, &ms[i].has_role, &ms[i].role);
        if (rc != 0) {
            return rc;
        }
        ms[i].id = in[i].id;
        ms[i].address = pb_str(in[i].address);
        ms[i].api_address = pb_str(in[i].api_address);
        put_flag(in[i].leader, &ms[i].has_leader, &ms[i].leader);
        put_flag(in[i].reachable, &ms[i].has_reachable, &ms[i].reachable);
    }
    out->members = (Clusterd__Member **)ptrs;
    out->n_members = n;
    return 0;
}

static int member_change_to_pb(const struct cd_msg *m,
                               Clusterd__MemberChangeRequest *out)
{
    int a = (int)m->u.member_change.action;
    int rc;

    clusterd__member_change_request__init(out);
    if (!action_valid(a)) {
        return CD_EBADOP;
    }
    rc = role_to_pb(m->u.member_change.role, &out->has_role, &out->role);
    if (rc != 0) {
        return rc;
    }
    if ((a == CD_MEMBER_ADD && m->u.member_change.address == NULL) ||
        (a == CD_MEMBER_ASSIGN && !out->has_role)) {
        return CD_EBADOP;
    }
    out->action = (Clusterd__MemberChangeRequest__Action)a;
    put_u64(m->u.member_change.id, a != CD_MEMBER_ADD, &out->has_id, &out->id);
    out->address = pb_str(m->u.member_change.address);
    out->token = pb_str(m->u.member_change.token);
    out->api_address = pb_str(m->u.member_change.api_address);
    return 0;
}

static int log_upload_to_pb(const struct cd_msg *m,
                            struct scratch *s,
                            Clusterd__LogUpload *out)
{
    size_t n = m->u.log_upload.n_records;
    const struct cd_log_record *in = m->u.log_upload.records;
    Clusterd__LogRecord *rs;
    void **ptrs;
    size_t i;
    int rc;

    clusterd__log_upload__init(out);
    if (n > 0 && in == NULL) {
        return CD_EBADOP;
    }
    rs = pb_array(s, n, sizeof(*rs), &ptrs);
    if (n > 0 && rs == NULL) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        clusterd__log_record__init(&rs[i]);
        rs[i].seq = in[i].seq;
        rs[i].time_ms = in[i].time_ms;
        rc = put_bytes(in[i].record, &rs[i].record);
        if (rc != 0) {
            return rc;
        }
    }
    out->child_id = m->u.log_upload.child_id;
    out->records = (Clusterd__LogRecord **)ptrs;
    out->n_records = n;
    return 0;
}

static int child_report_to_pb(const struct cd_msg *m,
                              struct scratch *s,
                              Clusterd__ChildReport *out)
{
    int rc;

    clusterd__child_report__init(out);
    rc = services_to_pb(m->u.child_report.services,
                        m->u.child_report.n_services, s, &out->services);
    if (rc != 0) {
        return rc;
    }
    out->n_services = m->u.child_report.n_services;
    out->child_id = m->u.child_report.child_id;
    put_u64(m->u.child_report.revision, false, &out->has_revision,
            &out->revision);
    out->state = pb_str(m->u.child_report.state);
    put_u64(m->u.child_report.staleness_ms, false, &out->has_staleness_ms,
            &out->staleness_ms);
    return 0;
}

static int children_resp_to_pb(const struct cd_msg *m,
                               struct scratch *s,
                               Clusterd__ChildrenResponse *out)
{
    size_t n = m->u.children_resp.n_children;
    const struct cd_child_status *in = m->u.children_resp.children;
    Clusterd__ChildStatus *cs;
    Clusterd__ChildInfo *infos;
    void **ptrs;
    void **info_ptrs;
    size_t i;
    int rc;

    clusterd__children_response__init(out);
    if (n > CODEC_MAX_CHILDREN) {
        return CD_ETOOMANY;
    }
    if (n > 0 && in == NULL) {
        return CD_EBADOP;
    }
    cs = pb_array(s, n, sizeof(*cs), &ptrs);
    infos = pb_array(s, n, sizeof(*infos), &info_ptrs);
    if (n > 0 && (cs == NULL || infos == NULL)) {
        return -ENOMEM;
    }
    for (i = 0; i < n; i++) {
        clusterd__child_status__init(&cs[i]);
        rc = child_info_to_pb(&in[i].info, &infos[i]);
        if (rc == 0) {
            rc = services_to_pb(in[i].services, in[i].n_services, s,
                                &cs[i].services);
        }
        if (rc != 0) {
            return rc;
        }
        cs[i].info = &infos[i];
        cs[i].state = pb_str(in[i].state);
        /* Present exactly when the caller says so: 0 ms ago is news. */
        cs[i].has_last_seen_ms_ago = in[i].has_last_seen != 0;
        cs[i].last_seen_ms_ago = in[i].last_seen_ms_ago;
        put_u64(in[i].revision, false, &cs[i].has_revision, &cs[i].revision);
        put_u64(in[i].lag, false, &cs[i].has_lag, &cs[i].lag);
        cs[i].n_services = in[i].n_services;
        put_u64(in[i].staleness_ms, false, &cs[i].has_staleness_ms,
                &cs[i].staleness_ms);
    }
    out->children = (Clusterd__ChildStatus **)ptrs;
    out->n_children = n;
    put_u64(m->u.children_resp.revision, false, &out->has_revision,
            &out->revision);
    return 0;
}

static int body_to_pb(const struct cd_msg *m,
                      struct scratch *s,
                      union pb_body *b,
                      Clusterd__Envelope *e)
{
    int rc = 0;

    switch (m->type) {
        case CD_MSG_ERROR:
            clusterd__error__init(&b->error);
            if (m->u.error.code >= 0) {
                return CD_EBADOP;
            }
            b->error.code = m->u.error.code;
            b->error.name = pb_str(m->u.error.name);
            b->error.message = pb_str(m->u.error.message);
            b->error.leader = pb_str(m->u.error.leader);
            e->error = &b->error;
            break;
        case CD_MSG_OK:
            clusterd__ok__init(&b->ok);
            e->ok = &b->ok;
            break;
        case CD_MSG_WRITE:
            clusterd__write_request__init(&b->write.req);
            if (m->u.write.op.type == CD_OP_LOG_APPEND) {
                return CD_EBADOP;
            }
            rc = op_to_pb(&m->u.write.op, s, &b->write.op);
            b->write.req.op = &b->write.op;
            e->write = &b->write.req;
            break;
        case CD_MSG_WRITE_RESP:
            clusterd__write_response__init(&b->write_resp);
            put_u64(m->u.write_resp.revision, false,
                    &b->write_resp.has_revision, &b->write_resp.revision);
            put_flag(m->u.write_resp.succeeded, &b->write_resp.has_succeeded,
                     &b->write_resp.succeeded);
            put_u64(m->u.write_resp.deleted, false, &b->write_resp.has_deleted,
                    &b->write_resp.deleted);
            e->write_resp = &b->write_resp;
            break;
        case CD_MSG_GET:
            clusterd__get_request__init(&b->get);
            rc = put_bytes(m->u.get.key, &b->get.key);
            put_flag(m->u.get.serializable, &b->get.has_serializable,
                     &b->get.serializable);
            e->get = &b->get;
            break;
        case CD_MSG_RANGE:
            clusterd__range_request__init(&b->range);
            rc = put_opt_bytes(m->u.range.prefix, false, &b->range.has_prefix,
                               &b->range.prefix);
            if (rc == 0) {
                rc = put_opt_bytes(m->u.range.start, false, &b->range.has_start,
                                   &b->range.start);
            }
            put_u64(m->u.range.limit, false, &b->range.has_limit,
                    &b->range.limit);
            put_flag(m->u.range.serializable, &b->range.has_serializable,
                     &b->range.serializable);
            put_flag(m->u.range.keys_only, &b->range.has_keys_only,
                     &b->range.keys_only);
            e->range = &b->range;
            break;
        case CD_MSG_RANGE_RESP:
            rc = range_resp_to_pb(m, s, &b->range_resp);
            e->range_resp = &b->range_resp;
            break;
        case CD_MSG_WATCH:
            clusterd__watch_request__init(&b->watch);
            put_u64(m->u.watch.since, false, &b->watch.has_since,
                    &b->watch.since);
            rc = put_opt_bytes(m->u.watch.prefix, false, &b->watch.has_prefix,
                               &b->watch.prefix);
            e->watch = &b->watch;
            break;
        case CD_MSG_CHANGES:
            rc = changes_to_pb(m, s, &b->changes);
            e->changes = &b->changes;
            break;
        case CD_MSG_STATUS:
            clusterd__status_request__init(&b->status);
            e->status = &b->status;
            break;
        case CD_MSG_STATUS_RESP: {
            Clusterd__StatusResponse *o = &b->status_resp;

            clusterd__status_response__init(o);
            put_u64(m->u.status_resp.id, false, &o->has_id, &o->id);
            put_u64(m->u.status_resp.leader_id, false, &o->has_leader_id,
                    &o->leader_id);
            o->leader_api = pb_str(m->u.status_resp.leader_api);
            put_u64(m->u.status_resp.term, false, &o->has_term, &o->term);
            put_u64(m->u.status_resp.revision, false, &o->has_revision,
                    &o->revision);
            put_u64(m->u.status_resp.applied_index, false,
                    &o->has_applied_index, &o->applied_index);
            put_u64(m->u.status_resp.commit_index, false, &o->has_commit_index,
                    &o->commit_index);
            o->state = pb_str(m->u.status_resp.state);
            o->version = pb_str(m->u.status_resp.version);
            put_u64(m->u.status_resp.epoch, false, &o->has_epoch, &o->epoch);
            e->status_resp = o;
            break;
        }
        case CD_MSG_MEMBERS:
            clusterd__members_request__init(&b->members);
            e->members = &b->members;
            break;
        case CD_MSG_MEMBERS_RESP:
            rc = members_resp_to_pb(m, s, &b->members_resp);
            e->members_resp = &b->members_resp;
            break;
        case CD_MSG_MEMBER_CHANGE:
            rc = member_change_to_pb(m, &b->member_change);
            e->member_change = &b->member_change;
            break;
        case CD_MSG_TRANSFER:
            clusterd__transfer_request__init(&b->transfer);
            put_u64(m->u.transfer.to, false, &b->transfer.has_to,
                    &b->transfer.to);
            e->transfer = &b->transfer;
            break;
        case CD_MSG_SNAPSHOT:
            clusterd__snapshot_request__init(&b->snapshot);
            put_flag(m->u.snapshot.recent, &b->snapshot.has_recent,
                     &b->snapshot.recent);
            e->snapshot = &b->snapshot;
            break;
        case CD_MSG_SNAPSHOT_CHUNK:
            clusterd__snapshot_chunk__init(&b->snapshot_chunk);
            b->snapshot_chunk.offset = m->u.snapshot_chunk.offset;
            rc = put_bytes(m->u.snapshot_chunk.data, &b->snapshot_chunk.data);
            put_flag(m->u.snapshot_chunk.last, &b->snapshot_chunk.has_last,
                     &b->snapshot_chunk.last);
            put_u64(m->u.snapshot_chunk.revision, false,
                    &b->snapshot_chunk.has_revision,
                    &b->snapshot_chunk.revision);
            e->snapshot_chunk = &b->snapshot_chunk;
            break;
        case CD_MSG_HELLO:
            clusterd__hello__init(&b->hello);
            b->hello.cluster_id = m->u.hello.cluster_id;
            put_u64(m->u.hello.child_id, false, &b->hello.has_child_id,
                    &b->hello.child_id);
            put_u64(m->u.hello.revision, false, &b->hello.has_revision,
                    &b->hello.revision);
            b->hello.hostname = pb_str(m->u.hello.hostname);
            b->hello.version = pb_str(m->u.hello.version);
            put_u64(m->u.hello.registered_rev, false,
                    &b->hello.has_registered_rev, &b->hello.registered_rev);
            put_u64(m->u.hello.epoch, false, &b->hello.has_epoch,
                    &b->hello.epoch);
            e->hello = &b->hello;
            break;
        case CD_MSG_LOG_UPLOAD:
            rc = log_upload_to_pb(m, s, &b->log_upload);
            e->log_upload = &b->log_upload;
            break;
        case CD_MSG_LOG_ACK:
            clusterd__log_ack__init(&b->log_ack);
            b->log_ack.committed_seq = m->u.log_ack.committed_seq;
            e->log_ack = &b->log_ack;
            break;
        case CD_MSG_COMMAND:
            rc = batch_to_pb(&m->u.command, s, &b->command);
            e->command = &b->command;
            break;
        case CD_MSG_SHUTDOWN:
            clusterd__shutdown_request__init(&b->shutdown);
            e->shutdown = &b->shutdown;
            break;
        case CD_MSG_TOKEN:
            clusterd__token_request__init(&b->token);
            put_u32(m->u.token.ttl_s, &b->token.has_ttl_s, &b->token.ttl_s);
            e->token = &b->token;
            break;
        case CD_MSG_TOKEN_RESP:
            if (m->u.token_resp.token == NULL) {
                return CD_EBADOP;
            }
            clusterd__token_response__init(&b->token_resp);
            b->token_resp.token = (char *)(uintptr_t)m->u.token_resp.token;
            put_u64(m->u.token_resp.expires_ms, false,
                    &b->token_resp.has_expires_ms, &b->token_resp.expires_ms);
            e->token_resp = &b->token_resp;
            break;
        case CD_MSG_CHILD_JOIN:
            if (m->u.child_join.token == NULL) {
                return CD_EBADOP;
            }
            clusterd__child_join_request__init(&b->child_join.req);
            rc = child_info_to_pb(&m->u.child_join.info, &b->child_join.info);
            b->child_join.req.token = pb_str(m->u.child_join.token);
            b->child_join.req.info = &b->child_join.info;
            e->child_join = &b->child_join.req;
            break;
        case CD_MSG_CHILD_JOIN_RESP:
            clusterd__child_join_response__init(&b->child_join_resp);
            b->child_join_resp.child_id = m->u.child_join_resp.child_id;
            b->child_join_resp.cluster_id = m->u.child_join_resp.cluster_id;
            put_u64(m->u.child_join_resp.registered_rev, false,
                    &b->child_join_resp.has_registered_rev,
                    &b->child_join_resp.registered_rev);
            e->child_join_resp = &b->child_join_resp;
            break;
        case CD_MSG_CHILD_LEAVE:
            clusterd__child_leave_request__init(&b->child_leave);
            b->child_leave.child_id = m->u.child_leave.child_id;
            e->child_leave = &b->child_leave;
            break;
        case CD_MSG_CHILD_REPORT:
            rc = child_report_to_pb(m, s, &b->child_report);
            e->child_report = &b->child_report;
            break;
        case CD_MSG_CHILDREN:
            clusterd__children_request__init(&b->children);
            e->children = &b->children;
            break;
        case CD_MSG_CHILDREN_RESP:
            rc = children_resp_to_pb(m, s, &b->children_resp);
            e->children_resp = &b->children_resp;
            break;
        case CD_MSG_BACKUP:
            clusterd__backup_request__init(&b->backup.req);
            put_flag(m->u.backup.now, &b->backup.req.has_now,
                     &b->backup.req.now);
            if (m->u.backup.has_schedule) {
                rc = schedule_to_pb(&m->u.backup.schedule, &b->backup.schedule);
                b->backup.req.schedule = &b->backup.schedule;
            }
            e->backup = &b->backup.req;
            break;
        case CD_MSG_BACKUP_RESP: {
            Clusterd__BackupResponse *o = &b->backup_resp.resp;

            clusterd__backup_response__init(o);
            put_u64(m->u.backup_resp.next_ms, false, &o->has_next_ms,
                    &o->next_ms);
            put_flag(m->u.backup_resp.running, &o->has_running, &o->running);
            if (m->u.backup_resp.has_schedule) {
                rc = schedule_to_pb(&m->u.backup_resp.schedule,
                                    &b->backup_resp.schedule);
                o->schedule = &b->backup_resp.schedule;
            }
            if (rc == 0 && m->u.backup_resp.has_last) {
                rc = result_to_pb(&m->u.backup_resp.last, &b->backup_resp.last);
                o->last = &b->backup_resp.last;
            }
            e->backup_resp = o;
            break;
        }
        case CD_MSG_NONE:
        default:
            return CD_EBADOP;
    }
    e->body_case = (Clusterd__Envelope__BodyCase)m->type;
    return rc;
}

int codec_encode(const struct cd_msg *m,
                 size_t max_frame,
                 uint8_t **out,
                 size_t *out_len)
{
    Clusterd__Envelope e = CLUSTERD__ENVELOPE__INIT;
    struct scratch s = {NULL};
    union pb_body body;
    size_t size;
    size_t packed;
    uint8_t *buf;
    int rc;

    *out = NULL;
    *out_len = 0;
    e.request_id = m->request_id;
    e.has_cluster_id = m->has_cluster_id != 0;
    e.cluster_id = m->cluster_id;
    rc = body_to_pb(m, &s, &body, &e);
    if (rc != 0) {
        goto out;
    }
    size = clusterd__envelope__get_packed_size(&e);
    if (size > UINT32_MAX || (max_frame != 0 && size > max_frame)) {
        rc = CD_EFRAMETOOBIG;
        goto out;
    }
    buf = malloc(CODEC_HEADER_SIZE + size);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    packed = clusterd__envelope__pack(&e, buf + CODEC_HEADER_SIZE);
    assert(packed == size);
    (void)packed;
    codec_put_header(buf, (uint32_t)size);
    *out = buf;
    *out_len = CODEC_HEADER_SIZE + size;
out:
    scratch_free(&s);
    return rc;
}

int codec_command_encode(const struct cd_batch *b,
                         uint64_t cluster_id,
                         void *(*alloc_fn)(size_t),
                         uint8_t **out,
                         size_t *out_len)
{
    Clusterd__Command c;
    struct scratch s = {NULL};
    size_t size;
    size_t packed;
    uint8_t *buf;
    int rc;

    *out = NULL;
    *out_len = 0;
    rc = batch_to_pb(b, &s, &c);
    if (rc != 0) {
        goto out;
    }
    put_u64(cluster_id, false, &c.has_cluster_id, &c.cluster_id);
    size = clusterd__command__get_packed_size(&c);
    /* Past 4 GiB, protobuf-c's 32-bit length prefixes of nested ops would
     * wrap and the entry would not decode. */
    if (size > UINT32_MAX) {
        rc = CD_EFRAMETOOBIG;
        goto out;
    }
    buf = (alloc_fn != NULL ? alloc_fn : malloc)(size);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    packed = clusterd__command__pack(&c, buf);
    assert(packed == size);
    (void)packed;
    *out = buf;
    *out_len = size;
out:
    scratch_free(&s);
    return rc;
}

/* --- registry records -------------------------------------------------- */

int codec_child_info_encode(const struct cd_child_info *ci,
                            uint8_t **out,
                            size_t *len)
{
    Clusterd__ChildInfo pb;
    size_t size;
    size_t packed;
    uint8_t *buf;
    int rc;

    *out = NULL;
    *len = 0;
    rc = child_info_to_pb(ci, &pb);
    if (rc != 0) {
        return rc;
    }
    size = clusterd__child_info__get_packed_size(&pb);
    /* Past 4 GiB protobuf-c's 32-bit string lengths would wrap. */
    if (size > UINT32_MAX) {
        return CD_EFRAMETOOBIG;
    }
    /* Never zero: the id is always on the wire. */
    buf = malloc(size);
    if (buf == NULL) {
        return -ENOMEM;
    }
    packed = clusterd__child_info__pack(&pb, buf);
    assert(packed == size);
    (void)packed;
    *out = buf;
    *len = size;
    return 0;
}

/* Our copies are from malloc; the struct holds them as const. */
static void free_const(const void *p)
{
    free((void *)(uintptr_t)p);
}

/* A copy of s from malloc, or NULL for NULL; -ENOMEM. */
static int dup_str(const char *s, const char **out)
{
    char *c;

    *out = NULL;
    if (s == NULL) {
        return 0;
    }
    c = strdup(s);
    if (c == NULL) {
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

/*
 * A record outlives any buffer it was read from (a store value is only
 * valid within its read transaction), so unlike a decoded message it owns
 * copies of its strings instead of the unpacked message.
 */
int codec_child_info_decode(const uint8_t *buf,
                            size_t len,
                            struct cd_child_info *out)
{
    ProtobufCMessage *root = NULL;
    const Clusterd__ChildInfo *in;
    char **addrs;
    size_t i;
    int rc;

    memset(out, 0, sizeof(*out));
    rc = unpack(&clusterd__child_info__descriptor, buf, len, &root);
    if (rc != 0) {
        return rc;
    }
    in = (const Clusterd__ChildInfo *)root;
    rc = child_info_size(in);
    if (rc != 0) {
        goto out;
    }
    out->id = in->id;
    out->joined_ms = in->joined_ms;
    if (in->n_addresses > 0) {
        addrs = calloc(in->n_addresses, sizeof(*addrs));
        if (addrs == NULL) {
            rc = -ENOMEM;
            goto out;
        }
        /* Set before filling: a failure frees what was copied so far. */
        out->addresses = (const char *const *)addrs;
        out->n_addresses = in->n_addresses;
        for (i = 0; i < in->n_addresses; i++) {
            addrs[i] = strdup(in->addresses[i]);
            if (addrs[i] == NULL) {
                rc = -ENOMEM;
                goto out;
            }
        }
    }
    rc = dup_str(in->hostname, &out->hostname);
    if (rc == 0) {
        rc = dup_str(in->mac, &out->mac);
    }
    if (rc == 0) {
        rc = dup_str(in->os, &out->os);
    }
    if (rc == 0) {
        rc = dup_str(in->app_version, &out->app_version);
    }
out:
    protobuf_c_message_free_unpacked(root, NULL);
    if (rc != 0) {
        codec_child_info_free(out);
    }
    return rc;
}

void codec_child_info_free(struct cd_child_info *ci)
{
    size_t i;

    if (ci == NULL) {
        return;
    }
    if (ci->addresses != NULL) {
        for (i = 0; i < ci->n_addresses; i++) {
            free_const(ci->addresses[i]);
        }
        free_const(ci->addresses);
    }
    free_const(ci->hostname);
    free_const(ci->mac);
    free_const(ci->os);
    free_const(ci->app_version);
    memset(ci, 0, sizeof(*ci));
}

/* --- backup records ---------------------------------------------------- */

/* Pack msg into a buffer from malloc (never zero-sized). */
static int pack_record(const ProtobufCMessage *msg, uint8_t **out, size_t *len)
{
    size_t size = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf;

    if (size > UINT32_MAX) {
        return CD_EFRAMETOOBIG;
    }
    buf = malloc(size != 0 ? size : 1);
    if (buf == NULL) {
        return -ENOMEM;
    }
    size_t packed = protobuf_c_message_pack(msg, buf);
    assert(packed == size);
    (void)packed;
    *out = buf;
    *len = size;
    return 0;
}

int codec_backup_schedule_encode(const struct cd_backup_schedule *bs,
                                 uint8_t **out,
                                 size_t *len)
{
    Clusterd__BackupSchedule pb;
    int rc = schedule_to_pb(bs, &pb);

    *out = NULL;
    *len = 0;
    return rc != 0 ? rc : pack_record(&pb.base, out, len);
}

int codec_backup_schedule_decode(const uint8_t *buf,
                                 size_t len,
                                 struct cd_backup_schedule *out)
{
    ProtobufCMessage *root = NULL;
    int rc = unpack(&clusterd__backup_schedule__descriptor, buf, len, &root);

    memset(out, 0, sizeof(*out));
    if (rc == 0) {
        rc = schedule_from_pb((const Clusterd__BackupSchedule *)root, out);
        protobuf_c_message_free_unpacked(root, NULL);
    }
    if (rc != 0) {
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

int codec_backup_result_encode(const struct cd_backup_result *br,
                               uint8_t **out,
                               size_t *len)
{
    Clusterd__BackupResult pb;
    int rc = result_to_pb(br, &pb);

    *out = NULL;
    *len = 0;
    return rc != 0 ? rc : pack_record(&pb.base, out, len);
}

int codec_backup_result_decode(const uint8_t *buf,
                               size_t len,
                               struct cd_backup_result *out)
{
    ProtobufCMessage *root = NULL;
    int rc = unpack(&clusterd__backup_result__descriptor, buf, len, &root);

    memset(out, 0, sizeof(*out));
    if (rc == 0) {
        rc = result_from_pb((const Clusterd__BackupResult *)root, out);
        protobuf_c_message_free_unpacked(root, NULL);
    }
    if (rc != 0) {
        memset(out, 0, sizeof(*out));
    }
    return rc;
}
