/* melissa_api_no_mpi.h: Melissa's client API for sequential simulations, unchanged, so that a
 * simulation instrumented for Melissa builds against this project without an edit:
 *
 *     #include <melissa_api_no_mpi.h>
 *     melissa_init_no_mpi("heat1", vect_size);
 *     for (...) melissa_send_no_mpi("heat1", u);   // vect_size doubles per time step
 *     melissa_finalize();
 *
 * Link with libmelissa_api (pkg-config melissa-api). The functions return nothing, as
 * Melissa's do: on an error they print "melissa: error: <reason>" on stderr and end the program
 * with the error code of melissa_errors.h as exit status. Field names are matched against the
 * study's (study_options.field_names, given to the simulation by the launcher), so a Fortran
 * name without a terminating NUL works too (docs/migrating-from-melissa.md). */
#ifndef MELISSA_API_NO_MPI_H
#define MELISSA_API_NO_MPI_H

#include "melissa_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MELISSA_MAJOR_NUM 0
#define MELISSA_MINOR_NUM 1
#define MELISSA_RELEASE_NUM 0

/* Declare field `field_name` of `vect_size` values; once per field, before its first send. */
void melissa_init_no_mpi(const char *field_name, const int vect_size);

/* The same for Fortran (include "melissa_api.f90"): the size by reference. */
void melissa_init_no_mpi_f(const char *field_name, const int *vect_size);

/* Send the next time step of `field_name`: vect_size doubles, reusable on return. */
void melissa_send_no_mpi(const char *field_name, const double *send_vect);

/* After the last send of every field. */
void melissa_finalize(void);

/* This library's version, "MAJOR.MINOR.RELEASE". */
const char *melissa_version(void);

#ifdef __cplusplus
}
#endif

#endif
