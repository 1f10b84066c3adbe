/* The 2-D heat equation of ../heat.py in C, as a Melissa client, optionally MPI-parallel.
 *
 *     dT/dt = alpha * (d2T/dx2 + d2T/dy2)   on [0, 1] x [0, 1],   Dirichlet walls,
 *
 * Same scheme, same operations in the same order as heat.py (explicit 5-point stencil on a
 * node-centred ny x nx grid whose outer rows and columns are the walls; corners hold the mean
 * of their two walls; sub-iterations so that every simulation outputs at t = (k + 1) T_END /
 * steps), so its fields equal the Python ones to rounding (bitwise, with -ffp-contract=off).
 *
 * With MPI (built with -DHEAT_MPI) the rows are split over the ranks as Melissa splits cells
 * over server ranks (the first ny % P ranks get one more row); each rank holds its rows plus
 * one ghost row above and below, exchanged every iteration, and sends its own rows: ranks hold
 * consecutive slices of the row-major field, which is what melissa_init's MPI_Exscan assumes.
 *
 * Usage (the launcher appends the parameter values, in the order of config.json's parameters):
 *     heat INITIAL LEFT RIGHT TOP BOTTOM DIFFUSIVITY [--nx N] [--ny N] [--steps N] [--no-send]
 * --no-send computes the same fields without calling Melissa (bench/client_overhead.py). */
#ifdef HEAT_MPI
#include <mpi.h>
#endif
#include <melissa.h>

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_END 0.1    /* physical end time of every simulation */
#define SAFETY 0.8   /* fraction of the explicit stability limit used for the time step */
#define FIELD "temperature"

static const char *USAGE =
    "usage: heat INITIAL LEFT RIGHT TOP BOTTOM DIFFUSIVITY [--nx N] [--ny N] [--steps N] "
    "[--no-send]\n"
    "  INITIAL, LEFT, RIGHT, TOP, BOTTOM: temperatures (interior at t=0, then the four walls)\n"
    "  DIFFUSIVITY: thermal diffusivity (> 0)\n"
    "  --nx, --ny: grid points along x and y (default 100, at least 3)\n"
    "  --steps: output time steps (default 100; must match study_options.nb_time_steps)\n"
    "  --no-send: compute without sending to Melissa (to measure Melissa's overhead)\n";

typedef struct {
    double values[6]; /* initial, left, right, top, bottom, diffusivity */
    int nx, ny, steps, send;
} options;

static int rank = 0, ranks = 1;

static void stop(int status) {
#ifdef HEAT_MPI
    if (ranks > 1) MPI_Abort(MPI_COMM_WORLD, status);
    MPI_Finalize();
#endif
    exit(status);
}

static void usage_error(const char *fmt, const char *arg) {
    if (rank == 0) {
        fprintf(stderr, "heat: error: ");
        fprintf(stderr, fmt, arg);
        fprintf(stderr, "\n%s", USAGE);
    }
    stop(2);
}

static int positive_int(const char *name, const char *text) {
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end != '\0' || errno == ERANGE || v > 1000000000L)
        usage_error("an option expects an integer, got '%s'", text);
    if (v < 1) usage_error("options --nx, --ny, --steps must be positive, got %s", text);
    (void)name;
    return (int)v;
}

static options parse_args(int argc, char **argv) {
    options o = {{0}, 100, 100, 100, 1};
    int nvalues = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            if (rank == 0) printf("%s", USAGE);
            stop(0);
        }
        if (strncmp(arg, "--", 2) == 0) {
            if (strcmp(arg, "--no-send") == 0) {
                o.send = 0;
                continue;
            }
            char name[32];
            const char *value = strchr(arg, '=');
            size_t n = value ? (size_t)(value - arg) : strlen(arg);
            if (n >= sizeof name) usage_error("unknown option '%s'", arg);
            memcpy(name, arg, n);
            name[n] = '\0';
            int *target = strcmp(name, "--nx") == 0 ? &o.nx : strcmp(name, "--ny") == 0 ? &o.ny
                          : strcmp(name, "--steps") == 0 ? &o.steps : NULL;
            if (target == NULL) usage_error("unknown option '%s'", arg);
            if (value) value++;
            else if (++i < argc) value = argv[i];
            else usage_error("option %s needs a value", name);
            *target = positive_int(name, value);
            continue;
        }
        char *end;
        double v = strtod(arg, &end);
        if (end == arg || *end != '\0') usage_error("not a number: '%s'", arg);
        if (!isfinite(v)) usage_error("not a finite number: '%s'", arg);
        if (nvalues < 6) o.values[nvalues] = v;
        nvalues++;
    }
    if (nvalues != 6)
        usage_error("expected 6 parameter values (initial, left, right, top, bottom, "
                    "diffusivity)%s", "");
    if (o.values[5] <= 0) usage_error("diffusivity must be > 0, got %s", argv[argc - 1]);
    if (o.nx < 3 || o.ny < 3) usage_error("--nx and --ny must be at least 3%s", "");
    if (o.ny < ranks) usage_error("--ny must be at least the number of MPI ranks%s", "");
    return o;
}

/* heat.py's sub_iterations: explicit iterations per output interval for stability. */
static long sub_iterations(double diffusivity, int nx, int ny, int nb_steps) {
    double dx = 1.0 / (nx - 1), dy = 1.0 / (ny - 1);
    double dt_max = SAFETY / (diffusivity * (2.0 / (dx * dx) + 2.0 / (dy * dy)));
    double n = ceil((T_END / nb_steps) / dt_max);
    return n < 1 ? 1 : (long)n;
}

/* heat.py's initial_field at global point (j, i). */
static double initial_value(const options *o, int j, int i) {
    double initial = o->values[0], left = o->values[1], right = o->values[2];
    double top = o->values[3], bottom = o->values[4];
    int first_col = i == 0, last_col = i == o->nx - 1;
    if (j == 0)
        return first_col ? 0.5 * (bottom + left) : last_col ? 0.5 * (bottom + right) : bottom;
    if (j == o->ny - 1)
        return first_col ? 0.5 * (top + left) : last_col ? 0.5 * (top + right) : top;
    return first_col ? left : last_col ? right : initial;
}

static void check(int rc) {
    if (rc != MELISSA_OK) { /* melissa printed what went wrong */
        fprintf(stderr, "heat: error: stopping (Melissa error %d: %s)\n", rc, melissa_strerror(rc));
        stop(1);
    }
}

int main(int argc, char **argv) {
#ifdef HEAT_MPI
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
#endif
    options o = parse_args(argc, argv);
    int nx = o.nx, ny = o.ny;
    /* This rank's rows [j0, j0 + rows): the partition Melissa uses for server ranks. */
    int base = ny / ranks, extra = ny % ranks;
    int j0 = rank * base + (rank < extra ? rank : extra);
    int rows = base + (rank < extra ? 1 : 0);

    /* Local rows 1..rows are global rows j0..j0+rows-1; rows 0 and rows+1 are ghosts. */
    size_t cells = (size_t)(rows + 2) * (size_t)nx;
    double *current = malloc(cells * sizeof *current);
    double *following = malloc(cells * sizeof *following);
    if (current == NULL || following == NULL) {
        fprintf(stderr, "heat: error: out of memory\n");
        stop(1);
    }
    for (int k = 0; k < rows + 2; k++)
        for (int i = 0; i < nx; i++) {
            int j = j0 + k - 1;
            double v = (j >= 0 && j < ny) ? initial_value(&o, j, i) : 0.0;
            current[(size_t)k * nx + i] = following[(size_t)k * nx + i] = v;
        }

    double diffusivity = o.values[5];
    long n_sub = sub_iterations(diffusivity, nx, ny, o.steps);
    double dt = (T_END / o.steps) / (double)n_sub;
    double rx = diffusivity * dt * (double)((long long)(nx - 1) * (nx - 1)); /* alpha dt / dx^2 */
    double ry = diffusivity * dt * (double)((long long)(ny - 1) * (ny - 1)); /* alpha dt / dy^2 */
    /* Interior rows of this rank (walls are never updated), as local indices [k_lo, k_hi]. */
    int k_lo = j0 == 0 ? 2 : 1, k_hi = j0 + rows == ny ? rows - 1 : rows;

    if (o.send) {
        int shape[2] = {ny, nx};
#ifdef HEAT_MPI
        check(melissa_init_shape(FIELD, rows * nx, MPI_COMM_WORLD, 2, shape));
#else
        check(melissa_init_shape_no_mpi(FIELD, 2, shape));
#endif
    }
    for (int step = 0; step < o.steps; step++) {
        for (long it = 0; it < n_sub; it++) {
#ifdef HEAT_MPI
            int up = rank + 1 < ranks ? rank + 1 : MPI_PROC_NULL;
            int down = rank > 0 ? rank - 1 : MPI_PROC_NULL;
            /* my last row goes up, the ghost below comes from below; and the other way round */
            MPI_Sendrecv(current + (size_t)rows * nx, nx, MPI_DOUBLE, up, 0, current, nx,
                         MPI_DOUBLE, down, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Sendrecv(current + (size_t)nx, nx, MPI_DOUBLE, down, 1,
                         current + (size_t)(rows + 1) * nx, nx, MPI_DOUBLE, up, 1,
                         MPI_COMM_WORLD, MPI_STATUS_IGNORE);
#endif
            for (int k = k_lo; k <= k_hi; k++) {
                const double *s = current + (size_t)(k - 1) * nx, *c = current + (size_t)k * nx;
                const double *n = current + (size_t)(k + 1) * nx;
                double *out = following + (size_t)k * nx;
                for (int i = 1; i < nx - 1; i++) {
                    /* (west + east) and (south + north) first, as heat.py */
                    double d2x = c[i - 1] + c[i + 1] - 2.0 * c[i];
                    double d2y = s[i] + n[i] - 2.0 * c[i];
                    out[i] = c[i] + rx * d2x + ry * d2y;
                }
            }
            double *swap = current;
            current = following;
            following = swap;
        }
        if (o.send) check(melissa_send(FIELD, current + nx));
    }
    if (o.send) check(melissa_finalize());
    free(current);
    free(following);
#ifdef HEAT_MPI
    MPI_Finalize();
#endif
    return 0;
}
