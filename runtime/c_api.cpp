#include "shrink_runtime.h"

#include <cstring>
#include <string>

#include "shrink/runtime.hpp"

struct shrink_model {
  shrink::rt::Model model;
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
  return guarded([&] { *out = new shrink_model{shrink::rt::Model::load(path, threads)}; });
}

int shrink_model_predict(shrink_model* m, const float* input, int64_t batch, float* output) {
  if (!m || !input || !output) return last_error = "shrink_model_predict: null argument", 1;
  return guarded([&] {
    auto logits = m->model.predict(input, batch);
    std::memcpy(output, logits.data(), logits.size() * sizeof(float));
  });
}

int64_t shrink_model_input_size(const shrink_model* m) {
  int64_t n = 1;
  for (int64_t d : m->model.input_shape()) n *= d;
  return n;
}

int64_t shrink_model_classes(const shrink_model* m) { return m->model.classes(); }

void shrink_model_free(shrink_model* m) { delete m; }

const char* shrink_last_error(void) { return last_error.c_str(); }

}  // extern "C"
