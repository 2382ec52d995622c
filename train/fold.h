// Batchnorm folding: a conv (or linear) followed by a batchnorm that only it feeds becomes one
// conv with bias, W' = W * g / sqrt(v + eps), b' = (b - m) * g / sqrt(v + eps) + beta.
// Exact in eval mode (up to float rounding). Used for frozen teachers, and by quantization and
// export, which run the folded graph.
#pragma once
#include <map>
#include <string>

#include "train/model.h"

namespace shrink {

struct FoldedModel {
  SpecNet model{nullptr};
  std::map<std::string, std::string> renamed;  // folded batchnorm name -> the layer that now gives its output
};

FoldedModel fold_batchnorm(SpecNet& model);
// The batchnorms fold_batchnorm folds, each with the layer that then gives its output.
std::map<std::string, std::string> folded_batchnorms(const ModelSpec& spec);
// The epsilon of batchnorm layer `name` (1d or 2d).
double batchnorm_eps(SpecNetImpl& model, const std::string& name);
// Batchnorm `name` (in eval mode) as y = x * scale + shift per channel.
std::pair<torch::Tensor, torch::Tensor> batchnorm_scale_shift(SpecNetImpl& model, const std::string& name);

}  // namespace shrink
