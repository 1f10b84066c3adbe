/* Test harness over libmelissa's wire-format code (src/melissa/client/c/protocol.c), driven by
 * tests/unit/test_c_protocol.py: one command per line on stdin, one answer line on stdout.
 * Binary data travels as hex; "-" stands for empty.
 *
 *   header KIND SIM ATTEMPT RANK STEP FIELD OFFSET COUNT DTYPE TOKENHEX  -> hex of 72 bytes
 *   hello FIELDHEX GLOBAL RANKS PARAMSHEX [DIM...]  -> hex of the JSON, or "error"
 *        (PARAMSHEX: MELISSA_PARAMETERS as the client reads it, "-" if unset)
 *   params TEXTHEX                                  -> hex of the parameters JSON, or "error"
 *   float HEX16                                     -> the double (big-endian hex) as repr
 *   decode FRAMEHEX TOKENHEX               -> "ok KIND SIM ATTEMPT ... DTYPE" or "error WHY"
 *   welcome JSONHEX        -> "ok FIELD_ID STEPS N (ENDPOINTHEX START STOP)*( key KEY)*" or
 *                             "error WHY" (keys: the "public_keys" of an encrypted study)
 *   errmsg JSONHEX                                  -> hex of the decoded "error" string
 *   split OFFSET COUNT START STOP [START STOP...]   -> "RANK GLOBAL LOCAL COUNT;..." 
 *   token TEXTHEX                                   -> hex of the 16 bytes, or "error WHY" */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

static size_t unhex(const char *hex, char *out) {
    size_t n = 0;
    if (strcmp(hex, "-") == 0) return 0;
    for (; hex[0] && hex[1]; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

static void put_hex(const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) printf("%02x", p[i]);
}

int main(void) {
    static char line[1 << 22], buf[1 << 21];
    char *argv[80];
    while (fgets(line, sizeof line, stdin)) {
        int argc = 0;
        for (char *t = strtok(line, " \n"); t && argc < 80; t = strtok(NULL, " \n"))
            argv[argc++] = t;
        if (argc == 0) continue;
        const char *cmd = argv[0];
        char why[256] = "";
        if (strcmp(cmd, "header") == 0 && argc == 11) {
            mls_header h = {0};
            h.kind = (uint16_t)strtoul(argv[1], NULL, 10);
            h.simulation_id = strtoll(argv[2], NULL, 10);
            h.attempt = (uint32_t)strtoul(argv[3], NULL, 10);
            h.client_rank = (uint32_t)strtoul(argv[4], NULL, 10);
            h.time_step = (uint32_t)strtoul(argv[5], NULL, 10);
            h.field_id = (uint32_t)strtoul(argv[6], NULL, 10);
            h.offset = strtoull(argv[7], NULL, 10);
            h.count = strtoull(argv[8], NULL, 10);
            h.dtype = (uint8_t)strtoul(argv[9], NULL, 10);
            unhex(argv[10], (char *)h.token);
            uint8_t frame[MLS_HEADER_SIZE];
            mls_encode_header(frame, &h);
            put_hex(frame, sizeof frame);
        } else if (strcmp(cmd, "hello") == 0 && argc >= 5) {
            char field[4096], params[8192];
            size_t n = unhex(argv[1], field);
            field[n] = '\0';
            char *parameters = NULL;
            if (strcmp(argv[4], "-") != 0) {
                size_t m = unhex(argv[4], params);
                parameters = mls_parameters_json(params, m);
            }
            int64_t dims[64];
            int ndims = argc - 5;
            for (int i = 0; i < ndims; i++) dims[i] = strtoll(argv[5 + i], NULL, 10);
            long len = mls_hello_json(buf, sizeof buf, field, strtoull(argv[2], NULL, 10),
                                      (uint32_t)strtoul(argv[3], NULL, 10), ndims, dims,
                                      parameters);
            free(parameters);
            if (len < 0) printf("error");
            else put_hex(buf, (size_t)len);
        } else if (strcmp(cmd, "params") == 0 && argc == 2) {
            size_t n = unhex(argv[1], buf);
            char *json = mls_parameters_json(buf, n);
            if (json == NULL) printf("error");
            else put_hex(json, strlen(json));
            free(json);
        } else if (strcmp(cmd, "float") == 0 && argc == 2) {
            uint64_t bits = strtoull(argv[1], NULL, 16);
            double x;
            char out[32];
            memcpy(&x, &bits, sizeof x);
            mls_format_double(x, out);
            printf("%s", out);
        } else if (strcmp(cmd, "decode") == 0 && argc == 3) {
            uint8_t token[MLS_TOKEN_BYTES];
            mls_header h;
            size_t n = unhex(argv[1], buf);
            unhex(argv[2], (char *)token);
            if (mls_decode_header((const uint8_t *)buf, n, token, &h, why, sizeof why) != 0)
                printf("error %s", why);
            else
                printf("ok %u %lld %u %u %u %u %llu %llu %u", h.kind, (long long)h.simulation_id,
                       h.attempt, h.client_rank, h.time_step, h.field_id,
                       (unsigned long long)h.offset, (unsigned long long)h.count, h.dtype);
        } else if (strcmp(cmd, "welcome") == 0 && argc == 2) {
            size_t n = unhex(argv[1], buf);
            mls_welcome w;
            if (mls_parse_welcome(buf, n, &w, why, sizeof why) != 0) {
                printf("error %s", why);
            } else {
                printf("ok %lld %lld %d", (long long)w.field_id, (long long)w.nb_time_steps,
                       w.nb_ranks);
                for (int i = 0; i < w.nb_ranks; i++) {
                    printf(" ");
                    if (w.endpoints[i][0]) put_hex(w.endpoints[i], strlen(w.endpoints[i]));
                    else printf("-");
                    printf(" %lld %lld", (long long)w.ranges[i][0], (long long)w.ranges[i][1]);
                }
                for (int i = 0; w.public_keys && i < w.nb_ranks; i++)
                    printf(" key %s", w.public_keys[i]);
                mls_welcome_free(&w);
            }
        } else if (strcmp(cmd, "errmsg") == 0 && argc == 2) {
            size_t n = unhex(argv[1], buf);
            char out[4096];
            mls_parse_error(buf, n, out, sizeof out);
            put_hex(out, strlen(out));
        } else if (strcmp(cmd, "split") == 0 && argc >= 3 && argc % 2 == 1) {
            int nb = (argc - 3) / 2;
            int64_t(*ranges)[2] = malloc((size_t)(nb + 1) * sizeof *ranges);
            mls_piece *pieces = malloc((size_t)(nb + 1) * sizeof *pieces);
            for (int i = 0; i < nb; i++) {
                ranges[i][0] = strtoll(argv[3 + 2 * i], NULL, 10);
                ranges[i][1] = strtoll(argv[4 + 2 * i], NULL, 10);
            }
            int n = mls_split(strtoull(argv[1], NULL, 10), strtoull(argv[2], NULL, 10),
                              (const int64_t(*)[2])ranges, nb, pieces);
            for (int i = 0; i < n; i++)
                printf("%d %llu %llu %llu;", pieces[i].server_rank,
                       (unsigned long long)pieces[i].global_offset,
                       (unsigned long long)pieces[i].local_start,
                       (unsigned long long)pieces[i].count);
            free(ranges);
            free(pieces);
        } else if (strcmp(cmd, "token") == 0 && argc == 2) {
            char text[512];
            size_t n = unhex(argv[1], text);
            text[n] = '\0';
            uint8_t token[MLS_TOKEN_BYTES];
            if (mls_token_from_hex(text, token, why, sizeof why) != 0) printf("error %s", why);
            else put_hex(token, sizeof token);
        } else {
            printf("bad command");
        }
        printf("\n");
        fflush(stdout);
    }
    return 0;
}
