// Distillation losses. Each returns a scalar averaged over the batch.
#pragma once
#include <torch/torch.h>

namespace shrink {

// Hinton et al. 2015: KL(softmax(t/T) || softmax(s/T)) * T^2, summed over classes, mean over the batch.
torch::Tensor soft_target_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits, double temperature);
// FitNets (Romero et al. 2015): mean squared error between the adapted student feature and the teacher's.
torch::Tensor hint_loss(const torch::Tensor& adapted_student, const torch::Tensor& teacher);
// Zagoruyko & Komodakis 2017: attention map = L2-normalized mean over channels of the squared
// activations, flattened per example.
torch::Tensor attention_map(const torch::Tensor& features);
// Mean squared difference of the two attention maps (the authors' code; scale with at_weight, ~1000).
torch::Tensor attention_loss(const torch::Tensor& student, const torch::Tensor& teacher);

}  // namespace shrink
