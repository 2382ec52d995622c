// SyncBatchNorm for data-parallel training: a batchnorm layer in training mode normalizes with the
// mean and variance of the whole global batch (every worker's examples), and its backward sums the
// statistics' gradients over the workers too, so N workers with a global batch B compute what one
// process with batch B does. The running statistics are updated from the global ones, the same on
// every worker. A worker may hold no example of a batch (a short last batch): it still takes part.
#pragma once
#include <torch/torch.h>

namespace shrink {

// The training-mode forward of `bn` (a BatchNorm1d or BatchNorm2d) on x, over every worker of
// World::get(). Its weight and bias gradients are this worker's part: the trainer's gradient
// all-reduce sums them.
torch::Tensor sync_batch_norm(const torch::Tensor& x, torch::nn::Module& bn);

}  // namespace shrink
