/* Melissa's melissa_init and melissa_init_f (melissa_api.h): the MPI half of Melissa's API, in
 * libmelissa_api_mpi, built with the mpicc of the MPI the simulation uses. The layout is that of
 * melissa.h's melissa_init: ranks hold consecutive slices in rank order. */
#include <mpi.h>

#include "melissa_api.h"
#include "melissa_internal.h"

static void init(const char *field_name, int local_size, MPI_Comm comm, int from_fortran) {
    int rank = 0, ranks = 1, rc;
    long long local = local_size, global = 0, offset = 0;
    if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &ranks) != MPI_SUCCESS
        || MPI_Allreduce(&local, &global, 1, MPI_LONG_LONG, MPI_SUM, comm) != MPI_SUCCESS
        || MPI_Exscan(&local, &offset, 1, MPI_LONG_LONG, MPI_SUM, comm) != MPI_SUCCESS) {
        rc = mls_error(MELISSA_ERR_MPI, "melissa_init: an MPI call failed (MPI_Comm_rank, "
                       "MPI_Comm_size, MPI_Allreduce or MPI_Exscan): is MPI initialised, and is "
                       "the communicator valid?");
    } else {
        if (rank == 0) offset = 0; /* MPI_Exscan leaves rank 0's result undefined */
        rc = mls_compat_init(field_name, from_fortran, local_size, offset, global, rank, ranks);
    }
    /* The other ranks may wait in a collective call of the simulation: end them all. */
    if (rc != 0) MPI_Abort(comm == MPI_COMM_NULL ? MPI_COMM_WORLD : comm, rc);
}

void melissa_init(const char *field_name, const int local_vect_size, MPI_Comm comm) {
    init(field_name, local_vect_size, comm, 0);
}

void melissa_init_f(const char *field_name, int *local_vect_size, MPI_Fint *comm_fortran) {
    if (local_vect_size == NULL || comm_fortran == NULL)
        mls_compat_exit(mls_error(MELISSA_ERR_ARG, "melissa_init: null size or communicator"));
    init(field_name, *local_vect_size, MPI_Comm_f2c(*comm_fortran), 1);
}
