/* The Ishigami function as a C Melissa client (same as ishigami.py): it starts in a
 * millisecond, so a study of thousands of pick-freeze groups runs in a minute.
 *
 *     f(x1, x2, x3) = sin x1 + 7 sin^2 x2 + 0.1 x3^4 sin x1
 *
 * Usage (the launcher appends the values): ishigami X1 X2 X3 */
#include <melissa.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    double x[3];
    for (int i = 0; i < 3; i++) {
        char *end = NULL;
        if (argc != 4 || (x[i] = strtod(argv[i + 1], &end), *end != '\0' || end == argv[i + 1])) {
            fprintf(stderr, "usage: ishigami X1 X2 X3 (three numbers)\n");
            return 2;
        }
    }
    double y = sin(x[0]) + 7.0 * sin(x[1]) * sin(x[1]) + 0.1 * pow(x[2], 4) * sin(x[0]);
    int code = melissa_init_no_mpi("y", 1);
    if (code == 0) code = melissa_send("y", &y);
    if (code == 0) code = melissa_finalize();
    if (code != 0) {
        fprintf(stderr, "ishigami: %s\n", melissa_last_error());
        return 1;
    }
    return 0;
}
