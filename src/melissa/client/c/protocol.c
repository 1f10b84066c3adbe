/* Wire format of the Melissa protocol, version 1: see protocol.h and docs/protocol.md. */
#define _POSIX_C_SOURCE 200809L /* strdup */

#include "protocol.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void say(char *why, size_t why_size, const char *fmt, ...) {
    if (why == NULL || why_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_size, fmt, ap);
    va_end(ap);
}

/* ---- header ----------------------------------------------------------------------------- */

static void put_le(uint8_t *p, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

void mls_encode_header(uint8_t out[MLS_HEADER_SIZE], const mls_header *h) {
    memset(out, 0, MLS_HEADER_SIZE);
    memcpy(out, "MLSA", 4);
    put_le(out + 4, MLS_VERSION, 2);
    put_le(out + 6, h->kind, 2);
    memcpy(out + 8, h->token, MLS_TOKEN_BYTES);
    put_le(out + 24, (uint64_t)h->simulation_id, 8);
    put_le(out + 32, h->attempt, 4);
    put_le(out + 36, h->client_rank, 4);
    put_le(out + 40, h->time_step, 4);
    put_le(out + 44, h->field_id, 4);
    put_le(out + 48, h->offset, 8);
    put_le(out + 56, h->count, 8);
    out[64] = h->dtype; /* 65..71 reserved, zero */
}

const char *mls_kind_name(unsigned kind) {
    switch (kind) {
    case MLS_HELLO: return "HELLO";
    case MLS_WELCOME: return "WELCOME";
    case MLS_DATA: return "DATA";
    case MLS_END: return "END";
    case MLS_END_ACK: return "END_ACK";
    case MLS_ERROR: return "ERROR";
    case MLS_ATTACH: return "ATTACH";
    case MLS_FINISH: return "FINISH";
    case MLS_EVENT: return "EVENT";
    case MLS_RANK_EVENT: return "RANK_EVENT";
    default: return NULL;
    }
}

int mls_decode_header(const uint8_t *frame, size_t len, const uint8_t token[MLS_TOKEN_BYTES],
                      mls_header *h, char *why, size_t why_size) {
    if (len != MLS_HEADER_SIZE) {
        say(why, why_size, "header frame has %zu bytes, expected %d", len, MLS_HEADER_SIZE);
        return -1;
    }
    if (memcmp(frame, "MLSA", 4) != 0) {
        say(why, why_size, "bad magic: not a Melissa message");
        return -1;
    }
    unsigned version = (unsigned)get_le(frame + 4, 2);
    if (version != MLS_VERSION) {
        say(why, why_size,
            "protocol version %u, expected %d: clients, server and launcher must come from the "
            "same Melissa release", version, MLS_VERSION);
        return -1;
    }
    /* Constant time, like hmac.compare_digest. */
    unsigned diff = 0;
    for (int i = 0; i < MLS_TOKEN_BYTES; i++) diff |= (unsigned)(frame[8 + i] ^ token[i]);
    if (diff != 0) {
        say(why, why_size, "wrong study token");
        return -1;
    }
    h->kind = (uint16_t)get_le(frame + 6, 2);
    if (mls_kind_name(h->kind) == NULL) {
        say(why, why_size, "unknown message kind %u", (unsigned)h->kind);
        return -1;
    }
    h->dtype = frame[64];
    if (h->dtype > MLS_FLOAT32) {
        say(why, why_size, "unknown dtype code %u", (unsigned)h->dtype);
        return -1;
    }
    memcpy(h->token, frame + 8, MLS_TOKEN_BYTES);
    h->simulation_id = (int64_t)get_le(frame + 24, 8);
    if (h->simulation_id < 0) {
        say(why, why_size, "negative simulation id %lld", (long long)h->simulation_id);
        return -1;
    }
    h->attempt = (uint32_t)get_le(frame + 32, 4);
    h->client_rank = (uint32_t)get_le(frame + 36, 4);
    h->time_step = (uint32_t)get_le(frame + 40, 4);
    h->field_id = (uint32_t)get_le(frame + 44, 4);
    h->offset = get_le(frame + 48, 8);
    h->count = get_le(frame + 56, 8);
    return 0;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

int mls_token_from_hex(const char *hex, uint8_t token[MLS_TOKEN_BYTES], char *why,
                       size_t why_size) {
    /* As bytes.fromhex: two digits per byte, ASCII whitespace between bytes ignored. */
    size_t n = 0;
    const char *p = hex;
    for (;;) {
        while (is_space(*p)) p++;
        if (*p == '\0') break;
        int hi = hex_digit(p[0]), lo = hi < 0 ? -1 : hex_digit(p[1]);
        if (hi < 0 || lo < 0) {
            say(why, why_size, "study token must be hexadecimal (MELISSA_STUDY_TOKEN)");
            return -1;
        }
        if (n < MLS_TOKEN_BYTES) token[n] = (uint8_t)(hi * 16 + lo);
        n++;
        p += 2;
    }
    if (n != MLS_TOKEN_BYTES) {
        say(why, why_size, "study token must be %d bytes (%d hex digits), got %zu",
            MLS_TOKEN_BYTES, 2 * MLS_TOKEN_BYTES, n);
        return -1;
    }
    return 0;
}

/* ---- JSON writing ----------------------------------------------------------------------- */

typedef struct {
    char *out;
    size_t size, used;
    int overflow;
} writer;

static void w_bytes(writer *w, const char *s, size_t n) {
    if (w->used + n >= w->size) {
        w->overflow = 1;
        return;
    }
    memcpy(w->out + w->used, s, n);
    w->used += n;
    w->out[w->used] = '\0';
}

static void w_str(writer *w, const char *s) { w_bytes(w, s, strlen(s)); }

static void w_fmt(writer *w, const char *fmt, ...) {
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        w->overflow = 1;
        return;
    }
    w_bytes(w, buf, (size_t)n);
}

/* Decode one UTF-8 sequence (strict: no overlong forms, no surrogates, <= U+10FFFF); returns its
 * length, or 0 if invalid. */
static int utf8_decode(const unsigned char *s, uint32_t *cp) {
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    int n;
    uint32_t c;
    if ((s[0] & 0xE0) == 0xC0) { n = 2; c = s[0] & 0x1F; }
    else if ((s[0] & 0xF0) == 0xE0) { n = 3; c = s[0] & 0x0F; }
    else if ((s[0] & 0xF8) == 0xF0) { n = 4; c = s[0] & 0x07; }
    else return 0;
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0; /* also stops at the NUL terminator */
        c = (c << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min_cp[n] || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    *cp = c;
    return n;
}

/* A JSON string as json.dumps writes it with ensure_ascii=True; `s` holds `len` bytes of UTF-8
 * (NUL characters included) followed by a NUL. */
static int w_json_string(writer *w, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    w_str(w, "\"");
    while (p < end) {
        uint32_t cp;
        int n = utf8_decode(p, &cp); /* a NUL is U+0000; the terminator stops a truncated one */
        if (n == 0 || p + n > end) return -1;
        p += n;
        switch (cp) {
        case '"': w_str(w, "\\\""); break;
        case '\\': w_str(w, "\\\\"); break;
        case '\n': w_str(w, "\\n"); break;
        case '\r': w_str(w, "\\r"); break;
        case '\t': w_str(w, "\\t"); break;
        case '\b': w_str(w, "\\b"); break;
        case '\f': w_str(w, "\\f"); break;
        default:
            if (cp < 0x20 || cp > 0x7E) { /* as Python: all but printable ASCII */
                if (cp >= 0x10000) {
                    uint32_t v = cp - 0x10000;
                    w_fmt(w, "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF));
                } else {
                    w_fmt(w, "\\u%04x", cp);
                }
            } else {
                char c = (char)cp;
                w_bytes(w, &c, 1);
            }
        }
    }
    w_str(w, "\"");
    return 0;
}

long mls_hello_json(char *out, size_t out_size, const char *field, uint64_t global_size,
                    uint32_t client_ranks, int ndims, const int64_t *shape,
                    const char *parameters) {
    writer w = {out, out_size, 0, 0};
    if (out_size == 0) return -2;
    out[0] = '\0';
    w_str(&w, "{\"field\":");
    if (w_json_string(&w, field, strlen(field)) != 0) return -1;
    w_fmt(&w, ",\"global_size\":%llu,\"client_ranks\":%lu,\"shape\":",
          (unsigned long long)global_size, (unsigned long)client_ranks);
    if (ndims <= 0) {
        w_str(&w, "null");
    } else {
        w_str(&w, "[");
        for (int i = 0; i < ndims; i++) w_fmt(&w, i ? ",%lld" : "%lld", (long long)shape[i]);
        w_str(&w, "]");
    }
    if (parameters != NULL) {
        w_str(&w, ",\"parameters\":");
        w_str(&w, parameters);
    }
    w_str(&w, "}");
    return w.overflow ? -2 : (long)w.used;
}

/* Python's repr of a float: the shortest digit string that reads back as x (David Gay's
 * algorithm, as CPython); among strings of that length, the one closest to x. */
void mls_format_double(double x, char out[32]) {
    if (isnan(x)) { strcpy(out, "NaN"); return; }
    if (isinf(x)) { strcpy(out, x > 0 ? "Infinity" : "-Infinity"); return; }
    if (x == 0) { strcpy(out, signbit(x) ? "-0.0" : "0.0"); return; }
    char buf[40], digits[24];
    int exponent = 0, ndigits = 0;
    for (int precision = 1; precision <= 17 && ndigits == 0; precision++) {
        /* The correctly rounded `precision` digits, then its two neighbours in the last digit
         * (at a power of two the rounding interval is lopsided, so a neighbour may read back
         * when the closest does not). */
        snprintf(buf, sizeof buf, "%.*e", precision - 1, fabs(x));
        uint64_t mantissa = 0;
        for (const char *c = buf; *c && *c != 'e'; c++)
            if (*c >= '0' && *c <= '9') mantissa = mantissa * 10 + (uint64_t)(*c - '0');
        int exp10 = atoi(strchr(buf, 'e') + 1);
        for (int delta = 0; delta <= 2 && ndigits == 0; delta++) {
            uint64_t m = delta == 0 ? mantissa : delta == 1 ? mantissa - 1 : mantissa + 1;
            char candidate[48];
            snprintf(candidate, sizeof candidate, "%llue%d", (unsigned long long)m,
                     exp10 - (precision - 1));
            if (m == 0 || strtod(candidate, NULL) != fabs(x)) continue;
            ndigits = snprintf(digits, sizeof digits, "%llu", (unsigned long long)m);
            exponent = exp10 - (precision - 1) + ndigits - 1; /* m may have gained a digit */
            while (ndigits > 1 && digits[ndigits - 1] == '0') digits[--ndigits] = '\0';
        }
    }
    int decpt = exponent + 1; /* digits[0] is in the units place when decpt == 1 */
    char *o = out;
    if (x < 0) *o++ = '-';
    if (decpt <= -4 || decpt > 16) { /* d.ddde+XX, as repr */
        *o++ = digits[0];
        if (ndigits > 1) {
            *o++ = '.';
            memcpy(o, digits + 1, (size_t)ndigits - 1);
            o += ndigits - 1;
        }
        sprintf(o, "e%c%02d", exponent < 0 ? '-' : '+', exponent < 0 ? -exponent : exponent);
    } else if (decpt <= 0) {
        *o++ = '0';
        *o++ = '.';
        for (int i = 0; i < -decpt; i++) *o++ = '0';
        memcpy(o, digits, (size_t)ndigits);
        o[ndigits] = '\0';
    } else if (decpt >= ndigits) {
        memcpy(o, digits, (size_t)ndigits);
        o += ndigits;
        for (int i = ndigits; i < decpt; i++) *o++ = '0';
        strcpy(o, ".0");
    } else {
        memcpy(o, digits, (size_t)decpt);
        o += decpt;
        *o++ = '.';
        memcpy(o, digits + decpt, (size_t)(ndigits - decpt));
        o[ndigits - decpt] = '\0';
    }
}

/* ---- JSON reading ----------------------------------------------------------------------- */

#define MAX_DEPTH 64

typedef struct {
    mls_json *doc;
    const char *s;
    size_t len, pos;
    int depth;
    char *why;
    size_t why_size;
} parser;

static int fail(parser *p, const char *what) {
    say(p->why, p->why_size, "%s at byte %zu", what, p->pos);
    return -1;
}

static void skip_ws(parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static int new_node(parser *p, int type) {
    mls_json *d = p->doc;
    if (d->count == d->capacity) {
        int cap = d->capacity ? 2 * d->capacity : 32;
        mls_jnode *grown = realloc(d->nodes, (size_t)cap * sizeof *grown);
        if (grown == NULL) return fail(p, "out of memory");
        d->nodes = grown;
        d->capacity = cap;
    }
    mls_jnode *n = &d->nodes[d->count];
    n->type = type;
    n->first_child = n->next = n->key = -1;
    n->value = n->length = n->key_length = 0;
    return d->count++;
}

static int pool_reserve(parser *p, size_t extra) {
    mls_json *d = p->doc;
    if (d->pool_used + extra <= d->pool_capacity) return 0;
    size_t cap = d->pool_capacity ? d->pool_capacity : 256;
    while (cap < d->pool_used + extra) cap *= 2;
    char *grown = realloc(d->pool, cap);
    if (grown == NULL) return fail(p, "out of memory");
    d->pool = grown;
    d->pool_capacity = cap;
    return 0;
}

static void pool_put_utf8(mls_json *d, uint32_t cp) {
    char *o = d->pool + d->pool_used;
    if (cp < 0x80) { o[0] = (char)cp; d->pool_used += 1; }
    else if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 0x3F));
        d->pool_used += 2;
    } else if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        d->pool_used += 3;
    } else {
        o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
        d->pool_used += 4;
    }
}

static int hex4(parser *p, uint32_t *v) {
    if (p->pos + 4 > p->len) return fail(p, "truncated \\u escape");
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p->s[p->pos + i]);
        if (d < 0) return fail(p, "bad \\u escape");
        *v = *v * 16 + (uint32_t)d;
    }
    p->pos += 4;
    return 0;
}

/* Parses the string at p->pos (at its opening quote) into the pool; returns the pool index. */
static int parse_string(parser *p, int *length) {
    p->pos++; /* opening quote */
    /* Decoded text is never longer than the encoded text (a \u escape is 6 bytes for at most
     * 4 of UTF-8), so reserving the rest of the input plus one is enough. */
    if (pool_reserve(p, p->len - p->pos + 1) != 0) return -1;
    mls_json *d = p->doc;
    size_t start = d->pool_used;
    for (;;) {
        if (p->pos >= p->len) return fail(p, "unterminated string");
        unsigned char c = (unsigned char)p->s[p->pos++];
        if (c == '"') break;
        if (c < 0x20) return fail(p, "control character in string");
        if (c != '\\') {
            d->pool[d->pool_used++] = (char)c;
            continue;
        }
        if (p->pos >= p->len) return fail(p, "unterminated string");
        char e = p->s[p->pos++];
        uint32_t cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (hex4(p, &cp) != 0) return -1;
            if (cp >= 0xD800 && cp <= 0xDBFF && p->pos + 1 < p->len && p->s[p->pos] == '\\'
                && p->s[p->pos + 1] == 'u') {
                size_t save = p->pos;
                uint32_t lo;
                p->pos += 2;
                if (hex4(p, &lo) != 0) return -1;
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->pos = save; /* a lone high surrogate, kept as is (like Python) */
            }
            break;
        default: return fail(p, "bad escape in string");
        }
        pool_put_utf8(d, cp);
    }
    *length = (int)(d->pool_used - start);
    d->pool[d->pool_used++] = '\0';
    return (int)start;
}

static int parse_value(parser *p);

static int parse_number(parser *p) {
    size_t start = p->pos;
    const char *s = p->s;
    if (p->pos < p->len && s[p->pos] == '-') p->pos++;
    if (p->pos >= p->len) return fail(p, "bad number");
    if (s[p->pos] == '0') p->pos++;
    else if (s[p->pos] >= '1' && s[p->pos] <= '9')
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
    else return fail(p, "bad number");
    if (p->pos < p->len && s[p->pos] == '.') {
        p->pos++;
        size_t digits = p->pos;
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
        if (p->pos == digits) return fail(p, "bad number");
    }
    if (p->pos < p->len && (s[p->pos] == 'e' || s[p->pos] == 'E')) {
        p->pos++;
        if (p->pos < p->len && (s[p->pos] == '+' || s[p->pos] == '-')) p->pos++;
        size_t digits = p->pos;
        while (p->pos < p->len && s[p->pos] >= '0' && s[p->pos] <= '9') p->pos++;
        if (p->pos == digits) return fail(p, "bad number");
    }
    int n = new_node(p, MLS_JNUMBER);
    if (n < 0) return -1;
    p->doc->nodes[n].value = (int)start;
    p->doc->nodes[n].length = (int)(p->pos - start);
    return n;
}

static int parse_literal(parser *p, const char *word, int type) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0)
        return fail(p, "expected a JSON value");
    p->pos += n;
    return new_node(p, type);
}

/* Arrays and objects: `close` is ']' or '}'. */
static int parse_container(parser *p, int type, char close) {
    if (++p->depth > MAX_DEPTH) return fail(p, "nesting too deep");
    int node = new_node(p, type);
    if (node < 0) return -1;
    p->pos++; /* [ or { */
    skip_ws(p);
    int last = -1, count = 0;
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        p->depth--;
        return node;
    }
    for (;;) {
        int key = -1, klen = 0;
        skip_ws(p);
        if (type == MLS_JOBJECT) {
            if (p->pos >= p->len || p->s[p->pos] != '"') return fail(p, "expected a key string");
            key = parse_string(p, &klen);
            if (key < 0) return -1;
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') return fail(p, "expected ':'");
            p->pos++;
        }
        int child = parse_value(p);
        if (child < 0) return -1;
        mls_jnode *nodes = p->doc->nodes; /* parse_value may have moved them */
        nodes[child].key = key;
        nodes[child].key_length = klen;
        if (last < 0) nodes[node].first_child = child;
        else nodes[last].next = child;
        last = child;
        count++;
        skip_ws(p);
        if (p->pos >= p->len) return fail(p, "unterminated array or object");
        char c = p->s[p->pos++];
        if (c == close) break;
        if (c != ',') return fail(p, "expected ',' or the end of an array or object");
    }
    p->doc->nodes[node].length = count;
    p->depth--;
    return node;
}

static int parse_value(parser *p) {
    skip_ws(p);
    if (p->pos >= p->len) return fail(p, "expected a JSON value");
    char c = p->s[p->pos];
    switch (c) {
    case '{': return parse_container(p, MLS_JOBJECT, '}');
    case '[': return parse_container(p, MLS_JARRAY, ']');
    case '"': {
        int length, start = parse_string(p, &length);
        if (start < 0) return -1;
        int n = new_node(p, MLS_JSTRING);
        if (n < 0) return -1;
        p->doc->nodes[n].value = start;
        p->doc->nodes[n].length = length;
        return n;
    }
    case 't': return parse_literal(p, "true", MLS_JTRUE);
    case 'f': return parse_literal(p, "false", MLS_JFALSE);
    case 'n': return parse_literal(p, "null", MLS_JNULL);
    default:
        if (c == '-' || (c >= '0' && c <= '9')) return parse_number(p);
        return fail(p, "expected a JSON value");
    }
}

int mls_json_parse(mls_json *doc, const char *text, size_t len, char *why, size_t why_size) {
    memset(doc, 0, sizeof *doc);
    doc->text = text;
    if (len > MLS_MAX_JSON || len > (size_t)0x7fffffff / 2) {
        say(why, why_size, "payload of %zu bytes exceeds %u", len, MLS_MAX_JSON);
        return -1;
    }
    parser p = {doc, text, len, 0, 0, why, why_size};
    if (parse_value(&p) != 0) { /* the root is node 0 */
        mls_json_free(doc);
        doc->text = text;
        return -1;
    }
    skip_ws(&p);
    if (p.pos != len) {
        fail(&p, "extra data after the JSON value");
        mls_json_free(doc);
        return -1;
    }
    return 0;
}

void mls_json_free(mls_json *doc) {
    free(doc->nodes);
    free(doc->pool);
    doc->nodes = NULL;
    doc->pool = NULL;
    doc->count = doc->capacity = 0;
    doc->pool_used = doc->pool_capacity = 0;
}

int mls_json_member(const mls_json *doc, int obj, const char *key) {
    if (obj < 0 || obj >= doc->count || doc->nodes[obj].type != MLS_JOBJECT) return -1;
    int found = -1;
    size_t n = strlen(key);
    for (int c = doc->nodes[obj].first_child; c >= 0; c = doc->nodes[c].next)
        if ((size_t)doc->nodes[c].key_length == n
            && memcmp(doc->pool + doc->nodes[c].key, key, n) == 0)
            found = c;
    return found;
}

const char *mls_json_string(const mls_json *doc, int node) {
    if (node < 0 || node >= doc->count || doc->nodes[node].type != MLS_JSTRING) return NULL;
    return doc->pool + doc->nodes[node].value;
}

int mls_json_int64(const mls_json *doc, int node, int64_t *value) {
    if (node < 0 || node >= doc->count || doc->nodes[node].type != MLS_JNUMBER) return -1;
    const char *s = doc->text + doc->nodes[node].value;
    int n = doc->nodes[node].length, i = 0, negative = 0;
    if (s[0] == '-') { negative = 1; i = 1; }
    uint64_t v = 0, limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1; /* a fraction or an exponent */
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (limit - d) / 10) return -1;
        v = v * 10 + d;
    }
    *value = negative ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

/* ---- WELCOME and ERROR ------------------------------------------------------------------ */

static void free_strings(char **list, int n) {
    if (list)
        for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}

void mls_welcome_free(mls_welcome *w) {
    free_strings(w->endpoints, w->nb_ranks);
    free_strings(w->public_keys, w->nb_ranks);
    free(w->ranges);
    memset(w, 0, sizeof *w);
}

/* "public_keys" (encrypted studies): one Z85 key per server rank; absent otherwise. */
static int parse_public_keys(const mls_json *doc, mls_welcome *w, char *why, size_t why_size) {
    int keys = mls_json_member(doc, 0, "public_keys");
    if (keys < 0) return 0;
    const mls_jnode *nd = doc->nodes;
    if (nd[keys].type != MLS_JARRAY || nd[keys].length != w->nb_ranks) {
        say(why, why_size, "'public_keys' must list one key per server rank");
        return -1;
    }
    w->public_keys = calloc((size_t)w->nb_ranks, sizeof *w->public_keys);
    if (w->public_keys == NULL) {
        say(why, why_size, "out of memory");
        return -1;
    }
    int k = nd[keys].first_child;
    for (int i = 0; i < w->nb_ranks; i++, k = nd[k].next) {
        const char *key = mls_json_string(doc, k);
        if (key == NULL || nd[k].length != MLS_KEY_CHARS || strlen(key) != MLS_KEY_CHARS) {
            say(why, why_size, "public key %d is not a %d-character string", i, MLS_KEY_CHARS);
            return -1;
        }
        if ((w->public_keys[i] = strdup(key)) == NULL) {
            say(why, why_size, "out of memory");
            return -1;
        }
    }
    return 0;
}

int mls_parse_welcome(const char *text, size_t len, mls_welcome *w, char *why, size_t why_size) {
    memset(w, 0, sizeof *w);
    mls_json doc;
    char err[160];
    if (mls_json_parse(&doc, text, len, err, sizeof err) != 0) {
        say(why, why_size, "WELCOME payload is not JSON: %s", err);
        return -1;
    }
    int ok = -1;
    const mls_jnode *nd = doc.nodes;
    int endpoints = mls_json_member(&doc, 0, "endpoints");
    int ranges = mls_json_member(&doc, 0, "ranges");
    if (nd[0].type != MLS_JOBJECT) {
        say(why, why_size, "WELCOME payload must be a JSON object");
    } else if (mls_json_int64(&doc, mls_json_member(&doc, 0, "field_id"), &w->field_id) != 0
               || w->field_id < 0 || w->field_id > (int64_t)UINT32_MAX) {
        say(why, why_size, "'field_id' missing or not an integer in [0, 2^32)");
    } else if (mls_json_int64(&doc, mls_json_member(&doc, 0, "nb_time_steps"),
                              &w->nb_time_steps) != 0
               || w->nb_time_steps < 0 || w->nb_time_steps > (int64_t)UINT32_MAX) {
        say(why, why_size, "'nb_time_steps' missing or not an integer in [0, 2^32)");
    } else if (endpoints < 0 || nd[endpoints].type != MLS_JARRAY || ranges < 0
               || nd[ranges].type != MLS_JARRAY || nd[endpoints].length < 1
               || nd[endpoints].length != nd[ranges].length || nd[ranges].length > (1 << 20)) {
        say(why, why_size, "'endpoints' and 'ranges' must be non-empty lists of equal length");
    } else {
        int n = nd[ranges].length;
        w->nb_ranks = n;
        w->endpoints = calloc((size_t)n, sizeof *w->endpoints);
        w->ranges = calloc((size_t)n, sizeof *w->ranges);
        ok = (w->endpoints && w->ranges) ? 0 : -1;
        if (ok != 0) say(why, why_size, "out of memory");
        int e = nd[endpoints].first_child, r = nd[ranges].first_child;
        for (int i = 0; ok == 0 && i < n; i++, e = nd[e].next, r = nd[r].next) {
            const char *address = mls_json_string(&doc, e);
            int a = nd[r].first_child;
            if (address == NULL || strlen(address) != (size_t)nd[e].length) {
                say(why, why_size, "endpoint %d is not a string (without NUL characters)", i);
                ok = -1;
            } else if (nd[r].type != MLS_JARRAY || nd[r].length != 2
                       || mls_json_int64(&doc, a, &w->ranges[i][0]) != 0
                       || mls_json_int64(&doc, nd[a].next, &w->ranges[i][1]) != 0
                       || w->ranges[i][0] < 0 || w->ranges[i][1] < w->ranges[i][0]) {
                say(why, why_size, "range %d is not a [start, stop) pair of integers", i);
                ok = -1;
            } else if ((w->endpoints[i] = strdup(address)) == NULL) {
                say(why, why_size, "out of memory");
                ok = -1;
            }
        }
        if (ok == 0) ok = parse_public_keys(&doc, w, why, why_size);
    }
    mls_json_free(&doc);
    if (ok != 0) mls_welcome_free(w);
    return ok;
}

void mls_parse_error(const char *text, size_t len, char *out, size_t out_size) {
    mls_json doc;
    snprintf(out, out_size, "?");
    if (mls_json_parse(&doc, text, len, NULL, 0) != 0) return;
    const char *error = mls_json_string(&doc, mls_json_member(&doc, 0, "error"));
    if (error != NULL) snprintf(out, out_size, "%s", error);
    mls_json_free(&doc);
}

char *mls_parameters_json(const char *text, size_t len) {
    mls_json doc;
    if (mls_json_parse(&doc, text, len, NULL, 0) != 0) return NULL;
    char *out = NULL;
    const mls_jnode *nd = doc.nodes;
    if (nd[0].type != MLS_JOBJECT) goto done;
    size_t size = 3;
    for (int c = nd[0].first_child; c >= 0; c = nd[c].next) {
        if (nd[c].type != MLS_JNUMBER) goto done;
        size += 12 * (size_t)nd[c].key_length + 40;
    }
    out = malloc(size);
    if (out == NULL) goto done;
    writer w = {out, size, 0, 0};
    w_str(&w, "{");
    int first = 1;
    for (int c = nd[0].first_child; c >= 0; c = nd[c].next) {
        const char *key = doc.pool + nd[c].key;
        size_t key_length = (size_t)nd[c].key_length;
        int seen = 0, last = c;
        for (int d = nd[0].first_child; d >= 0; d = nd[d].next) {
            int same = (size_t)nd[d].key_length == key_length
                       && memcmp(doc.pool + nd[d].key, key, key_length) == 0;
            if (same && d < c) seen = 1;
            if (same) last = d;
        }
        if (seen) continue; /* a repeated key keeps its first place and its last value */
        char repr[32], *number = malloc((size_t)nd[last].length + 1);
        if (number == NULL) {
            free(out);
            out = NULL;
            goto done;
        }
        memcpy(number, doc.text + nd[last].value, (size_t)nd[last].length);
        number[nd[last].length] = '\0';
        mls_format_double(strtod(number, NULL), repr); /* as float(v) */
        free(number);
        if (!first) w_str(&w, ",");
        first = 0;
        if (w_json_string(&w, key, key_length) != 0) {
            free(out);
            out = NULL;
            goto done;
        }
        w_str(&w, ":");
        w_str(&w, repr);
    }
    w_str(&w, "}");
    if (w.overflow) {
        free(out);
        out = NULL;
    }
done:
    mls_json_free(&doc);
    return out;
}

/* ---- partition -------------------------------------------------------------------------- */

int mls_split(uint64_t offset, uint64_t count, const int64_t (*ranges)[2], int nb_ranks,
              mls_piece *pieces) {
    int n = 0;
    for (int r = 0; r < nb_ranks; r++) {
        uint64_t start = (uint64_t)ranges[r][0], stop = (uint64_t)ranges[r][1];
        uint64_t lo = start > offset ? start : offset;
        uint64_t hi = stop < offset + count ? stop : offset + count;
        if (lo < hi) {
            pieces[n].server_rank = r;
            pieces[n].global_offset = lo;
            pieces[n].local_start = lo - offset;
            pieces[n].count = hi - lo;
            n++;
        }
    }
    return n;
}
