// dropout: the identity at inference (its output is its input's slot).
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_dropout(Builder&, const OpContext& c) { return c.inputs[0]; }

}  // namespace shrink::rt::detail
