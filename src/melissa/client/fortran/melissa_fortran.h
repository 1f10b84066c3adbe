/* Shared by the C side of the Fortran bindings (melissa_fortran.c in libmelissa,
 * melissa_fortran_mpi.c in libmelissa_mpi). Fortran 2018 C descriptors (ISO_Fortran_binding.h)
 * carry the length of Fortran strings and the shape of arrays, so the user passes plain Fortran
 * strings and arrays. The descriptor layout belongs to the Fortran compiler: these files must be
 * compiled with the C compiler matching it (gcc for gfortran). */
#ifndef MELISSA_FORTRAN_H
#define MELISSA_FORTRAN_H

#include <ISO_Fortran_binding.h>

/* The field name of a character(len=*) argument, trailing blanks removed; NULL (error
 * reported) on failure. Free it. */
char *mls_fortran_field(const CFI_cdesc_t *field, const char *function);

/* An optional shape(:) argument, given in Fortran order (as shape(array) returns it), into C
 * order for the wire. Returns ndims (0 if absent), or -1 (error reported). */
int mls_fortran_shape(const CFI_cdesc_t *shape, int dims[32], const char *function);

#endif
