/* melissa.h: the Melissa client API for C (and, through module melissa, Fortran).
 *
 *     melissa_init("temperature", local_size, MPI_COMM_WORLD);  // or melissa_init_no_mpi
 *     for (step = 0; step < nb_time_steps; step++) {
 *         advance(field);
 *         melissa_send("temperature", field);  // local_size doubles; reusable on return
 *     }
 *     melissa_finalize();
 *
 * The connection settings come from the environment the launcher gives every simulation:
 * MELISSA_SERVER, MELISSA_SIMULATION_ID, MELISSA_STUDY_TOKEN, MELISSA_ATTEMPT, and
 * MELISSA_TIMEOUT (seconds, default 60): no call waits longer than that for the server, and
 * MELISSA_SERVER_KEY when the study is encrypted (CURVE; needs a libzmq with libsodium).
 *
 * Every function returns MELISSA_OK (0) or one of the error codes below; on an error it also
 * prints one line "melissa: error: <what went wrong and what to do>" on stderr, and
 * melissa_last_error() returns that text. The calls are not thread-safe: call them from one
 * thread (per process; with MPI every rank is a separate client of the server).
 *
 * MPI: melissa_init and melissa_init_shape take an MPI communicator. They are declared when
 * <mpi.h> is included before this header, or when MELISSA_MPI is defined (then this header
 * includes <mpi.h>). They are inline functions compiled with *your* MPI, so libmelissa itself
 * does not depend on MPI and works with any MPI implementation. Without MPI, use
 * melissa_init_no_mpi. Build and link: docs/c-fortran.md (pkg-config melissa, or CMake
 * find_package(melissa)). */
#ifndef MELISSA_H
#define MELISSA_H

#if defined(MELISSA_MPI) && !defined(MPI_VERSION)
#include <mpi.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define MELISSA_VERSION_MAJOR 0
#define MELISSA_VERSION_MINOR 1
#define MELISSA_PROTOCOL_VERSION 1

#include "melissa_errors.h" /* enum melissa_error: what every call returns */

/* Declare a field of a sequential simulation: `size` values, sent by each melissa_send. Once per
 * field (every name in study_options.field_names), before that field's first send. Blocks until
 * the server answers (at most MELISSA_TIMEOUT). */
int melissa_init_no_mpi(const char *field, int size);

/* The same, giving the field's shape (C order, slowest dimension first, e.g. {ny, nx}) so that
 * the results keep it; size = product of shape[0..ndims-1]. */
int melissa_init_shape_no_mpi(const char *field, int ndims, const int *shape);

/* The general form behind every init: this process is client rank `rank` of `ranks`, holding
 * `local_size` values that start at `global_offset` in a field of `global_size` values (shape
 * may be NULL with ndims = 0). For MPI programs that prefer to compute the layout themselves. */
int melissa_init_global(const char *field, int local_size, long long global_offset,
                        long long global_size, int rank, int ranks, int ndims, const int *shape);

/* Send this rank's `local_size` values of `field` for the next time step (time step k is the
 * k-th send of the field). The values are sent without a copy; the call returns once ZeroMQ no
 * longer reads them, so `data` may be overwritten or freed as soon as it returns. */
int melissa_send(const char *field, const double *data);
int melissa_send_float(const char *field, const float *data); /* float32 values */

/* After the last send of every field: tells every server rank that this rank is done and waits
 * for their acknowledgement. Closes the connection. */
int melissa_finalize(void);

/* The message of the last error ("" if none), and a short description of an error code. */
const char *melissa_last_error(void);
const char *melissa_strerror(int code);

/* Internal: reports MELISSA_ERR_MPI for the inline MPI functions below. */
int melissa_mpi_failed(const char *field);

#ifdef MPI_VERSION
/* Declare a field of an MPI simulation: this rank holds `local_size` values. Collective over
 * `comm`: the global size is the sum over ranks (MPI_Allreduce) and this rank's values start
 * after those of the lower ranks (MPI_Exscan), i.e. ranks hold consecutive slices in rank
 * order (for a 2-D field split by rows: row-major order). */
static inline int melissa_init_shape(const char *field, int local_size, MPI_Comm comm, int ndims,
                                     const int *shape) {
    int rank = 0, ranks = 1;
    long long local = local_size, global = 0, offset = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &ranks) != MPI_SUCCESS
        || MPI_Allreduce(&local, &global, 1, MPI_LONG_LONG, MPI_SUM, comm) != MPI_SUCCESS
        || MPI_Exscan(&local, &offset, 1, MPI_LONG_LONG, MPI_SUM, comm) != MPI_SUCCESS)
        return melissa_mpi_failed(field); /* MELISSA_ERR_MPI, with a message */
    if (rank == 0) offset = 0; /* MPI_Exscan leaves rank 0's result undefined */
    return melissa_init_global(field, local_size, offset, global, rank, ranks, ndims, shape);
}

static inline int melissa_init(const char *field, int local_size, MPI_Comm comm) {
    return melissa_init_shape(field, local_size, comm, 0, 0);
}
#endif

#ifdef __cplusplus
}
#endif

#endif
