#include "distill/losses.h"

namespace shrink {

torch::Tensor soft_target_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits, double temperature) {
  auto log_p_student = torch::log_softmax(student_logits / temperature, 1);
  auto log_p_teacher = torch::log_softmax(teacher_logits / temperature, 1);
  auto kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(1).mean();
  return kl * (temperature * temperature);
}

torch::Tensor hint_loss(const torch::Tensor& adapted_student, const torch::Tensor& teacher) {
  return torch::mse_loss(adapted_student, teacher);
}

torch::Tensor attention_map(const torch::Tensor& features) {
  auto a = features.pow(2).mean(1).flatten(1);
  return a / a.norm(2, 1, true).clamp_min(1e-12);
}

torch::Tensor attention_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  return (attention_map(student) - attention_map(teacher)).pow(2).mean();
}

}  // namespace shrink
