/*
 * codec.h - clusterd's wire format: framing and messages.
 *
 * The only module that touches the protobuf-c code generated from
 * proto/clusterd.proto.  Everyone else speaks struct cd_msg (a message)
 * and struct cd_batch (a Raft entry), plain C structs defined here and in
 * lib/ops.h.
 *
 * A frame is a 4-byte big-endian payload length followed by that many bytes
 * of a packed Envelope.  The length is checked against the reader's maximum
 * before anything is allocated.  Unknown fields are skipped (a newer peer
 * may send more); a payload that does not parse, lacks a required field,
 * names an unknown operation or enum value, or exceeds a bound is
 * CD_EMALFORMED / CD_EBADOP / CD_ETOOMANY, never a crash.
 *
 * Threads: no shared state; any thread may call anything here.
 *
 * Ownership: a decoded message owns its memory; every pointer in it
 * (cd_buf data, strings, arrays) borrows from it until codec_msg_free().
 * A decoded registry record (struct cd_child_info on its own) owns its
 * strings until codec_child_info_free().
 * For encoding, pointers in the caller's struct are borrowed for the call.
 */
#ifndef CD_CODEC_H
#define CD_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../lib/ops.h"

#define CODEC_HEADER_SIZE 4
#define CODEC_DEFAULT_MAX_FRAME (16u << 20)
/* Bounds on decoded content, against memory blow-up from tiny frames. */
#define CODEC_MAX_OPS 100000u      /* ops in a Command or write */
#define CODEC_MAX_TXN_OPS 1024u    /* compares, then or else ops of a txn */
#define CODEC_MAX_ADDRESSES 64u    /* addresses of a child */
#define CODEC_MAX_SERVICES 256u    /* services of a child's report or status */
#define CODEC_MAX_CHILDREN 100000u /* children in a listing */

/* --- framing ----------------------------------------------------------- */

/* Reassembles frames from a byte stream (e.g. libuv read callbacks). */
struct codec_reader
{
    size_t max_frame;
    uint8_t header[CODEC_HEADER_SIZE];
    size_t header_have;
    uint8_t *payload; /* owned */
    size_t payload_len;
    size_t payload_have;
    int failed;
};

/* max_frame 0 means CODEC_DEFAULT_MAX_FRAME. */
void codec_reader_init(struct codec_reader *r, size_t max_frame);
/* Free the reader's buffer; NULL-safe.  The reader can be reused after
 * codec_reader_init(). */
void codec_reader_free(struct codec_reader *r);

/*
 * Consume bytes from data[0..len).  *consumed says how many were used.
 * Returns 1 with *payload / *payload_len set when a whole frame is ready
 * (borrowed from the reader until the next call; call again with the rest
 * of the data), 0 when more bytes are needed, or CD_EFRAMETOOBIG when the
 * announced length exceeds max_frame: the stream cannot be resynchronised,
 * the caller replies with an error and closes, and every later call
 * returns the same error.  -ENOMEM when the frame's buffer cannot be
 * allocated; nothing was consumed and the call may be repeated.
 */
int codec_reader_feed(struct codec_reader *r,
                      const uint8_t *data,
                      size_t len,
                      size_t *consumed,
                      const uint8_t **payload,
                      size_t *payload_len);

/* Write the 4-byte big-endian header for a payload of len bytes. */
void codec_put_header(uint8_t out[CODEC_HEADER_SIZE], uint32_t len);

/* --- messages ---------------------------------------------------------- */

/* The body kinds.  Values equal the Envelope's oneof field numbers. */
enum cd_msg_type {
    CD_MSG_NONE = 0,
    CD_MSG_ERROR = 10,
    CD_MSG_OK = 11,
    CD_MSG_WRITE = 12,
    CD_MSG_WRITE_RESP = 13,
    CD_MSG_GET = 14,
    CD_MSG_RANGE = 15,
    CD_MSG_RANGE_RESP = 16,
    CD_MSG_WATCH = 17,
    CD_MSG_CHANGES = 18,
    CD_MSG_STATUS = 19,
    CD_MSG_STATUS_RESP = 20,
    CD_MSG_MEMBERS = 21,
    CD_MSG_MEMBERS_RESP = 22,
    CD_MSG_MEMBER_CHANGE = 23,
    CD_MSG_TRANSFER = 24,
    CD_MSG_SNAPSHOT = 25,
    CD_MSG_SNAPSHOT_CHUNK = 26,
    CD_MSG_HELLO = 27,
    CD_MSG_LOG_UPLOAD = 28,
    CD_MSG_LOG_ACK = 29,
    CD_MSG_COMMAND = 30,
    CD_MSG_SHUTDOWN = 31,
    CD_MSG_TOKEN = 32,
    CD_MSG_TOKEN_RESP = 33,
    CD_MSG_CHILD_JOIN = 34,
    CD_MSG_CHILD_JOIN_RESP = 35,
    CD_MSG_CHILD_LEAVE = 36,
    CD_MSG_CHILD_REPORT = 37,
    CD_MSG_CHILDREN = 38,
    CD_MSG_CHILDREN_RESP = 39,
    CD_MSG_BACKUP = 40,
    CD_MSG_BACKUP_RESP = 41,
};

/* "WRITE", "CHANGES", ...; "UNKNOWN" otherwise.  Static storage. */
const char *codec_msg_type_name(enum cd_msg_type t);

struct cd_kv
{
    struct cd_buf key;
    struct cd_buf value;
    uint64_t create_rev;
    uint64_t mod_rev;
    uint64_t version;
};

enum cd_event_type { CD_EVENT_PUT = 1, CD_EVENT_DELETE = 2 };

struct cd_event
{
    enum cd_event_type type;
    uint32_t sub;
    struct cd_kv kv;
};

enum cd_member_role {
    CD_ROLE_UNSET = 0,
    CD_ROLE_VOTER = 1,
    CD_ROLE_STANDBY = 2,
    CD_ROLE_SPARE = 3,
};

struct cd_member
{
    uint64_t id;
    const char *address; /* raft address, "a.b.c.d:port" */
    enum cd_member_role role;
    const char *api_address; /* NULL if absent */
    int leader;
    int reachable;
};

enum cd_member_action {
    CD_MEMBER_ADD = 1,
    CD_MEMBER_REMOVE = 2,
    CD_MEMBER_ASSIGN = 3,
};

struct cd_log_record
{
    uint64_t seq;
    uint64_t time_ms;
    struct cd_buf record;
};

/* A child's registry record: the value of /cluster/children/<id>. */
struct cd_child_info
{
    uint64_t id;
    const char *hostname;         /* NULL if absent */
    const char *const *addresses; /* n_addresses strings, none NULL */
    size_t n_addresses;
    const char *mac;         /* NULL if absent */
    const char *os;          /* NULL if absent */
    const char *app_version; /* NULL if absent */
    uint64_t joined_ms;
};

struct cd_service_health
{
    const char *name;
    int up;
    const char *detail; /* NULL if absent */
};

/* One child as the leader sees it. */
struct cd_child_status
{
    struct cd_child_info info;
    /* "following", "degraded", "gone" or "unknown"; NULL if absent */
    const char *state;
    int has_last_seen; /* last_seen_ms_ago present */
    uint64_t last_seen_ms_ago;
    uint64_t revision;
    uint64_t lag;
    const struct cd_service_health *services;
    size_t n_services;
    uint64_t staleness_ms;
};

/* Paths and texts of the backup records are held in place, not borrowed:
 * a record decoded from the store outlives the value it was read from.
 * Longer ones are refused (paths) or cut (the error text). */
#define CD_BACKUP_DIR_MAX 256
#define CD_BACKUP_FILE_MAX 320
#define CD_BACKUP_ERROR_MAX 512

/* When the leader takes backups: the value of /cluster/backup/schedule. */
struct cd_backup_schedule
{
    uint64_t interval_s; /* 0: no scheduled backups */
    uint32_t retain;     /* backups kept; 0: all */
    int has_at;          /* aligned on at_minute */
    uint32_t at_minute;  /* minutes after local midnight, 0..1439 */
    uint64_t set_ms;
    char dir[CD_BACKUP_DIR_MAX]; /* absolute; "" only when off */
};

/* The last backup taken: the value of /cluster/backup/last. */
struct cd_backup_result
{
    uint64_t time_ms;
    int ok;
    uint64_t node_id;
    uint64_t revision;
    uint64_t bytes;
    uint64_t keys;
    uint64_t duration_ms;
    uint32_t failures; /* in a row, this one included; 0 when ok */
    uint32_t pruned;
    uint64_t last_ok_ms; /* 0: none yet */
    char file[CD_BACKUP_FILE_MAX];
    char last_ok_file[CD_BACKUP_FILE_MAX];
    char error[CD_BACKUP_ERROR_MAX];
};

/*
 * One message.  Optional strings are NULL when absent; optional numbers
 * and flags are 0.  Only the member of u named by type is meaningful.
 */
struct cd_msg
{
    uint64_t request_id;
    int has_cluster_id;
    uint64_t cluster_id;
    enum cd_msg_type type;
    union {
        struct
        {
            int code; /* a negative code of lib/err.h */
            const char *name;
            const char *message;
            const char *leader; /* NOT_LEADER: the leader's API address */
        } error;
        struct
        {
            struct cd_op op; /* any op type but LOG_APPEND */
        } write;
        struct
        {
            uint64_t revision;
            int succeeded;
            uint64_t deleted;
        } write_resp;
        struct
        {
            struct cd_buf key;
            int serializable;
        } get;
        struct
        {
            struct cd_buf prefix;
            struct cd_buf start;
            uint64_t limit;
            int serializable;
            int keys_only;
        } range;
        struct
        {
            const struct cd_kv *kvs;
            size_t n_kvs;
            int more;
            uint64_t revision;
            int serializable;
        } range_resp;
        struct
        {
            uint64_t since;
            struct cd_buf prefix;
        } watch;
        struct
        {
            const struct cd_event *events;
            size_t n_events;
            uint64_t revision;
            int compacted;
            uint64_t compact_rev;
            uint64_t epoch; /* with compacted: the parents' history epoch */
        } changes;
        struct
        {
            uint64_t id;
            uint64_t leader_id;
            const char *leader_api;
            uint64_t term;
            uint64_t revision;
            uint64_t applied_index;
            uint64_t commit_index;
            const char *state;
            const char *version;
            uint64_t epoch; /* history epoch of the node's store */
        } status_resp;
        struct
        {
            const struct cd_member *members;
            size_t n_members;
        } members_resp;
        struct
        {
            enum cd_member_action action;
            uint64_t id;
            const char *address;
            enum cd_member_role role;
            const char *token;
            const char *api_address;
        } member_change;
        struct
        {
            uint64_t to;
        } transfer;
        struct
        {
            int recent; /* a copy made a moment ago will do */
        } snapshot;
        struct
        {
            uint64_t offset;
            struct cd_buf data;
            int last;
            uint64_t revision;
        } snapshot_chunk;
        struct
        {
            uint64_t cluster_id;
            uint64_t child_id;
            uint64_t revision;
            const char *hostname;
            const char *version;
            uint64_t registered_rev; /* from CHILD_JOIN_RESP; 0: unknown */
            uint64_t epoch;          /* the cache's history epoch */
        } hello;
        struct
        {
            uint64_t child_id;
            const struct cd_log_record *records;
            size_t n_records;
        } log_upload;
        struct
        {
            uint64_t committed_seq;
        } log_ack;
        struct cd_batch command;
        struct
        {
            uint32_t ttl_s; /* 0: the server's default */
        } token;
        struct
        {
            const char *token;
            uint64_t expires_ms;
        } token_resp;
        struct
        {
            const char *token;
            struct cd_child_info info; /* info.id is ignored */
        } child_join;
        struct
        {
            uint64_t child_id;
            uint64_t cluster_id;
            uint64_t registered_rev; /* the revision of the registration */
        } child_join_resp;
        struct
        {
            uint64_t child_id;
        } child_leave;
        struct
        {
            uint64_t child_id;
            uint64_t revision;
            const char *state; /* "following" or "degraded"; NULL if absent */
            const struct cd_service_health *services;
            size_t n_services;
            uint64_t staleness_ms; /* 0: connected to a parent now */
        } child_report;
        /* CD_MSG_CHILDREN has no body fields. */
        struct
        {
            const struct cd_child_status *children;
            size_t n_children;
            uint64_t revision;
        } children_resp;
        struct
        {
            int has_schedule; /* replace the schedule with this one */
            struct cd_backup_schedule schedule;
            int now; /* take one now */
        } backup;
        struct
        {
            int has_schedule;
            struct cd_backup_schedule schedule;
            int has_last;
            struct cd_backup_result last;
            uint64_t next_ms; /* 0: none due */
            int running;
        } backup_resp;
    } u;
    void *codec__owned; /* decoded messages only: what to free */
};

/*
 * Decode one frame payload (without its header) into *out.  On success the
 * caller owns *out and must codec_msg_free() it.  On error *out needs no
 * freeing.  Errors: CD_EMALFORMED (does not parse, a required field
 * missing, no body), CD_EBADOP (unknown op type, enum value or an op not
 * allowed where it stands), CD_ETOOMANY (past a CODEC_MAX_* bound, or a
 * payload that would unpack to over 128 times its size), -ENOMEM.
 */
int codec_decode(const uint8_t *payload, size_t len, struct cd_msg *out);

/* Free what codec_decode() allocated; NULL-safe, safe on a zeroed msg. */
void codec_msg_free(struct cd_msg *m);

/*
 * Encode m as a whole frame (header included) into a buffer from malloc;
 * *out / *out_len receive it and the caller frees it.  Errors: CD_EBADOP
 * (type or content invalid), CD_ETOOMANY (past a CODEC_MAX_* bound),
 * CD_EFRAMETOOBIG (payload over UINT32_MAX or max_frame when nonzero),
 * -ENOMEM.
 */
int codec_encode(const struct cd_msg *m,
                 size_t max_frame,
                 uint8_t **out,
                 size_t *out_len);

/* Fill m as an error reply to request_id with code, its name and message
 * from lib/err.h; strings are static.  leader may be NULL. */
void codec_error_msg(struct cd_msg *m,
                     uint64_t request_id,
                     int code,
                     const char *leader);

/* --- Raft entries ------------------------------------------------------ */

/*
 * Encode a batch as a packed Command (no frame header) into memory from
 * alloc_fn (raft_malloc for raft_apply; NULL means malloc).  cluster_id 0
 * is left out.  Errors: CD_EBADOP, CD_ETOOMANY, CD_EFRAMETOOBIG (a buffer
 * or the whole Command over UINT32_MAX, which protobuf cannot frame),
 * -ENOMEM.
 */
int codec_command_encode(const struct cd_batch *b,
                         uint64_t cluster_id,
                         void *(*alloc_fn)(size_t),
                         uint8_t **out,
                         size_t *out_len);

/* A decoded Command: batch borrows from owned until codec_command_free. */
struct codec_command
{
    struct cd_batch batch;
    uint64_t cluster_id; /* 0 when absent */
    void *owned;
};

/* Errors as codec_decode(). */
int codec_command_decode(const uint8_t *buf,
                         size_t len,
                         struct codec_command *out);
void codec_command_free(struct codec_command *c);

/* --- registry records -------------------------------------------------- */

/*
 * The registry record stored as the value of /cluster/children/<id>: a
 * ChildInfo message on its own (not an Envelope, no frame header).
 *
 * Encode ci into a buffer from malloc; *out / *len receive it and the
 * caller frees it.  Errors: CD_ETOOMANY (over CODEC_MAX_ADDRESSES),
 * CD_EBADOP (addresses NULL with n_addresses > 0, or a NULL address),
 * CD_EFRAMETOOBIG (over UINT32_MAX), -ENOMEM.
 */
int codec_child_info_encode(const struct cd_child_info *ci,
                            uint8_t **out,
                            size_t *len);

/*
 * Decode; on success *out borrows nothing from buf and must be freed with
 * codec_child_info_free(out).  On error *out is zeroed and needs no
 * freeing.  Errors: CD_EMALFORMED (does not parse, id missing),
 * CD_ETOOMANY (over CODEC_MAX_ADDRESSES, or a payload that would unpack
 * to over 128 times its size), -ENOMEM.
 */
int codec_child_info_decode(const uint8_t *buf,
                            size_t len,
                            struct cd_child_info *out);

/* Free what codec_child_info_decode() allocated and zero *ci; NULL-safe,
 * safe on a zeroed struct.  Only for decoded records. */
void codec_child_info_free(struct cd_child_info *ci);

/*
 * The backup records, BackupSchedule and BackupResult on their own.  Encode
 * into a buffer from malloc (the caller frees *out); CD_EBADOP for a dir
 * or file longer than its array allows (unterminated), -ENOMEM.  Decode:
 * nothing to free; CD_EMALFORMED (does not parse, a required field
 * missing, a path too long), CD_ETOOMANY, -ENOMEM.
 */
int codec_backup_schedule_encode(const struct cd_backup_schedule *bs,
                                 uint8_t **out,
                                 size_t *len);
int codec_backup_schedule_decode(const uint8_t *buf,
                                 size_t len,
                                 struct cd_backup_schedule *out);
int codec_backup_result_encode(const struct cd_backup_result *br,
                               uint8_t **out,
                               size_t *len);
int codec_backup_result_decode(const uint8_t *buf,
                               size_t len,
                               struct cd_backup_result *out);

#endif
