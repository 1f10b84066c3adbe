/* Internal entry points shared by the C API (melissa.c) and the Fortran bindings
 * (../fortran/melissa_fortran.c, melissa_fortran_mpi.c). Not part of the public API. */
#ifndef MELISSA_INTERNAL_H
#define MELISSA_INTERNAL_H

#include <stddef.h>

/* Send `data` (dtype 1 = float64, 2 = float32, see protocol.h) for `field`; `count` is the
 * number of values the caller knows the array holds (checked against local_size), or -1 when
 * it does not know (the C API: a bare pointer). */
int mls_send_typed(const char *field, const void *data, int dtype, long long count);

/* melissa_finalize: the same in both APIs. */
int mls_finalize(void);

/* Record and print an error as every API call does; returns `code`. */
int mls_error(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Fortran bindings: a Fortran string (blank-padded, not NUL-terminated) as a new C string
 * without its trailing blanks; NULL (error already reported) if it holds a NUL or on ENOMEM. */
char *mls_fortran_string(const char *text, size_t length, const char *what);

/* Fortran bindings: store `code` in *ierr when the caller passed ierr; otherwise stop the
 * program with exit status `code` when it is an error (the message is already printed). */
void mls_fortran_return(int code, int *ierr);

/* Melissa's API (melissa_api.c): declare a field whose name comes from C (a string) or from
 * Fortran (matched against MELISSA_FIELD_NAMES, no NUL needed); returns an error code. */
int mls_compat_init(const char *given, int from_fortran, int local_size, long long offset,
                    long long global_size, int rank, int ranks);

/* Melissa's API: end the program with `rc` as exit status unless it is MELISSA_OK. */
void mls_compat_exit(int rc);

/* Declared by melissa.h, which the files of Melissa's API cannot include. */
int melissa_init_global(const char *field, int local_size, long long global_offset,
                        long long global_size, int rank, int ranks, int ndims, const int *shape);

#endif
