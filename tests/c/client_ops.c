/* A C client driven by its command line, for tests/integration/test_compiled_clients.py: each
 * argument is one API call (or a pause); it prints "<argument> <return code> <seconds>" per call
 * on stdout and exits 0 whatever the codes, so that a test can play any misuse.
 *
 *   init:NAME:SIZE         melissa_init_no_mpi(NAME, SIZE)
 *   shape:NAME:D0xD1...    melissa_init_shape_no_mpi(NAME, ndims, shape)
 *   global:NAME:LOCAL:OFFSET:GLOBAL:RANK:RANKS   melissa_init_global (an N x M client rank)
 *   initnull / initempty   melissa_init_no_mpi(NULL or "", 4)
 *   send:NAME[:COUNT]      melissa_send COUNT times (default 1); values: see value() below
 *   sendfloat:NAME         melissa_send_float
 *   sendnull:NAME          melissa_send(NAME, NULL)
 *   finalize               melissa_finalize()
 *   pause                  wait for a line on stdin (the test acts on the server meanwhile)
 *
 * Values sent at the k-th send of a field (k from 0), global cell g:  g + 1000 k + 1e6 sim,
 * with sim = MELISSA_SIMULATION_ID, so a test can check what the server received. */
#define _POSIX_C_SOURCE 200809L
#include <melissa.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_CELLS (1 << 22)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static struct {
    char name[64];
    long long offset, size;
    int sends;
} fields[8];
static int nfields;

/* The field's slot; `size` >= 0 (an init) sets its layout. */
static int field_index(const char *name, long long offset, long long size) {
    int i = 0;
    while (i < nfields && strcmp(fields[i].name, name) != 0) i++;
    if (i == nfields) {
        if (nfields == 8) return 0;
        snprintf(fields[nfields++].name, sizeof fields[i].name, "%s", name);
    }
    if (size >= 0) {
        fields[i].offset = offset;
        fields[i].size = size;
    }
    return i;
}

int main(int argc, char **argv) {
    static double values[MAX_CELLS];
    static float floats[MAX_CELLS];
    const char *sim_text = getenv("MELISSA_SIMULATION_ID");
    double sim = sim_text ? atof(sim_text) : 0;
    for (int a = 1; a < argc; a++) {
        char arg[256], *parts[8] = {0};
        int n = 0;
        snprintf(arg, sizeof arg, "%s", argv[a]);
        for (char *t = strtok(arg, ":"); t && n < 8; t = strtok(NULL, ":")) parts[n++] = t;
        const char *op = parts[0] ? parts[0] : "";
        double start = now();
        int rc = -1, repeat = 1;
        if (strcmp(op, "init") == 0 && n == 3) {
            field_index(parts[1], 0, atoll(parts[2]));
            rc = melissa_init_no_mpi(parts[1], atoi(parts[2]));
        } else if (strcmp(op, "shape") == 0 && n == 3) {
            int dims[8], nd = 0;
            long long size = 1;
            for (char *t = strtok(parts[2], "x"); t && nd < 8; t = strtok(NULL, "x")) {
                dims[nd] = atoi(t);
                size *= dims[nd++];
            }
            field_index(parts[1], 0, size);
            rc = melissa_init_shape_no_mpi(parts[1], nd, dims);
        } else if (strcmp(op, "global") == 0 && n == 7) {
            field_index(parts[1], atoll(parts[3]), atoll(parts[2]));
            rc = melissa_init_global(parts[1], atoi(parts[2]), atoll(parts[3]), atoll(parts[4]),
                                     atoi(parts[5]), atoi(parts[6]), 0, NULL);
        } else if (strcmp(op, "initnull") == 0) {
            rc = melissa_init_no_mpi(NULL, 4);
        } else if (strcmp(op, "initempty") == 0) {
            rc = melissa_init_no_mpi("", 4);
        } else if ((strcmp(op, "send") == 0 || strcmp(op, "sendfloat") == 0) && n >= 2) {
            int f = field_index(parts[1], 0, -1);
            repeat = n >= 3 ? atoi(parts[2]) : 1;
            for (int r = 0; r < repeat; r++) {
                long long size = fields[f].size < MAX_CELLS ? fields[f].size : MAX_CELLS;
                for (long long i = 0; i < size; i++) {
                    values[i] = (double)(fields[f].offset + i) + 1000.0 * fields[f].sends
                                + 1e6 * sim;
                    floats[i] = (float)values[i];
                }
                rc = op[4] == 'f' ? melissa_send_float(parts[1], floats)
                                  : melissa_send(parts[1], values);
                if (rc == 0) fields[f].sends++;
                /* Overwritten at once, from the end (what ZeroMQ would send last): send must
                 * not return while ZeroMQ still reads the array. */
                for (long long i = size - 1; i >= 0; i--) values[i] = floats[i] = -1;
                if (rc != 0) break;
            }
        } else if (strcmp(op, "sendnull") == 0 && n == 2) {
            rc = melissa_send(parts[1], NULL);
        } else if (strcmp(op, "finalize") == 0) {
            rc = melissa_finalize();
        } else if (strcmp(op, "pause") == 0) {
            char line[16];
            printf("paused\n");
            fflush(stdout);
            rc = fgets(line, sizeof line, stdin) ? 0 : 1;
        } else {
            fprintf(stderr, "client_ops: bad argument '%s'\n", argv[a]);
            return 2;
        }
        printf("%s %d %.3f\n", argv[a], rc, now() - start);
        fflush(stdout);
    }
    return 0;
}
