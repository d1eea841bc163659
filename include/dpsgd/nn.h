/* dpsgd/nn.h (being written) */
#ifndef DPSGD_NN_H
#define DPSGD_NN_H
#include "dpsgd/core.h"
#endif
