/* dpsgd/privacy.h (being written) */
#ifndef DPSGD_PRIVACY_H
#define DPSGD_PRIVACY_H
#include "dpsgd/core.h"
#endif
