/* The C side of melissa_init(field, local_size, comm) for Fortran: the communicator arrives as
 * a Fortran handle (an integer with `use mpi`; type(MPI_Comm), whose only component is that
 * integer, with `use mpi_f08`) and becomes a C communicator through MPI_Comm_f2c. This is the
 * only compiled code of Melissa that depends on an MPI implementation: libmelissa_mpi, built
 * with the mpicc of the MPI whose Fortran modules the program uses. */
#include <mpi.h>
#include <stdlib.h>

#include "melissa.h"
#include "melissa_fortran.h"
#include "melissa_internal.h"

void melissa_f_init(CFI_cdesc_t *field, const int *local_size, const MPI_Fint *comm, int *ierr,
                    CFI_cdesc_t *shape) {
    int dims[32], rc;
    char *name = mls_fortran_field(field, "melissa_init");
    int ndims = name ? mls_fortran_shape(shape, dims, "melissa_init") : -1;
    if (name == NULL || ndims < 0) rc = MELISSA_ERR_ARG;
    else rc = melissa_init_shape(name, *local_size, MPI_Comm_f2c(*comm), ndims, dims);
    free(name);
    mls_fortran_return(rc, ierr);
}
