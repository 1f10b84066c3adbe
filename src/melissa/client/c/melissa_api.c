/* Melissa's client API (melissa_api_no_mpi.h, and the MPI-free half of melissa_api.h) over the
 * library's core: void functions that end the program on an error, as Melissa's do, and field
 * names that need no terminating NUL when they come from Fortran. Built into libmelissa_api
 * with its own copy of the core (melissa.c without the native entry points of the same names). */
#define _POSIX_C_SOURCE 200809L

#include "melissa_api_no_mpi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "melissa_internal.h"
#include "protocol.h"

#define MAX_NAME 256
#define MLS_STR(x) #x
#define MLS_XSTR(x) MLS_STR(x)
#define MLS_LIBRARY_VERSION MLS_XSTR(MELISSA_MAJOR_NUM) "." MLS_XSTR(MELISSA_MINOR_NUM) "." \
    MLS_XSTR(MELISSA_RELEASE_NUM)
#define MAX_FIELDS 64

/* The fields this process declared: their names, and whether the name came from Fortran (then
 * a later send's name is only known to start with it: Melissa's Fortran examples pass
 * character(len=5) :: name = "heat1", five bytes and no NUL). */
static struct {
    char name[MAX_NAME];
    int from_fortran;
} declared[MAX_FIELDS];
static int nb_declared;

/* Bytes of `given` read so far, for the message when nothing matches (never more): "name"
 * when they end with its NUL, else "starting \"...\"". */
static void quote_examined(const char *given, size_t examined, char *out, size_t size) {
    size_t n = 0, i = 0;
    char text[MAX_NAME];
    for (; i < examined && given[i] != '\0' && n + 1 < sizeof text; i++)
        text[n++] = (given[i] >= 32 && given[i] < 127) ? given[i] : '?';
    text[n] = '\0';
    snprintf(out, size, i < examined ? "\"%s\"" : "starting \"%s\"", text);
}

/* Length of the longest of `names` that `given` starts with, 0 if none. Reads `given` only
 * while it still matches a candidate: past the end of a name only when that name is the start
 * of a longer candidate (then the Fortran caller must end the name with C_NULL_CHAR). */
static size_t longest_prefix(const char *given, const char *const *names, int count,
                             size_t *examined) {
    size_t best = 0;
    for (int k = 0; k < count; k++) {
        size_t n = strlen(names[k]), i = 0;
        while (i < n && given[i] == names[k][i]) i++;
        if (i + 1 > *examined) *examined = i < n ? i + 1 : i;
        if (i == n && n > best) best = n;
    }
    return best;
}

/* The study's field names, from MELISSA_FIELD_NAMES (comma-separated; the launcher sets it). */
static int study_fields(char *buffer, size_t size, const char **names) {
    const char *list = getenv("MELISSA_FIELD_NAMES");
    if (list == NULL || list[0] == '\0' || strlen(list) >= size) return -1;
    strcpy(buffer, list);
    int count = 0;
    for (char *save = NULL, *tok = strtok_r(buffer, ",", &save); tok && count < MAX_FIELDS;
         tok = strtok_r(NULL, ",", &save))
        names[count++] = tok;
    return count;
}

static int name_of_init(const char *given, int from_fortran, const char *function, char *out) {
    if (given == NULL)
        return mls_error(MELISSA_ERR_ARG, "%s: the field name is a null pointer", function);
    if (!from_fortran) {
        size_t n = strnlen(given, MAX_NAME);
        if (n == 0 || n == MAX_NAME)
            return mls_error(MELISSA_ERR_ARG, "%s: the field name must be a non-empty string of "
                             "fewer than %d bytes", function, MAX_NAME);
        memcpy(out, given, n + 1);
        return 0;
    }
    char buffer[4096];
    const char *names[MAX_FIELDS];
    int count = study_fields(buffer, sizeof buffer, names);
    if (count < 0)
        return mls_error(MELISSA_ERR_ENV, "%s: MELISSA_FIELD_NAMES is not set: run this "
                         "simulation through melissa-launcher, which names the study's fields "
                         "(a Fortran field name is matched against them)", function);
    size_t examined = 0, n = longest_prefix(given, names, count, &examined);
    if (n == 0) {
        char seen[MAX_NAME + 16];
        quote_examined(given, examined, seen, sizeof seen);
        return mls_error(MELISSA_ERR_ARG, "%s: the field name %s is none of the "
                         "study's fields (study_options.field_names: %s)", function, seen,
                         getenv("MELISSA_FIELD_NAMES"));
    }
    memcpy(out, given, n);
    out[n] = '\0';
    return 0;
}

int mls_compat_init(const char *given, int from_fortran, int local_size, long long offset,
                    long long global_size, int rank, int ranks) {
    const char *function = from_fortran ? "melissa_init (Fortran)" : "melissa_init";
    char name[MAX_NAME];
    int rc = name_of_init(given, from_fortran, function, name);
    if (rc != 0) return rc;
    if (nb_declared == MAX_FIELDS)
        return mls_error(MELISSA_ERR_ARG, "%s: more than %d fields", function, MAX_FIELDS);
    rc = melissa_init_global(name, local_size, offset, global_size, rank, ranks, 0, NULL);
    if (rc == 0) {
        strcpy(declared[nb_declared].name, name);
        declared[nb_declared++].from_fortran = from_fortran;
    }
    return rc;
}

void mls_compat_exit(int rc) {
    if (rc != 0) exit(rc); /* the reason is printed; exit flushes the program's output */
}

/* The declared field `given` names: exactly (a C string) or by its start (from Fortran). */
static const char *name_of_send(const char *given, const char *function) {
    if (given == NULL) {
        mls_compat_exit(mls_error(MELISSA_ERR_ARG, "%s: the field name is a null pointer",
                                  function));
    }
    const char *best = NULL;
    size_t best_length = 0, examined = 0;
    for (int k = 0; k < nb_declared; k++) {
        const char *name = declared[k].name;
        size_t n = strlen(name), i = 0;
        while (i < n && given[i] == name[i]) i++;
        int whole = i == n && (declared[k].from_fortran || given[n] == '\0');
        if (i + 1 > examined) examined = i < n || !declared[k].from_fortran ? i + 1 : i;
        if (whole && n > best_length) {
            best = name;
            best_length = n;
        }
    }
    if (best != NULL) return best;
    char seen[MAX_NAME + 16], fields[1024] = "";
    quote_examined(given, examined, seen, sizeof seen);
    for (int k = 0; k < nb_declared; k++) {
        size_t used = strlen(fields);
        snprintf(fields + used, sizeof fields - used, "%s%.200s", k ? ", " : "",
                 declared[k].name);
    }
    mls_compat_exit(mls_error(nb_declared ? MELISSA_ERR_ARG : MELISSA_ERR_ORDER,
                              "%s: the field name %s is not a field given to "
                              "melissa_init%s%s%s", function, seen, nb_declared ? " (" : " (no melissa_init yet)", fields,
                              nb_declared ? ")" : ""));
    return NULL;
}

void melissa_init_no_mpi(const char *field_name, const int vect_size) {
    mls_compat_exit(mls_compat_init(field_name, 0, vect_size, 0, vect_size, 0, 1));
}

void melissa_init_no_mpi_f(const char *field_name, const int *vect_size) {
    if (vect_size == NULL)
        mls_compat_exit(mls_error(MELISSA_ERR_ARG, "melissa_init_no_mpi: no size"));
    mls_compat_exit(mls_compat_init(field_name, 1, *vect_size, 0, *vect_size, 0, 1));
}

void melissa_send_no_mpi(const char *field_name, const double *send_vect) {
    const char *name = name_of_send(field_name, "melissa_send_no_mpi");
    mls_compat_exit(mls_send_typed(name, send_vect, MLS_FLOAT64, -1));
}

/* Declared by melissa_api.h (which needs <mpi.h>), but free of MPI: defined here. */
void melissa_send(const char *field_name, const double *send_vect);
void melissa_send(const char *field_name, const double *send_vect) {
    const char *name = name_of_send(field_name, "melissa_send");
    mls_compat_exit(mls_send_typed(name, send_vect, MLS_FLOAT64, -1));
}

/* Current Melissa's send with a JSON object of metadata. The values go as melissa_send's; the
 * metadata is checked (a JSON object) but reaches no server here: none reads per-step metadata
 * (docs/migrating-from-melissa.md). */
void melissa_send_with_metadata(const char *field_name, const double *send_vect,
                                const char *metadata_json);
void melissa_send_with_metadata(const char *field_name, const double *send_vect,
                                const char *metadata_json) {
    const char *name = name_of_send(field_name, "melissa_send_with_metadata");
    mls_json doc;
    char why[200];
    if (metadata_json == NULL
        || mls_json_parse(&doc, metadata_json, strlen(metadata_json), why, sizeof why) != 0)
        mls_compat_exit(mls_error(MELISSA_ERR_ARG, "melissa_send_with_metadata(\"%.200s\"): the "
                                  "metadata is not JSON: %s", name,
                                  metadata_json ? why : "a null pointer"));
    int is_object = doc.nodes[0].type == MLS_JOBJECT;
    mls_json_free(&doc);
    if (!is_object)
        mls_compat_exit(mls_error(MELISSA_ERR_ARG, "melissa_send_with_metadata(\"%.200s\"): the "
                                  "metadata must be a JSON object, got %.100s", name,
                                  metadata_json));
    mls_compat_exit(mls_send_typed(name, send_vect, MLS_FLOAT64, -1));
}

void melissa_finalize(void) { mls_compat_exit(mls_finalize()); }

const char *melissa_version(void) { return MLS_LIBRARY_VERSION; }
