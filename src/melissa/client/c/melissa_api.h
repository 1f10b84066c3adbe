/* melissa_api.h: Melissa's client API for MPI simulations, unchanged, so that a simulation
 * instrumented for Melissa builds against this project without an edit:
 *
 *     #include <mpi.h>
 *     #include "melissa_api.h"
 *     melissa_init("heat1", local_vect_size, comm);   // collective over comm
 *     for (...) melissa_send("heat1", u);             // this rank's local_vect_size doubles
 *     melissa_finalize();
 *
 * comm is the simulation's communicator: with Melissa's MPMD groups (several simulations in one
 * mpirun), the part of MPI_COMM_WORLD of this program's MPI_APPNUM (MPI_Comm_split), otherwise
 * MPI_COMM_WORLD or a duplicate. Ranks hold consecutive slices of the field in rank order.
 *
 * Link with libmelissa_api_mpi and libmelissa_api (pkg-config melissa-api-mpi), built with the
 * MPI the program uses. The functions return nothing, as Melissa's do: on an error they print
 * "melissa: error: <reason>" on stderr and end the program (MPI_Abort during melissa_init, whose
 * other ranks would wait in a collective call) with the error code of melissa_errors.h. */
#ifndef MELISSA_API_H
#define MELISSA_API_H

#include <mpi.h>

#include "melissa_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MELISSA_MAJOR_NUM 0
#define MELISSA_MINOR_NUM 1
#define MELISSA_RELEASE_NUM 0

/* Declare field `field_name`, of which this rank holds `local_vect_size` values. */
void melissa_init(const char *field_name, const int local_vect_size, MPI_Comm comm);

/* The same for Fortran (include "melissa_api.f90"): arguments by reference, a Fortran
 * communicator handle. */
void melissa_init_f(const char *field_name, int *local_vect_size, MPI_Fint *comm_fortran);

/* Send this rank's values of `field_name` for the next time step; reusable on return. */
void melissa_send(const char *field_name, const double *send_vect);

/* Current Melissa's melissa_send with a JSON object of metadata about the step: the values are
 * sent as melissa_send's; the metadata must be a JSON object, and no server here uses it. */
void melissa_send_with_metadata(const char *field_name, const double *send_vect,
                                const char *metadata_json);

/* After the last send of every field. */
void melissa_finalize(void);

/* This library's version, "MAJOR.MINOR.RELEASE". */
const char *melissa_version(void);

#ifdef __cplusplus
}
#endif

#endif
