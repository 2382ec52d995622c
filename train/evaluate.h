#pragma once
#include <vector>

#include "datasets/loader.h"
#include "train/model.h"

namespace shrink {

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t count = 0;
  std::vector<int64_t> correct_per_class, count_per_class;
};

// Mean cross-entropy and top-1 accuracy over a whole source, in eval mode, without gradients.
EvalResult evaluate(SpecNet& model, std::shared_ptr<const Source> source, const Augment& normalization, int64_t batch_size);

}  // namespace shrink
