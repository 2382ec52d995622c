// batchnorm: not run. Export folds every batchnorm into the conv or linear before it, and the
// load refuses a file that still has one (ModelMeta::from_json), so this op is never reached
// from a loaded model; it gives the same error should it be.
#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {

Act build_batchnorm(Builder& b, const OpContext& c) { b.model().fail(unfolded_batchnorm_message(c.layer.name)); }

}  // namespace shrink::rt::detail
