// SyncBatchNorm for data-parallel training: a batchnorm layer in training mode normalizes with the
// mean and variance of the whole global batch (every worker's examples), and its backward sums the
// statistics' gradients over the workers too, so N workers with a global batch B compute what one
// process with batch B does. The running statistics are updated from the global ones, the same on
// every worker. A worker may hold no example of a batch (a short last batch): it still takes part.
#pragma once
#include <torch/torch.h>

namespace shrink {

// Batchnorm in training mode on x (channels in dim 1), over every worker of World::get(): the
// running statistics are updated in place. The weight and bias gradients are this worker's part:
// the trainer's gradient all-reduce sums them.
torch::Tensor sync_batch_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor& running_mean,
                              torch::Tensor& running_var, double eps, double momentum);

}  // namespace shrink
