/* dpsgd/train.h (being written) */
#ifndef DPSGD_TRAIN_H
#define DPSGD_TRAIN_H
#include "dpsgd/core.h"
#endif
