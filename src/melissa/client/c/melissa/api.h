/* melissa/api.h: the name under which the 2021 Melissa (and later) installs its MPI client API
 * (#include <melissa/api.h>): the same functions as melissa_api.h. */
#ifndef MELISSA_MELISSA_API_H
#define MELISSA_MELISSA_API_H

#include "../melissa_api.h"

#endif
