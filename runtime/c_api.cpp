#include "shrink_runtime.h"

#include <cstring>
#include <string>
#include <vector>

#include "shrink/runtime.hpp"

struct shrink_model {
  shrink::rt::Model model;
  std::vector<std::string> class_names;  // kept so the C strings stay valid
  shrink::rt::Model::Preprocessing preprocessing;
};

namespace {
thread_local std::string last_error;

template <class Fn>
int guarded(Fn fn) {
  try {
    fn();
    last_error.clear();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
    return 1;
  }
}
}  // namespace

extern "C" {

int shrink_model_load(const char* path, int threads, shrink_model** out) {
  if (!path || !out) return last_error = "shrink_model_load: null argument", 1;
  *out = nullptr;  // what a failed load leaves
  return guarded([&] {
    auto model = shrink::rt::Model::load(path, threads);
    *out = new shrink_model{model, model.class_names(), model.preprocessing()};
  });
}

int shrink_model_predict(shrink_model* m, const float* input, int64_t batch, float* output) {
  if (!m || !input || !output) return last_error = "shrink_model_predict: null argument", 1;
  return guarded([&] {
    auto logits = m->model.predict(input, batch);
    std::memcpy(output, logits.data(), logits.size() * sizeof(float));
  });
}

// The queries of a null model (a failed load's) answer 0 or NULL, as for a model without the thing.
int64_t shrink_model_input_size(const shrink_model* m) {
  if (!m) return 0;
  int64_t n = 1;
  for (int64_t d : m->model.input_shape()) n *= d;
  return n;
}

int64_t shrink_model_classes(const shrink_model* m) { return m ? m->model.classes() : 0; }

const char* shrink_model_class_name(const shrink_model* m, int64_t index) {
  if (!m || index < 0 || index >= static_cast<int64_t>(m->class_names.size())) return nullptr;
  return m->class_names[index].c_str();
}

int shrink_model_image_input(const shrink_model* m) { return m && m->preprocessing.image_input ? 1 : 0; }

int64_t shrink_model_normalization(const shrink_model* m, float* mean, float* std, int64_t capacity) {
  if (!m) return 0;
  if (!mean || !std) capacity = 0;
  const auto& p = m->preprocessing;
  for (int64_t c = 0; c < capacity && c < static_cast<int64_t>(p.mean.size()); ++c) mean[c] = p.mean[c], std[c] = p.std[c];
  return static_cast<int64_t>(p.mean.size());
}

void shrink_model_free(shrink_model* m) { delete m; }

const char* shrink_last_error(void) { return last_error.c_str(); }

}  // extern "C"
