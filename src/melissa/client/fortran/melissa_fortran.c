/* The C side of module melissa (melissa.f90): the Fortran interfaces bind straight to these
 * functions (bind(c)), so the module itself holds no code and needs no Fortran runtime. Part
 * of libmelissa. */
#define _POSIX_C_SOURCE 200809L

#include "melissa_fortran.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "melissa.h"
#include "melissa_internal.h"
#include "protocol.h"

char *mls_fortran_field(const CFI_cdesc_t *field, const char *function) {
    if (field == NULL || field->base_addr == NULL) {
        mls_error(MELISSA_ERR_ARG, "%s: the field name must be a non-empty string", function);
        return NULL;
    }
    return mls_fortran_string(field->base_addr, field->elem_len, function);
}

int mls_fortran_shape(const CFI_cdesc_t *shape, int dims[32], const char *function) {
    if (shape == NULL) return 0;
    if (shape->rank != 1 || shape->dim[0].extent < 1 || shape->dim[0].extent > 32) {
        mls_error(MELISSA_ERR_ARG, "%s: shape must list 1 to 32 dimensions", function);
        return -1;
    }
    int n = (int)shape->dim[0].extent;
    for (int i = 0; i < n; i++) /* reversed: Fortran's first dimension varies fastest */
        dims[i] = *(const int *)((const char *)shape->base_addr
                                 + (CFI_index_t)(n - 1 - i) * shape->dim[0].sm);
    return n;
}

void melissa_f_init_no_mpi(CFI_cdesc_t *field, const int *size, int *ierr, CFI_cdesc_t *shape) {
    int dims[32], rc;
    char *name = mls_fortran_field(field, "melissa_init_no_mpi");
    int ndims = name ? mls_fortran_shape(shape, dims, "melissa_init_no_mpi") : -1;
    if (name == NULL || ndims < 0) rc = MELISSA_ERR_ARG;
    else rc = melissa_init_global(name, *size, 0, *size, 0, 1, ndims, dims);
    free(name);
    mls_fortran_return(rc, ierr);
}

/* Copy an array that is not contiguous (a section such as T(2:n-1, :)) into `out`. */
static void gather(const CFI_cdesc_t *a, char *out) {
    CFI_index_t index[CFI_MAX_RANK] = {0};
    size_t item = a->elem_len;
    for (;;) {
        const char *p = a->base_addr;
        for (int d = 0; d < a->rank; d++) p += index[d] * a->dim[d].sm;
        memcpy(out, p, item);
        out += item;
        int d = 0;
        while (d < a->rank && ++index[d] == a->dim[d].extent) index[d++] = 0;
        if (d == a->rank) return;
    }
}

void melissa_f_send(CFI_cdesc_t *field, CFI_cdesc_t *data, int *ierr) {
    int rc = MELISSA_ERR_ARG;
    char *name = mls_fortran_field(field, "melissa_send");
    char *copy = NULL;
    if (name == NULL) goto done;
    int dtype = data->type == CFI_type_double ? MLS_FLOAT64
                : data->type == CFI_type_float ? MLS_FLOAT32 : 0;
    if (dtype == 0 || (data->elem_len != 8 && data->elem_len != 4)) {
        rc = mls_error(MELISSA_ERR_SIZE, "melissa_send(\"%.200s\"): send real(c_double) or "
                       "real(c_float) arrays", name);
        goto done;
    }
    long long count = 1;
    int contiguous = 1;
    CFI_index_t stride = (CFI_index_t)data->elem_len;
    for (int d = 0; d < data->rank; d++) {
        if (data->dim[d].extent < 0) {
            rc = mls_error(MELISSA_ERR_SIZE, "melissa_send(\"%.200s\"): an assumed-size array "
                           "has no known size; pass an array section such as a(1:n)", name);
            goto done;
        }
        if (data->dim[d].extent > 1 && data->dim[d].sm != stride) contiguous = 0;
        stride *= data->dim[d].extent;
        count *= data->dim[d].extent;
    }
    const void *values = data->base_addr;
    if (!contiguous && count > 0) {
        copy = malloc((size_t)count * data->elem_len);
        if (copy == NULL) {
            rc = mls_error(MELISSA_ERR_SYSTEM, "out of memory");
            goto done;
        }
        gather(data, copy);
        values = copy;
    }
    rc = mls_send_typed(name, values, dtype, count);
done:
    free(copy);
    free(name);
    mls_fortran_return(rc, ierr);
}

void melissa_f_finalize(int *ierr) { mls_fortran_return(mls_finalize(), ierr); }

void melissa_f_last_error(CFI_cdesc_t *message) {
    const char *text = melissa_last_error();
    size_t n = strlen(text), size = message->elem_len;
    if (n > size) n = size;
    memcpy(message->base_addr, text, n);
    memset((char *)message->base_addr + n, ' ', size - n);
}
