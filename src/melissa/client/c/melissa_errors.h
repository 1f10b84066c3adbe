/* melissa_errors.h: the error codes of the Melissa client library, shared by melissa.h (whose
 * functions return them) and melissa_api.h (Melissa's void functions, which end the program with
 * them as exit status). */
#ifndef MELISSA_ERRORS_H
#define MELISSA_ERRORS_H

/* Error codes: the value returned by every call (Fortran: ierr, or the exit status of the
 * program when ierr is absent). */
enum melissa_error {
    MELISSA_OK = 0,
    MELISSA_ERR_ENV = 1,      /* MELISSA_SERVER / _SIMULATION_ID / _STUDY_TOKEN missing, or a
                                 MELISSA_* variable malformed: run through melissa-launcher */
    MELISSA_ERR_ARG = 2,      /* invalid argument: NULL/empty/non-UTF-8 field name, size < 0,
                                 shape not matching the size, offset out of range, NULL data */
    MELISSA_ERR_ORDER = 3,    /* call out of order: send/finalize before init, init twice,
                                 anything after finalize or after a timeout ended the session */
    MELISSA_ERR_SIZE = 4,     /* an array's size differs from the local_size given to init
                                 (Fortran), or a non-numeric/unsupported array type */
    MELISSA_ERR_STEPS = 5,    /* more sends than nb_time_steps, or finalize before all of them */
    MELISSA_ERR_TIMEOUT = 6,  /* the server did not answer or take data within MELISSA_TIMEOUT:
                                 no server at MELISSA_SERVER, a wrong MELISSA_STUDY_TOKEN (the
                                 server does not answer it), or the study ended */
    MELISSA_ERR_REFUSED = 7,  /* the server refused a message (unknown field, field size that
                                 differs from other simulations', ...); its reason is printed */
    MELISSA_ERR_PROTOCOL = 8, /* a garbled answer from the server (wrong Melissa version?) */
    MELISSA_ERR_SYSTEM = 9,   /* ZeroMQ or the OS failed: bad MELISSA_SERVER address, no memory */
    MELISSA_ERR_MPI = 10      /* an MPI call failed in melissa_init */
};

#endif
