/* dpsgd/optim.h (being written) */
#ifndef DPSGD_OPTIM_H
#define DPSGD_OPTIM_H
#include "dpsgd/core.h"
#endif
