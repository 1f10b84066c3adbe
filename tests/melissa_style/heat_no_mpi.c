/* A sequential heat solver instrumented with Melissa's API (see README.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <melissa_api_no_mpi.h>

#define NX 20
#define NY 16
#define STEPS 5
#define ALPHA 0.1

/* One explicit step; cells outside the grid hold the temperature of their wall. */
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
    int vect_size = NX * NY;
    char *field_name = "heat1";
    if (argc < 2) {
        fprintf(stderr, "Missing parameter\n");
        return 1;
    }
    for (int n = 0; n < 5 && n + 1 < argc; n++) param[n] = strtod(argv[n + 1], NULL);
    double *u = malloc(vect_size * sizeof(double)), *next = malloc(vect_size * sizeof(double));
    for (int k = 0; k < vect_size; k++) u[k] = param[0];

    melissa_init_no_mpi(field_name, vect_size);
    for (int n = 1; n <= STEPS; n++) {
        step(u, next, &param[1]);
        memcpy(u, next, vect_size * sizeof(double));
        melissa_send_no_mpi(field_name, u);
    }
    melissa_finalize();
    free(u);
    free(next);
    return 0;
}
