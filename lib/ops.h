/*
 * ops.h - the operations clusterd replicates, as plain C data.
 *
 * This is the vocabulary that the wire codec (proto/) and the store
 * (storage/) share without knowing each other: the codec translates a Raft
 * entry's protobuf Command into a struct cd_batch, and the store applies a
 * struct cd_batch in one write transaction.  Nothing here allocates.
 *
 * Ownership: every pointer in these structs is borrowed.  Whoever builds a
 * batch keeps the bytes alive until the call that takes it returns.
 */
#ifndef CD_OPS_H
#define CD_OPS_H

#include <stddef.h>
#include <stdint.h>

/* A borrowed run of bytes.  data may be NULL when len is 0. */
struct cd_buf
{
    const void *data;
    size_t len;
};

enum cd_op_type {
    CD_OP_PUT = 1,           /* key = value */
    CD_OP_DELETE = 2,        /* remove key */
    CD_OP_DELETE_PREFIX = 3, /* remove every key starting with key */
    CD_OP_TXN = 4,           /* compares, then then_ops or else_ops */
    CD_OP_COMPACT = 5,       /* drop history at or below revision */
    CD_OP_LOG_APPEND = 6,    /* logs[(child_id, seq)] = value */
};

enum cd_cmp_target {
    CD_CMP_VALUE = 1,      /* compare value bytes (memcmp order) */
    CD_CMP_VERSION = 2,    /* number of puts since creation; 0 if absent */
    CD_CMP_CREATE_REV = 3, /* revision of creation; 0 if absent */
    CD_CMP_MOD_REV = 4,    /* revision of last change; 0 if absent */
    CD_CMP_EXISTS = 5,     /* number: 1 if the key exists, else 0 */
};

enum cd_cmp_result {
    CD_CMP_EQUAL = 1,
    CD_CMP_NOT_EQUAL = 2,
    CD_CMP_LESS = 3,    /* current < given */
    CD_CMP_GREATER = 4, /* current > given */
};

/*
 * One compare of a transaction.  For CD_CMP_VALUE, value is compared; for
 * the others, number is.  A CD_CMP_VALUE compare on an absent key is false
 * whatever the result asked for (as in etcd).
 */
struct cd_compare
{
    struct cd_buf key;
    enum cd_cmp_target target;
    enum cd_cmp_result result;
    struct cd_buf value;
    uint64_t number;
};

struct cd_op
{
    enum cd_op_type type;
    /*
     * Client request id, for deduplication of retried writes: a write whose
     * (client_id, seq) the store has already applied is not applied again
     * (its result says CD_EDUPLICATE).  client_id 0 means "no id".  Ops
     * nested in a transaction ignore these fields.
     */
    uint64_t client_id;
    uint64_t seq;
    struct cd_buf key;   /* PUT, DELETE, DELETE_PREFIX */
    struct cd_buf value; /* PUT, LOG_APPEND */
    uint64_t revision;   /* COMPACT */
    /* LOG_APPEND: the record's identity and origin time (ms since epoch). */
    uint64_t child_id;
    uint64_t log_seq;
    uint64_t log_time_ms;
    /* TXN */
    const struct cd_compare *compares;
    size_t n_compares;
    const struct cd_op *then_ops; /* PUT, DELETE, DELETE_PREFIX only */
    size_t n_then;
    const struct cd_op *else_ops; /* PUT, DELETE, DELETE_PREFIX only */
    size_t n_else;
};

/*
 * One Raft entry's worth of operations.  time_ms is the leader's wall clock
 * when it built the batch: the store uses it (never its own clock) for
 * anything time-based, so every replica computes the same state.
 */
struct cd_batch
{
    uint64_t time_ms;
    const struct cd_op *ops;
    size_t n_ops;
};

/* The outcome of one op of a batch. */
struct cd_result
{
    int status;         /* 0, or a negative code from err.h */
    uint64_t revision;  /* store revision after this op */
    int succeeded;      /* TXN: 1 if the compares held */
    uint64_t n_deleted; /* DELETE, DELETE_PREFIX, TXN: keys removed */
};

#endif
