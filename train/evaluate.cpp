#include "train/evaluate.h"

namespace shrink {

EvalResult evaluate(SpecNet& model, std::shared_ptr<const Source> source, const Augment& normalization, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  bool was_training = model->is_training();
  model->eval();
  const int64_t classes = model->spec().classes;
  auto correct = torch::zeros({classes}, torch::kInt64), counts = torch::zeros({classes}, torch::kInt64);
  double loss_sum = 0;
  for_each_batch(source, batch_size, normalization, [&](const Batch& batch) {
    auto logits = model->forward(batch.x);
    loss_sum += torch::nn::functional::cross_entropy(logits, batch.y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                    .item<double>();
    auto hit = (logits.argmax(1) == batch.y).to(torch::kInt64);
    counts += torch::bincount(batch.y, {}, classes);
    correct += torch::bincount(batch.y, hit, classes).to(torch::kInt64);
  });
  model->train(was_training);
  EvalResult r;
  r.count = counts.sum().item<int64_t>();
  r.loss = r.count ? loss_sum / r.count : 0;
  r.accuracy = r.count ? static_cast<double>(correct.sum().item<int64_t>()) / r.count : 0;
  r.correct_per_class.assign(correct.data_ptr<int64_t>(), correct.data_ptr<int64_t>() + classes);
  r.count_per_class.assign(counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + classes);
  return r;
}

}  // namespace shrink
