/* Wire format of the Melissa protocol, version 1 (docs/protocol.md): the C twin of
 * src/melissa/protocol/messages.py and partition.py. Internal to libmelissa: no ZeroMQ, no
 * global state, so that tests/c/protocol_harness.c can check it byte for byte against Python. */
#ifndef MELISSA_PROTOCOL_H
#define MELISSA_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define MLS_HEADER_SIZE 72
#define MLS_TOKEN_BYTES 16
#define MLS_VERSION 1
#define MLS_MAX_JSON (1u << 20) /* the server refuses larger control payloads; so do we */
#define MLS_KEY_CHARS 40 /* a CURVE public key in Z85 */

enum mls_kind {
    MLS_HELLO = 1,
    MLS_WELCOME = 2,
    MLS_DATA = 3,
    MLS_END = 4,
    MLS_END_ACK = 5,
    MLS_ERROR = 6,
    MLS_ATTACH = 16,
    MLS_FINISH = 17,
    MLS_EVENT = 18,
    MLS_RANK_EVENT = 19
};

enum mls_dtype { MLS_DTYPE_NONE = 0, MLS_FLOAT64 = 1, MLS_FLOAT32 = 2 };

typedef struct {
    uint16_t kind;
    uint8_t token[MLS_TOKEN_BYTES];
    int64_t simulation_id;
    uint32_t attempt;
    uint32_t client_rank;
    uint32_t time_step;
    uint32_t field_id;
    uint64_t offset;
    uint64_t count;
    uint8_t dtype;
} mls_header;

/* Little-endian whatever the host, "<4sHH16sqIIIIQQB7x". */
void mls_encode_header(uint8_t out[MLS_HEADER_SIZE], const mls_header *h);

/* 0 if `frame` is a valid header with this token (same checks and order as decode_header in
 * messages.py); else -1 with the reason in `why`. */
int mls_decode_header(const uint8_t *frame, size_t len, const uint8_t token[MLS_TOKEN_BYTES],
                      mls_header *h, char *why, size_t why_size);

const char *mls_kind_name(unsigned kind);

/* 0 and 16 bytes if `hex` is 32 hexadecimal digits; -1 with the reason otherwise. */
int mls_token_from_hex(const char *hex, uint8_t token[MLS_TOKEN_BYTES], char *why,
                       size_t why_size);

/* The HELLO payload exactly as Python's json.dumps(..., separators=(",", ":")) writes it:
 * {"field":...,"global_size":N,"client_ranks":N,"shape":[...]|null[,"parameters":{...}]}.
 * ndims = 0 writes "shape":null; `parameters` (from mls_parameters_json) is appended as is when
 * not NULL. Returns the length, -1 if `field` is not valid UTF-8, -2 if `out` is too small. */
long mls_hello_json(char *out, size_t out_size, const char *field, uint64_t global_size,
                    uint32_t client_ranks, int ndims, const int64_t *shape,
                    const char *parameters);

/* A double as Python's repr (and so json.dumps) writes it: the shortest digits that read back
 * as the same double, e.g. 123.456, 1e-05, 100.0, 1.5e+16; NaN, Infinity, -Infinity. */
void mls_format_double(double x, char out[32]);

/* MELISSA_PARAMETERS (a JSON object of numbers, as the launcher writes it) as Python's client
 * forwards it in HELLO: {str(k): float(v)} re-encoded compactly, keys in first-seen order with
 * the last value of a repeated key. A new string (free it), or NULL if `text` is not a JSON
 * object of numbers. */
char *mls_parameters_json(const char *text, size_t len);

/* ---- JSON reading: a small strict parser (RFC 8259) into a flat tree, for WELCOME/ERROR. */
enum mls_json_type { MLS_JNULL, MLS_JFALSE, MLS_JTRUE, MLS_JNUMBER, MLS_JSTRING, MLS_JARRAY,
                     MLS_JOBJECT };

typedef struct {
    int type;
    int first_child; /* arrays and objects: index of the first element, -1 if empty */
    int next;        /* next sibling, -1 if last */
    int key;         /* object members: index into the string pool of the decoded key; else -1 */
    int key_length;  /* its decoded length (a key may hold "\u0000") */
    int value;       /* strings: index into the string pool; numbers: offset of the text */
    int length;      /* strings: decoded length; numbers: text length; containers: elements */
} mls_jnode;

typedef struct {
    mls_jnode *nodes;
    int count, capacity;
    char *pool; /* decoded strings, each NUL-terminated */
    size_t pool_used, pool_capacity;
    const char *text; /* the parsed text (numbers are read from it) */
} mls_json;

/* Parse `len` bytes; 0 on success (root = node 0), -1 with the reason otherwise. Never reads
 * outside [text, text + len); nesting deeper than 64 is refused. Free with mls_json_free. */
int mls_json_parse(mls_json *doc, const char *text, size_t len, char *why, size_t why_size);
void mls_json_free(mls_json *doc);
/* The member `key` of object node `obj` (the last one if repeated, as Python), or -1. */
int mls_json_member(const mls_json *doc, int obj, const char *key);
const char *mls_json_string(const mls_json *doc, int node); /* NULL if not a string */
/* 0 and the value if `node` is an integer (no fraction, no exponent) in range; else -1. */
int mls_json_int64(const mls_json *doc, int node, int64_t *value);

/* ---- WELCOME and ERROR payloads. */
typedef struct {
    int64_t field_id;
    int64_t nb_time_steps;
    int nb_ranks;       /* server ranks: length of endpoints and ranges */
    char **endpoints;   /* nb_ranks strings */
    int64_t (*ranges)[2];
    char **public_keys; /* nb_ranks CURVE keys (Z85), or NULL: the server does not encrypt */
} mls_welcome;

int mls_parse_welcome(const char *text, size_t len, mls_welcome *w, char *why, size_t why_size);
void mls_welcome_free(mls_welcome *w);
/* The "error" string of an ERROR payload, decoded, in `out` (truncated); "?" if none. */
void mls_parse_error(const char *text, size_t len, char *out, size_t out_size);

/* ---- Partition (partition.py): the part of [offset, offset + count) owned by each rank. */
typedef struct {
    int server_rank;
    uint64_t global_offset;
    uint64_t local_start;
    uint64_t count;
} mls_piece;

/* Fills at most nb_ranks pieces (in rank order, empty intersections skipped); returns how many. */
int mls_split(uint64_t offset, uint64_t count, const int64_t (*ranges)[2], int nb_ranks,
              mls_piece *pieces);

#endif
