/* libmelissa: the client side of the Melissa protocol in C99 over libzmq. The behaviour, the
 * checks and the messages follow the Python client (src/melissa/client/session.py); the wire
 * format is in protocol.c. One session per process, as in Python: the API is a set of global
 * functions by contract. */
#define _POSIX_C_SOURCE 200809L

#include "melissa.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "melissa_internal.h"
#include "protocol.h"

#define DEFAULT_TIMEOUT_S 60.0
/* Below this size ZeroMQ copies the payload anyway (same threshold as the Python client). Above
 * it ZeroMQ sends from memory it does not own, without copying, and calls release_payload when
 * done. By default that memory is a buffer of the field's own: send copies the values into it
 * and returns at once, so ZeroMQ sends while the simulation computes its next step; the next
 * send of the field waits (at most MELISSA_TIMEOUT) until the buffer is free again. One step in
 * flight per field, one extra copy of the local field in memory. With MELISSA_ZERO_COPY=1, the
 * caller's array itself, and send waits until ZeroMQ has released it (no extra memory, no
 * overlap: the Python client's behaviour). bench/client_overhead.py measures both. */
#define ZERO_COPY_BYTES (64 * 1024)
#define WHAT_SIZE 256

enum state { S_NONE, S_OPEN, S_FINALIZED, S_BROKEN };

/* Payloads ZeroMQ holds without owning them (decremented by its I/O thread). */
typedef struct {
    int pending;
    char *buffer; /* the field's own copy of its last step (default mode) */
    size_t size;
} inflight_t;

typedef struct {
    char *name;
    uint32_t field_id;
    int local_size;
    uint32_t nb_steps, steps_sent;
    int nb_pieces;
    mls_piece *pieces;
    inflight_t *inflight; /* allocated apart: S.fields moves when it grows */
} field_t;

static struct {
    enum state state;
    char broken_reason[256];
    /* environment */
    char *server;
    char *parameters; /* MELISSA_PARAMETERS as forwarded in HELLO, or NULL */
    int64_t simulation_id;
    uint8_t token[MLS_TOKEN_BYTES];
    uint32_t attempt;
    double timeout_s;
    int zero_copy; /* MELISSA_ZERO_COPY=1 */
    /* MELISSA_SERVER_KEY set: CURVE to every server rank, with an ephemeral keypair */
    int encrypted;
    char server_key[MLS_KEY_CHARS + 1]; /* rank 0's; the others' come in WELCOME */
    char public_key[MLS_KEY_CHARS + 1], secret_key[MLS_KEY_CHARS + 1];
    /* this process in the simulation */
    int rank, ranks;
    /* connection */
    void *context;
    void **sockets; /* per server rank, connected lazily; [0] is MELISSA_SERVER */
    int nb_sockets;
    char **endpoints;
    char **server_keys; /* NULL, or a CURVE key per endpoint */
    int nb_endpoints;
    field_t *fields;
    int nb_fields;
    /* release_payload signals `released` under `mutex` */
    pthread_mutex_t mutex;
    pthread_cond_t released;
    inflight_t direct; /* the caller's arrays, with MELISSA_ZERO_COPY=1 */
} S = {.state = S_NONE, .rank = -1, .mutex = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t cond_once = PTHREAD_ONCE_INIT;
static char last_error[1024];

/* ---- errors ----------------------------------------------------------------------------- */

int mls_error(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    if (S.ranks > 1) {
        size_t n = strlen(last_error);
        snprintf(last_error + n, sizeof last_error - n, " [client rank %d of %d]", S.rank,
                 S.ranks);
    }
    fprintf(stderr, "melissa: error: %s\n", last_error);
    fflush(stderr);
    return code;
}

const char *melissa_last_error(void) { return last_error; }

const char *melissa_strerror(int code) {
    switch (code) {
    case MELISSA_OK: return "success";
    case MELISSA_ERR_ENV: return "MELISSA_* environment missing or invalid";
    case MELISSA_ERR_ARG: return "invalid argument";
    case MELISSA_ERR_ORDER: return "call out of order";
    case MELISSA_ERR_SIZE: return "array size or type differs from the declared field";
    case MELISSA_ERR_STEPS: return "wrong number of time steps";
    case MELISSA_ERR_TIMEOUT:
        return "the server did not answer or take data within MELISSA_TIMEOUT";
    case MELISSA_ERR_REFUSED: return "refused by the server";
    case MELISSA_ERR_PROTOCOL: return "garbled answer from the server";
    case MELISSA_ERR_SYSTEM: return "ZeroMQ or system failure";
    case MELISSA_ERR_MPI: return "MPI failure";
    default: return "unknown error code";
    }
}

int melissa_mpi_failed(const char *field) {
    return mls_error(MELISSA_ERR_MPI, "melissa_init(\"%.200s\"): an MPI call failed "
                     "(MPI_Comm_rank, "
                     "MPI_Comm_size, MPI_Allreduce or MPI_Exscan): is MPI initialised, and is "
                     "the communicator valid?", field ? field : "");
}

char *mls_fortran_string(const char *text, size_t length, const char *what) {
    while (length > 0 && text[length - 1] == ' ') length--; /* Fortran pads with blanks */
    if (memchr(text, '\0', length) != NULL) {
        mls_error(MELISSA_ERR_ARG, "%s: the field name holds a NUL character", what);
        return NULL;
    }
    char *s = malloc(length + 1);
    if (s == NULL) {
        mls_error(MELISSA_ERR_SYSTEM, "out of memory");
        return NULL;
    }
    memcpy(s, text, length);
    s[length] = '\0';
    return s;
}

void mls_fortran_return(int code, int *ierr) {
    if (ierr != NULL) *ierr = code;
    else if (code != MELISSA_OK) exit(code); /* the message is printed; flushes Fortran units */
}

/* ---- time ------------------------------------------------------------------------------- */

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int timeout_ms(void) {
    double ms = S.timeout_s * 1000.0;
    return ms > (double)INT_MAX ? INT_MAX : (int)ms;
}

static int remaining_ms(double deadline) {
    double ms = (deadline - now_s()) * 1000.0;
    if (ms <= 0) return 0;
    return ms > (double)INT_MAX ? INT_MAX : (int)ceil(ms);
}

/* ---- environment ------------------------------------------------------------------------ */

static int parse_int_env(const char *key, long long max, long long dflt, long long *out) {
    const char *text = getenv(key);
    if (text == NULL) {
        *out = dflt;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    while (*end == ' ' || *end == '\t' || *end == '\n') end++;
    if (end == text || *end != '\0' || errno == ERANGE)
        return mls_error(MELISSA_ERR_ENV, "%s='%.100s' is not an integer", key, text);
    if (v < 0) return mls_error(MELISSA_ERR_ENV, "%s=%lld must not be negative", key, v);
    if (v > max) return mls_error(MELISSA_ERR_ENV, "%s=%lld is too large", key, v);
    *out = v;
    return 0;
}

/* MELISSA_SERVER_KEY: the study is encrypted (server_config.encryption). */
static int load_server_key(void) {
    const char *key = getenv("MELISSA_SERVER_KEY");
    uint8_t raw[32];
    S.encrypted = key != NULL && key[0] != '\0';
    if (!S.encrypted) return 0;
    if (strlen(key) != MLS_KEY_CHARS || zmq_z85_decode(raw, key) == NULL)
        return mls_error(MELISSA_ERR_ENV, "MELISSA_SERVER_KEY must be a %d-character Z85 CURVE "
                         "public key, got '%.100s'", MLS_KEY_CHARS, key);
    if (!zmq_has("curve")) {
        int major, minor, patch;
        zmq_version(&major, &minor, &patch);
        return mls_error(MELISSA_ERR_ENV, "MELISSA_SERVER_KEY (an encrypted study) needs ZeroMQ "
                         "with CURVE support, and libzmq %d.%d.%d here has none: link a libzmq "
                         "built with libsodium", major, minor, patch);
    }
    if (zmq_curve_keypair(S.public_key, S.secret_key) != 0)
        return mls_error(MELISSA_ERR_ENV, "cannot make a CURVE keypair: %s",
                         zmq_strerror(zmq_errno()));
    memcpy(S.server_key, key, MLS_KEY_CHARS + 1);
    return 0;
}

static int load_environment(void) {
    const char *keys[3] = {"MELISSA_SERVER", "MELISSA_SIMULATION_ID", "MELISSA_STUDY_TOKEN"};
    char missing[128] = "";
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(keys[i]);
        if (v == NULL || v[0] == '\0') {
            if (missing[0]) strcat(missing, ", ");
            strcat(missing, keys[i]);
        }
    }
    if (missing[0])
        return mls_error(MELISSA_ERR_ENV, "%s not set: run this simulation through "
                         "melissa-launcher, which sets MELISSA_SERVER, MELISSA_SIMULATION_ID and "
                         "MELISSA_STUDY_TOKEN", missing);
    char why[160];
    if (mls_token_from_hex(getenv("MELISSA_STUDY_TOKEN"), S.token, why, sizeof why) != 0)
        return mls_error(MELISSA_ERR_ENV, "%s", why);
    long long sim, attempt;
    if (parse_int_env("MELISSA_SIMULATION_ID", INT64_MAX, 0, &sim) != 0
        || parse_int_env("MELISSA_ATTEMPT", UINT32_MAX, 0, &attempt) != 0)
        return MELISSA_ERR_ENV;
    S.simulation_id = sim;
    S.attempt = (uint32_t)attempt;
    S.timeout_s = DEFAULT_TIMEOUT_S;
    const char *timeout = getenv("MELISSA_TIMEOUT");
    if (timeout != NULL) {
        char *end;
        double t = strtod(timeout, &end);
        while (*end == ' ' || *end == '\t' || *end == '\n') end++;
        if (end == timeout || *end != '\0')
            return mls_error(MELISSA_ERR_ENV, "MELISSA_TIMEOUT='%.100s' is not a number of "
                             "seconds", timeout);
        if (!(t > 0) || !isfinite(t))
            return mls_error(MELISSA_ERR_ENV, "MELISSA_TIMEOUT='%.100s' must be a positive "
                             "number of seconds", timeout);
        S.timeout_s = t;
    }
    const char *parameters = getenv("MELISSA_PARAMETERS");
    if (parameters != NULL) {
        S.parameters = mls_parameters_json(parameters, strlen(parameters));
        if (S.parameters == NULL)
            return mls_error(MELISSA_ERR_ENV, "MELISSA_PARAMETERS='%.200s' is not a JSON object "
                             "of numbers (the launcher sets it)", parameters);
    }
    const char *zero_copy = getenv("MELISSA_ZERO_COPY");
    if (zero_copy != NULL && strcmp(zero_copy, "0") != 0 && strcmp(zero_copy, "1") != 0)
        return mls_error(MELISSA_ERR_ENV, "MELISSA_ZERO_COPY='%.100s' must be 0 or 1", zero_copy);
    S.zero_copy = zero_copy != NULL && strcmp(zero_copy, "1") == 0;
    if (load_server_key() != 0) return MELISSA_ERR_ENV;
    S.server = strdup(getenv("MELISSA_SERVER"));
    if (S.server == NULL) return mls_error(MELISSA_ERR_SYSTEM, "out of memory");
    return 0;
}

/* ---- connection ------------------------------------------------------------------------- */

static void init_released_cond(void) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&S.released, &attr);
    pthread_condattr_destroy(&attr);
}

static void release_payload(void *data, void *hint) {
    inflight_t *t = hint;
    (void)data;
    pthread_mutex_lock(&S.mutex);
    if (--t->pending == 0) pthread_cond_broadcast(&S.released);
    pthread_mutex_unlock(&S.mutex);
}

/* Wait until ZeroMQ released every payload of `t`; 0, or -1 after MELISSA_TIMEOUT. */
static int wait_released(inflight_t *t) {
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    double when = (double)deadline.tv_sec + 1e-9 * (double)deadline.tv_nsec + S.timeout_s;
    deadline.tv_sec = (time_t)when;
    deadline.tv_nsec = (long)((when - (double)deadline.tv_sec) * 1e9);
    pthread_mutex_lock(&S.mutex);
    while (t->pending > 0)
        if (pthread_cond_timedwait(&S.released, &S.mutex, &deadline) == ETIMEDOUT) break;
    int busy = t->pending > 0;
    pthread_mutex_unlock(&S.mutex);
    return busy ? -1 : 0;
}

static void free_endpoints(void) {
    for (int i = 0; i < S.nb_endpoints; i++) {
        free(S.endpoints[i]);
        if (S.server_keys) free(S.server_keys[i]);
    }
    free(S.endpoints);
    free(S.server_keys);
    S.endpoints = S.server_keys = NULL;
    S.nb_endpoints = 0;
}

static const char *address_of(int server_rank) {
    return server_rank == 0 ? S.server : S.endpoints[server_rank];
}

/* Close everything. linger_ms = 0 after an error: ZeroMQ drops what it still holds (and
 * releases the zero-copy payloads) instead of waiting for a server that is gone. */
static void close_connection(int linger_ms) {
    for (int i = 0; i < S.nb_sockets; i++) {
        if (S.sockets[i] == NULL) continue;
        zmq_setsockopt(S.sockets[i], ZMQ_LINGER, &linger_ms, sizeof linger_ms);
        zmq_close(S.sockets[i]);
    }
    free(S.sockets);
    S.sockets = NULL;
    S.nb_sockets = 0;
    if (S.context != NULL) {
        while (zmq_ctx_term(S.context) != 0 && errno == EINTR) {
        }
        S.context = NULL;
    }
    free_endpoints();
    /* After zmq_ctx_term: ZeroMQ released every payload, so the buffers can go. */
    for (int i = 0; i < S.nb_fields; i++) {
        free(S.fields[i].name);
        free(S.fields[i].pieces);
        if (S.fields[i].inflight) free(S.fields[i].inflight->buffer);
        free(S.fields[i].inflight);
    }
    free(S.fields);
    S.fields = NULL;
    S.nb_fields = 0;
}

/* A timeout: the server is gone or unreachable, so nothing more can succeed. */
static int fatal(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
static int fatal(int code, const char *fmt, ...) {
    va_list ap;
    char message[900];
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    close_connection(0);
    S.state = S_BROKEN;
    snprintf(S.broken_reason, sizeof S.broken_reason, "%s", melissa_strerror(code));
    return mls_error(code, "%s", message);
}

static const char *server_key_of(int server_rank) {
    return server_rank == 0 ? S.server_key : S.server_keys[server_rank];
}

static void *socket_for(int server_rank, int *code) {
    if (server_rank < S.nb_sockets && S.sockets[server_rank] != NULL) return S.sockets[server_rank];
    if (server_rank >= S.nb_sockets) {
        void **grown = realloc(S.sockets, (size_t)(server_rank + 1) * sizeof *grown);
        if (grown == NULL) {
            *code = mls_error(MELISSA_ERR_SYSTEM, "out of memory");
            return NULL;
        }
        for (int i = S.nb_sockets; i <= server_rank; i++) grown[i] = NULL;
        S.sockets = grown;
        S.nb_sockets = server_rank + 1;
    }
    const char *address = address_of(server_rank);
    void *sock = zmq_socket(S.context, ZMQ_DEALER);
    if (sock == NULL) {
        *code = mls_error(MELISSA_ERR_SYSTEM, "cannot create a ZeroMQ socket: %s",
                          zmq_strerror(zmq_errno()));
        return NULL;
    }
    int ms = timeout_ms();
    /* A dead server must not block a send forever, nor the exit of the program. */
    zmq_setsockopt(sock, ZMQ_SNDTIMEO, &ms, sizeof ms);
    zmq_setsockopt(sock, ZMQ_LINGER, &ms, sizeof ms);
    if (S.encrypted && (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_key_of(server_rank),
                                       MLS_KEY_CHARS + 1)
                        || zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, S.public_key,
                                          MLS_KEY_CHARS + 1)
                        || zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, S.secret_key,
                                          MLS_KEY_CHARS + 1))) {
        *code = mls_error(MELISSA_ERR_SYSTEM, "cannot set up CURVE encryption to '%.200s': %s",
                          address, zmq_strerror(zmq_errno()));
        zmq_close(sock);
        return NULL;
    }
    if (zmq_connect(sock, address) != 0) {
        int err = zmq_errno();
        int zero = 0;
        zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(sock);
        *code = mls_error(MELISSA_ERR_SYSTEM, "cannot connect to the Melissa server at '%.200s': "
                          "%s", address, zmq_strerror(err));
        return NULL;
    }
    S.sockets[server_rank] = sock;
    return sock;
}

static void header_for(mls_header *h, int kind) {
    memset(h, 0, sizeof *h);
    h->kind = (uint16_t)kind;
    memcpy(h->token, S.token, MLS_TOKEN_BYTES);
    h->simulation_id = S.simulation_id;
    h->attempt = S.attempt;
    h->client_rank = (uint32_t)S.rank;
}

static int send_part(void *sock, const void *buf, size_t len, int flags) {
    for (;;) {
        if (zmq_send(sock, buf, len, flags) >= 0) return 0;
        if (zmq_errno() != EINTR) return -1;
    }
}

/* A control message: header, then an optional JSON payload. */
static int send_control(int server_rank, const mls_header *h, const char *json, const char *what) {
    int code = 0;
    void *sock = socket_for(server_rank, &code);
    if (sock == NULL) return code;
    uint8_t frame[MLS_HEADER_SIZE];
    mls_encode_header(frame, h);
    if (send_part(sock, frame, sizeof frame, json ? ZMQ_SNDMORE : 0) != 0
        || (json && send_part(sock, json, strlen(json), 0) != 0)) {
        if (zmq_errno() == EAGAIN)
            return fatal(MELISSA_ERR_TIMEOUT, "%s: the Melissa server at %.200s accepted nothing "
                         "for %g s (MELISSA_TIMEOUT); is the study still running?", what,
                         address_of(server_rank), S.timeout_s);
        return mls_error(MELISSA_ERR_SYSTEM, "%s: %s", what, zmq_strerror(zmq_errno()));
    }
    return 0;
}

/* Read one multipart message that is ready: its header and its JSON payload (NUL-terminated,
 * malloc'ed, NULL if none). */
static int read_message(void *sock, mls_header *h, char **payload, size_t *payload_len,
                        const char *what) {
    zmq_msg_t part;
    int frames = 0, code = 0, more = 1;
    char why[200] = "";
    *payload = NULL;
    *payload_len = 0;
    while (more) {
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, sock, ZMQ_DONTWAIT) < 0) {
            int err = zmq_errno();
            zmq_msg_close(&part);
            if (err == EINTR) continue;
            if (err == EAGAIN && frames == 0) return -1; /* nothing after all */
            return mls_error(MELISSA_ERR_SYSTEM, "%s: %s", what, zmq_strerror(err));
        }
        const uint8_t *data = zmq_msg_data(&part);
        size_t size = zmq_msg_size(&part);
        if (frames == 0) {
            if (mls_decode_header(data, size, S.token, h, why, sizeof why) != 0)
                code = MELISSA_ERR_PROTOCOL;
        } else if (frames == 1 && code == 0) {
            if (size > MLS_MAX_JSON) {
                snprintf(why, sizeof why, "payload of %zu bytes exceeds %u", size, MLS_MAX_JSON);
                code = MELISSA_ERR_PROTOCOL;
            } else if ((*payload = malloc(size + 1)) == NULL) {
                code = MELISSA_ERR_SYSTEM;
                snprintf(why, sizeof why, "out of memory");
            } else {
                memcpy(*payload, data, size);
                (*payload)[size] = '\0';
                *payload_len = size;
            }
        }
        frames++;
        more = zmq_msg_more(&part);
        zmq_msg_close(&part);
    }
    if (code == 0 && frames > 2) {
        snprintf(why, sizeof why, "%d frames, expected 1 or 2", frames);
        code = MELISSA_ERR_PROTOCOL;
    }
    if (code != 0) {
        free(*payload);
        *payload = NULL;
        return mls_error(code, "%s: garbled answer from the server: %s", what, why);
    }
    return 0;
}

/* Wait until `deadline` for the server's answer of kind `expected`; an ERROR answer is
 * MELISSA_ERR_REFUSED with its reason. */
static int receive(int server_rank, int expected, double deadline, char **payload,
                   size_t *payload_len, const char *what) {
    int code = 0;
    void *sock = socket_for(server_rank, &code);
    if (sock == NULL) return code;
    for (;;) {
        zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
        int ready = zmq_poll(&item, 1, remaining_ms(deadline));
        if (ready < 0 && zmq_errno() == EINTR) continue;
        if (ready < 0) return mls_error(MELISSA_ERR_SYSTEM, "%s: %s", what,
                                        zmq_strerror(zmq_errno()));
        if (ready == 0)
            return fatal(MELISSA_ERR_TIMEOUT, "%s: no answer from the Melissa server at %.200s "
                         "within %g s (MELISSA_TIMEOUT); is the study running, and are "
                         "MELISSA_SERVER and MELISSA_STUDY_TOKEN right (and MELISSA_SERVER_KEY, "
                         "set exactly when the study is encrypted)?", what,
                         address_of(server_rank), S.timeout_s);
        mls_header h;
        int rc = read_message(sock, &h, payload, payload_len, what);
        if (rc < 0) continue; /* spurious wake-up */
        if (rc > 0) return rc;
        if (h.kind == MLS_ERROR) {
            char reason[600];
            mls_parse_error(*payload ? *payload : "", *payload_len, reason, sizeof reason);
            free(*payload);
            *payload = NULL;
            return mls_error(MELISSA_ERR_REFUSED, "%s: refused by the server: %s", what, reason);
        }
        if (h.kind != expected) {
            free(*payload);
            *payload = NULL;
            return mls_error(MELISSA_ERR_PROTOCOL, "%s: unexpected %s from the server", what,
                             mls_kind_name(h.kind));
        }
        return 0;
    }
}

/* An ERROR the server sent about an earlier DATA message, if any (does not block). */
static int check_errors(const char *what) {
    for (int r = 0; r < S.nb_sockets; r++) {
        void *sock = S.sockets[r];
        if (sock == NULL) continue;
        for (;;) {
            zmq_pollitem_t item = {sock, 0, ZMQ_POLLIN, 0};
            int ready = zmq_poll(&item, 1, 0);
            if (ready < 0 && zmq_errno() == EINTR) continue;
            if (ready <= 0) break;
            mls_header h;
            char *payload;
            size_t len;
            int rc = read_message(sock, &h, &payload, &len, what);
            if (rc > 0) return rc;
            if (rc < 0) break;
            if (h.kind == MLS_ERROR) {
                char reason[600];
                mls_parse_error(payload ? payload : "", len, reason, sizeof reason);
                free(payload);
                return mls_error(MELISSA_ERR_REFUSED, "%s: refused by the server: %s", what,
                                 reason);
            }
            free(payload);
        }
    }
    return 0;
}

/* ---- API -------------------------------------------------------------------------------- */

static field_t *find_field(const char *name) {
    for (int i = 0; i < S.nb_fields; i++)
        if (strcmp(S.fields[i].name, name) == 0) return &S.fields[i];
    return NULL;
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

int melissa_init_global(const char *field, int local_size, long long global_offset,
                        long long global_size, int rank, int ranks, int ndims, const int *shape) {
    if (field == NULL || field[0] == '\0')
        return mls_error(MELISSA_ERR_ARG, "melissa_init: the field name must be a non-empty "
                         "string");
    char what[WHAT_SIZE];
    snprintf(what, sizeof what, "melissa_init(\"%.200s\")", field);
    if (S.state == S_FINALIZED)
        return mls_error(MELISSA_ERR_ORDER, "%s after melissa_finalize()", what);
    if (S.state == S_BROKEN)
        return mls_error(MELISSA_ERR_ORDER, "%s: an earlier error (%s) ended the connection to "
                         "the server", what, S.broken_reason);
    if (local_size < 0)
        return mls_error(MELISSA_ERR_ARG, "%s: local_size must be >= 0, got %d", what, local_size);
    if (ranks < 1 || rank < 0 || rank >= ranks)
        return mls_error(MELISSA_ERR_ARG, "%s: rank %d out of range for %d ranks", what, rank,
                         ranks);
    if (global_size <= 0)
        return mls_error(MELISSA_ERR_ARG, "%s: the field has no values on any rank", what);
    if (global_offset < 0 || global_offset > global_size - local_size)
        return mls_error(MELISSA_ERR_ARG, "%s: offset %lld + local_size %d exceeds the global "
                         "size %lld", what, global_offset, local_size, global_size);
    int64_t dims[32];
    if (ndims < 0 || ndims > 32 || (ndims > 0 && shape == NULL))
        return mls_error(MELISSA_ERR_ARG, "%s: ndims must be in [0, 32] with a shape, got %d",
                         what, ndims);
    if (ndims > 0) {
        long long product = 1;
        int ok = 1;
        char text[200] = "";
        for (int i = 0; i < ndims; i++) {
            dims[i] = shape[i];
            if (shape[i] <= 0 || product > LLONG_MAX / shape[i]) ok = 0;
            else product *= shape[i];
            size_t n = strlen(text);
            snprintf(text + n, sizeof text - n, i ? ", %d" : "%d", shape[i]);
        }
        if (!ok || product != global_size)
            return mls_error(MELISSA_ERR_ARG, "%s: shape (%s) does not hold the %lld values of "
                             "the field", what, text, global_size);
    }
    if (find_field(field) != NULL)
        return mls_error(MELISSA_ERR_ORDER, "field \"%.200s\" initialised twice", field);
    if (S.rank >= 0 && (S.rank != rank || S.ranks != ranks))
        return mls_error(MELISSA_ERR_ARG, "%s: client rank %d of %d, but an earlier melissa_init "
                         "said rank %d of %d", what, rank, ranks, S.rank, S.ranks);
    if (!host_is_little_endian())
        return mls_error(MELISSA_ERR_SYSTEM, "%s: big-endian hosts are not supported (the wire "
                         "format is little-endian)", what);

    if (S.state == S_NONE) {
        int rc = load_environment();
        if (rc != 0) {
            free(S.server);
            free(S.parameters);
            S.server = S.parameters = NULL;
            return rc;
        }
        pthread_once(&cond_once, init_released_cond);
        S.context = zmq_ctx_new();
        if (S.context == NULL)
            return mls_error(MELISSA_ERR_SYSTEM, "cannot create a ZeroMQ context: %s",
                             zmq_strerror(zmq_errno()));
        S.state = S_OPEN;
    }
    /* Worst case: 12 bytes of \u escapes per byte of the name, 21 per dimension. */
    size_t hello_size = strlen(field) * 12 + 160 + 24 * (size_t)ndims
                        + (S.parameters ? strlen(S.parameters) + 16 : 0);
    char *hello = malloc(hello_size);
    if (hello == NULL) return mls_error(MELISSA_ERR_SYSTEM, "out of memory");
    long hello_length = mls_hello_json(hello, hello_size, field, (uint64_t)global_size,
                                       (uint32_t)ranks, ndims, dims, S.parameters);
    if (hello_length < 0) {
        free(hello);
        if (hello_length == -1)
            return mls_error(MELISSA_ERR_ARG, "%s: the field name is not valid UTF-8", what);
        return mls_error(MELISSA_ERR_SYSTEM, "%s: HELLO payload too large", what);
    }
    S.rank = rank;
    S.ranks = ranks;

    /* Rank 0 first: it is the authority on the field's size. */
    mls_header h;
    header_for(&h, MLS_HELLO);
    h.offset = (uint64_t)global_offset;
    h.count = (uint64_t)local_size;
    int rc = send_control(0, &h, hello, what);
    char *payload = NULL;
    size_t len;
    if (rc == 0) rc = receive(0, MLS_WELCOME, now_s() + S.timeout_s, &payload, &len, what);
    if (rc != 0) {
        free(hello);
        return rc;
    }
    mls_welcome w;
    char why[200];
    rc = mls_parse_welcome(payload ? payload : "", len, &w, why, sizeof why);
    free(payload);
    if (rc != 0) {
        free(hello);
        return mls_error(MELISSA_ERR_PROTOCOL, "%s: malformed WELCOME from the server: %s", what,
                         why);
    }
    if (S.encrypted && w.public_keys == NULL) {
        free(hello);
        mls_welcome_free(&w);
        return mls_error(MELISSA_ERR_PROTOCOL, "%s: malformed WELCOME: no public key for each "
                         "server rank (MELISSA_SERVER_KEY is set)", what);
    }
    /* The endpoints (and keys) of every server rank (the same in every WELCOME of a study). */
    free_endpoints();
    S.endpoints = w.endpoints;
    S.server_keys = w.public_keys;
    S.nb_endpoints = w.nb_ranks;
    w.endpoints = w.public_keys = NULL;
    /* Then the same HELLO to every other server rank, so that each knows this client rank's
     * layout before its DATA arrives. */
    for (int r = 1; r < S.nb_endpoints && rc == 0; r++) rc = send_control(r, &h, hello, what);
    free(hello);
    double deadline = now_s() + S.timeout_s;
    for (int r = 1; r < S.nb_endpoints && rc == 0; r++) {
        rc = receive(r, MLS_WELCOME, deadline, &payload, &len, what);
        if (rc == 0) free(payload);
    }
    if (rc != 0) {
        mls_welcome_free(&w);
        return rc;
    }

    field_t f = {0};
    f.name = strdup(field);
    f.pieces = malloc((size_t)w.nb_ranks * sizeof *f.pieces);
    f.inflight = calloc(1, sizeof *f.inflight);
    field_t *grown = realloc(S.fields, (size_t)(S.nb_fields + 1) * sizeof *grown);
    if (f.name == NULL || f.pieces == NULL || f.inflight == NULL || grown == NULL) {
        free(f.name);
        free(f.pieces);
        free(f.inflight);
        if (grown != NULL) S.fields = grown;
        mls_welcome_free(&w);
        return mls_error(MELISSA_ERR_SYSTEM, "out of memory");
    }
    S.fields = grown;
    f.field_id = (uint32_t)w.field_id;
    f.local_size = local_size;
    f.nb_steps = (uint32_t)w.nb_time_steps;
    f.nb_pieces = mls_split((uint64_t)global_offset, (uint64_t)local_size,
                            (const int64_t(*)[2])w.ranges, w.nb_ranks, f.pieces);
    S.fields[S.nb_fields++] = f;
    mls_welcome_free(&w);
    return MELISSA_OK;
}

/* The native API's entry points (melissa.h). Left out of the copy of this file in
 * libmelissa_api, whose melissa_api.c defines Melissa's void functions of the same names. */
#ifndef MLS_NO_NATIVE_API
int melissa_init_no_mpi(const char *field, int size) {
    return melissa_init_global(field, size, 0, size, 0, 1, 0, NULL);
}

int melissa_init_shape_no_mpi(const char *field, int ndims, const int *shape) {
    long long size = 1;
    for (int i = 0; shape != NULL && i < ndims && i < 32; i++)
        size = (shape[i] > 0 && size <= INT_MAX / shape[i]) ? size * shape[i] : -1;
    if (shape == NULL || ndims < 1 || size < 0 || size > INT_MAX) size = -1;
    if (size < 0)
        return mls_error(MELISSA_ERR_ARG, "melissa_init(\"%.200s\"): the shape must have 1 to 32 "
                         "positive dimensions whose product fits an int", field ? field : "");
    return melissa_init_global(field, (int)size, 0, size, 0, 1, ndims, shape);
}

int melissa_send(const char *field, const double *data) {
    return mls_send_typed(field, data, MLS_FLOAT64, -1);
}

int melissa_send_float(const char *field, const float *data) {
    return mls_send_typed(field, data, MLS_FLOAT32, -1);
}

int melissa_finalize(void) { return mls_finalize(); }
#endif

int mls_send_typed(const char *field, const void *data, int dtype, long long count) {
    if (field == NULL || field[0] == '\0')
        return mls_error(MELISSA_ERR_ARG, "melissa_send: the field name must be a non-empty "
                         "string");
    char what[WHAT_SIZE];
    snprintf(what, sizeof what, "melissa_send(\"%.200s\")", field);
    if (S.state == S_BROKEN)
        return mls_error(MELISSA_ERR_ORDER, "%s: an earlier error (%s) ended the connection to "
                         "the server", what, S.broken_reason);
    field_t *f = find_field(field);
    if (f == NULL) {
        if (S.state == S_FINALIZED)
            return mls_error(MELISSA_ERR_ORDER, "%s after melissa_finalize()", what);
        return mls_error(MELISSA_ERR_ORDER, "%s before melissa_init(\"%.200s\")", what, field);
    }
    if (count >= 0 && count != f->local_size)
        return mls_error(MELISSA_ERR_SIZE, "%s: array has %lld values, melissa_init declared "
                         "local_size=%d", what, count, f->local_size);
    if (data == NULL && f->local_size > 0)
        return mls_error(MELISSA_ERR_ARG, "%s: data is NULL", what);
    if (f->steps_sent >= f->nb_steps)
        return mls_error(MELISSA_ERR_STEPS, "%s: all %u time steps (study_options.nb_time_steps) "
                         "were already sent", what, (unsigned)f->nb_steps);
    int rc = check_errors(what);
    if (rc != 0) return rc;

    size_t itemsize = dtype == MLS_FLOAT32 ? sizeof(float) : sizeof(double);
    size_t total = (size_t)f->local_size * itemsize;
    const char *source = data;
    inflight_t *t = NULL; /* large payloads: who holds them while ZeroMQ sends */
    if (total >= ZERO_COPY_BYTES) {
        t = S.zero_copy ? &S.direct : f->inflight;
        if (!S.zero_copy) {
            /* The previous step of this field must be out of the buffer before it is reused. */
            if (wait_released(t) != 0)
                return fatal(MELISSA_ERR_TIMEOUT, "%s: the Melissa server took no data for %g s "
                             "(MELISSA_TIMEOUT); is the study still running?", what, S.timeout_s);
            if (t->size < total) {
                char *grown = realloc(t->buffer, total);
                if (grown == NULL) return mls_error(MELISSA_ERR_SYSTEM, "out of memory");
                t->buffer = grown;
                t->size = total;
            }
            memcpy(t->buffer, data, total);
            source = t->buffer;
        }
    }
    for (int i = 0; i < f->nb_pieces; i++) {
        const mls_piece *p = &f->pieces[i];
        void *sock = socket_for(p->server_rank, &rc);
        if (sock == NULL) return rc;
        mls_header h;
        header_for(&h, MLS_DATA);
        h.time_step = f->steps_sent;
        h.field_id = f->field_id;
        h.offset = p->global_offset;
        h.count = p->count;
        h.dtype = (uint8_t)dtype;
        uint8_t frame[MLS_HEADER_SIZE];
        mls_encode_header(frame, &h);
        char *chunk = (char *)source + p->local_start * itemsize;
        size_t bytes = p->count * itemsize;
        int sent;
        if (send_part(sock, frame, sizeof frame, ZMQ_SNDMORE) != 0) {
            sent = -1;
        } else if (t != NULL) {
            zmq_msg_t msg;
            pthread_mutex_lock(&S.mutex);
            t->pending++;
            pthread_mutex_unlock(&S.mutex);
            zmq_msg_init_data(&msg, chunk, bytes, release_payload, t);
            /* Further parts of a message are always queued, so no EAGAIN here. */
            while ((sent = zmq_msg_send(&msg, sock, 0)) < 0 && zmq_errno() == EINTR) {
            }
            if (sent < 0) zmq_msg_close(&msg); /* releases it */
        } else {
            sent = send_part(sock, chunk, bytes, 0);
        }
        if (sent < 0) {
            if (zmq_errno() == EAGAIN)
                return fatal(MELISSA_ERR_TIMEOUT, "%s: the Melissa server accepted nothing for "
                             "%g s (MELISSA_TIMEOUT); is the study still running?", what,
                             S.timeout_s);
            return mls_error(MELISSA_ERR_SYSTEM, "%s: %s", what, zmq_strerror(zmq_errno()));
        }
    }
    /* The caller's own array: return only once ZeroMQ has released every piece of it. */
    if (t == &S.direct && wait_released(t) != 0)
        return fatal(MELISSA_ERR_TIMEOUT, "%s: the Melissa server took no data for %g s "
                     "(MELISSA_TIMEOUT); is the study still running?", what, S.timeout_s);
    f->steps_sent++;
    return MELISSA_OK;
}

int mls_finalize(void) {
    const char *what = "melissa_finalize()";
    if (S.state == S_FINALIZED) return mls_error(MELISSA_ERR_ORDER, "%s called twice", what);
    if (S.state == S_BROKEN)
        return mls_error(MELISSA_ERR_ORDER, "%s: an earlier error (%s) ended the connection to "
                         "the server", what, S.broken_reason);
    if (S.state == S_NONE)
        return mls_error(MELISSA_ERR_ORDER, "%s before melissa_init()", what);
    for (int i = 0; i < S.nb_fields; i++) {
        const field_t *f = &S.fields[i];
        if (f->steps_sent != f->nb_steps)
            return mls_error(MELISSA_ERR_STEPS, "%s after %u of the %u time steps of field "
                             "\"%.200s\" (study_options.nb_time_steps); the simulation is not "
                             "complete", what, (unsigned)f->steps_sent, (unsigned)f->nb_steps,
                             f->name);
    }
    int rc = check_errors(what);
    if (rc != 0) return rc;
    /* Every server rank learns that this client rank is done, even one it sent nothing. */
    int targets = S.nb_endpoints > 0 ? S.nb_endpoints : 1;
    for (int r = 0; r < targets; r++) {
        mls_header h;
        header_for(&h, MLS_END);
        h.count = (uint64_t)S.ranks;
        if ((rc = send_control(r, &h, NULL, what)) != 0) return rc;
    }
    double deadline = now_s() + S.timeout_s;
    for (int r = 0; r < targets; r++) {
        char *payload;
        size_t len;
        if ((rc = receive(r, MLS_END_ACK, deadline, &payload, &len, what)) != 0) return rc;
        free(payload);
    }
    close_connection(timeout_ms());
    free(S.server);
    free(S.parameters);
    S.server = S.parameters = NULL;
    S.state = S_FINALIZED;
    return MELISSA_OK;
}
