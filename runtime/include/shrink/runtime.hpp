// shrink runtime, C++ API: load a .shrink model file and run it on oneDNN. No LibTorch.
//
//   auto m = shrink::rt::Model::load("student.shrink");
//   std::vector<float> logits = m.predict(images.data(), batch);  // [batch, classes]
//
// Thread safety: a Model may be shared between threads; predict() calls on one Model run one at
// a time (its primitives share buffers). For parallel inference, load one Model per thread.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#define SHRINK_RT_API __attribute__((visibility("default")))

namespace shrink::rt {

// A model file that is missing, truncated, corrupt, of a newer version, or describes a model the
// runtime cannot run; or an input of the wrong size. The message is one line naming the problem.
struct SHRINK_RT_API Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class SHRINK_RT_API Model {
 public:
  // threads: oneDNN threads (0: all cores).
  static Model load(const std::string& path, int threads = 0);
  // Logits for `batch` examples, each input_shape() floats in C,H,W order, raw values (the
  // model's normalization is applied here).
  std::vector<float> predict(const float* input, int64_t batch) const;
  // The same as class probabilities (softmax over the logits).
  std::vector<float> probabilities(const float* input, int64_t batch) const;
  std::vector<int64_t> input_shape() const;
  int64_t classes() const;
  std::string precision() const;      // "fp32" or "int8"
  std::string metadata_json() const;  // the file's metadata
  uint64_t file_bytes() const;

 private:
  std::vector<float> run(const float* input, int64_t batch, bool softmax) const;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace shrink::rt
