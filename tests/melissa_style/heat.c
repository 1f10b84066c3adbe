/* An MPI heat solver instrumented with Melissa's API (see README.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>
#ifdef INCLUDE_2021
/* The header's name since Melissa 2021; and current Melissa's send with metadata. */
#include <melissa/api.h>
#ifndef METADATA_FORMAT
#define METADATA_FORMAT "{\"step\": %d}"
#endif
#else
#include "melissa_api.h"
#endif

#define NX 20
#define NY 16
#define STEPS 5
#define ALPHA 0.1

static void step(const double *u, double *next, const double walls[4]) {
    for (int j = 0; j < NY; j++)
        for (int i = 0; i < NX; i++) {
            double c = u[j * NX + i];
            double left = i > 0 ? u[j * NX + i - 1] : walls[0];
            double right = i < NX - 1 ? u[j * NX + i + 1] : walls[1];
            double top = j > 0 ? u[(j - 1) * NX + i] : walls[2];
            double bottom = j < NY - 1 ? u[(j + 1) * NX + i] : walls[3];
            next[j * NX + i] = c + ALPHA * (left + right + top + bottom - 4.0 * c);
        }
}

int main(int argc, char **argv) {
    double param[5] = {0, 0, 0, 0, 0};
    int me, np, *appnum, flag, n = NX * NY;
    MPI_Comm comm;
    char *field_name = "heat1";
    MPI_Init(&argc, &argv);
    if (argc < 2) {
        fprintf(stderr, "Missing parameter\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    for (int k = 0; k < 5 && k + 1 < argc; k++) param[k] = strtod(argv[k + 1], NULL);

    /* One communicator per program of an MPMD launch (MPI_COMM_WORLD's copy otherwise). */
    MPI_Comm_rank(MPI_COMM_WORLD, &me);
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_APPNUM, &appnum, &flag);
    MPI_Comm_split(MPI_COMM_WORLD, flag ? *appnum : 0, me, &comm);
    MPI_Comm_rank(comm, &me);
    MPI_Comm_size(comm, &np);

    int first = me * (n / np) + (me < n % np ? me : n % np);
    int vect_size = n / np + (me < n % np ? 1 : 0);
    double *u = malloc(n * sizeof(double)), *next = malloc(n * sizeof(double));
    for (int k = 0; k < n; k++) u[k] = param[0];

    melissa_init(field_name, vect_size, comm);
    for (int s = 1; s <= STEPS; s++) {
        step(u, next, &param[1]);
        memcpy(u, next, n * sizeof(double));
#ifdef INCLUDE_2021
        char metadata[64];
        snprintf(metadata, sizeof metadata, METADATA_FORMAT, s);
        melissa_send_with_metadata(field_name, u + first, metadata);
#else
        melissa_send(field_name, u + first);
#endif
    }
    melissa_finalize();
    free(u);
    free(next);
    MPI_Comm_free(&comm);
    MPI_Finalize();
    return 0;
}
