/* dpsgd/data.h (being written) */
#ifndef DPSGD_DATA_H
#define DPSGD_DATA_H
#include "dpsgd/core.h"
#endif
