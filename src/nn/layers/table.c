/* nn/layers/table.c: the layer-operations table, one row per entry of DP_LAYER_LIST
 * (include/dpsgd/nn.h), each defined in its family's file in this folder. */
#include "nn/graph.h"

const dp__layer_ops *const dp__layer_ops_table[DP_LAYER_COUNT] = {
#define DP__ROW(name, text) [name] = &dp__ops_##name,
    DP_LAYER_LIST(DP__ROW)
#undef DP__ROW
};
#define DP__ONE(name, text) +1
_Static_assert(sizeof dp__layer_ops_table / sizeof dp__layer_ops_table[0] == 0 DP_LAYER_LIST(DP__ONE),
               "every layer kind needs a row in the table");
#undef DP__ONE
