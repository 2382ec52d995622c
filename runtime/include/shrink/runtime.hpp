// shrink runtime, C++ API: load a .shrink model file and run it on oneDNN. No LibTorch.
//
//   auto m = shrink::rt::Model::load("student.shrink");
//   std::vector<float> logits = m.predict(images.data(), batch);  // [batch, classes]
//
// Thread safety: a Model may be shared between threads, and predict()/probabilities() calls on
// one Model run in parallel: the compiled plans (oneDNN primitives and packed weights) are
// immutable and shared, each call has its own activations, scratchpad and stream (the oneDNN
// objects over them are kept by the plan and lent to one call at a time), and a lock is held only
// to look up or insert a plan or to borrow those objects. Copies of a Model share one loaded model.
//
// Threads: `threads` at load is how many OpenMP threads each call uses at most (0: all cores);
// a call whose layers are too small to gain from threads (a small model, or one of many small
// layers such as a MobileNet, at batch 1) runs on one (threads_at). A call of at least one example
// per thread, with enough work per thread, is cut into passes that the threads run side by side,
// each pass on one thread (batch_per_pass). Every call sets its count for
// its own thread (oneDNN reads the calling thread's omp_get_max_threads) and restores the
// caller's value afterwards. A server running N calls at once on C cores should load with
// threads = max(1, C / N); the default suits one call at a time.
//
// Memory: the file is mapped read-only, not copied (do not truncate or rewrite it in place while
// loaded; replacing it by rename is safe). Weights are used in place, or packed once per layout
// oneDNN asks for and shared by every batch size. Plans are compiled per batch size and the 8
// most recently used are kept. Each call's activations come from its thread's working memory,
// kept between calls up to 1 GiB (a thread holds the largest it needed until it exits). A batch
// whose activations would outgrow twice the threads' L2 caches runs in passes of fewer examples
// (batch_per_pass), which also bounds that memory (per thread, for passes run side by side: the
// OpenMP threads that run them keep their working memory as a calling thread does).
#pragma once
#include <cstddef>
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

// How an int8 model's convs and linears sum on a CPU without VNNI (docs/quantization.md): `exact`,
// on floats, at about an fp32 model's speed; `fast`, oneDNN's int8 kernels, whose u8 x s8 pair sums
// saturate and which halve an s8 input's weights there: wrong sums, for a caller that measures
// what that costs it (a distillation teacher checks its agreement with the fp32 one). With VNNI
// both are oneDNN's int8 kernels, exact.
enum class Int8Sums { exact, fast };

class SHRINK_RT_API Model {
 public:
  // Loads and validates the whole model (metadata, spec, every tensor's dtype and shape, scales,
  // the size limits of docs/format.md) and compiles it for batch 1; any problem is an Error.
  // threads: OpenMP threads per call (0: all cores; at most 1024).
  static Model load(const std::string& path, int threads = 0, Int8Sums sums = Int8Sums::exact);
  // The same from a model file's bytes in memory (copied; `name` is used in messages).
  static Model from_memory(const void* data, size_t size, int threads = 0, const std::string& name = "<memory>", Int8Sums sums = Int8Sums::exact);
  // Logits for `batch` examples, each input_shape() floats in C,H,W order, raw values (the
  // model's normalization is applied here). Safe to call from several threads at once. A batch
  // whose working memory would exceed 8 GiB, or that oneDNN cannot compile, is an Error.
  std::vector<float> predict(const float* input, int64_t batch) const;
  // The layers whose outputs predict() can also return: those the compiled model forms, by the
  // file's layer names. A layer whose activation runs fused into it forms none (the pair's output
  // is the activation's, under the activation's name). (A batchnorm the exporter folded is not in
  // the file: its conv, under the conv's name, gives their output.)
  std::vector<std::string> outputs() const;
  std::vector<int64_t> output_shape(const std::string& name) const;  // C,H,W or F, for one example
  // Logits, as predict(), and in `values` the outputs of the layers `names` (each one of
  // outputs()): per name, batch x output_shape floats in N,C,H,W order, dequantized in an int8
  // model. A name the model does not form is an Error.
  std::vector<float> predict(const float* input, int64_t batch, const std::vector<std::string>& names,
                             std::vector<std::vector<float>>& values) const;
  // The same as class probabilities (softmax over the logits).
  std::vector<float> probabilities(const float* input, int64_t batch) const;
  // Where predict's time goes: each oneDNN primitive the model runs for `batch` in one pass (the
  // layer it computes, with the activation fused into it, and the primitive's kind), and its
  // median time over `runs` calls on `input`, each primitive waited for before the next starts.
  // (A predict() of `batch` may run as several passes instead: batch_per_pass.)
  struct StepTime {
    std::string what;
    double microseconds;
    int threads;  // the OpenMP threads it ran on
  };
  std::vector<StepTime> profile(const float* input, int64_t batch, int runs) const;
  std::vector<int64_t> input_shape() const;
  int64_t classes() const;
  std::vector<std::string> class_names() const;  // empty when the file names none
  // How the model's inputs were made when it was trained, as the file records it. predict()
  // applies the normalization itself; an application turns an image into input by decoding it,
  // converting it to input_shape()[0] channels (1: grayscale, 3: RGB), resizing it to the
  // input's H,W (bilinear, as Pillow) and dividing by 255 (shrink-run does, for PNG and JPEG).
  struct Preprocessing {
    bool image_input = false;      // trained on 8-bit images scaled to [0,1]
    std::vector<float> mean, std;  // per channel; empty: none
  };
  Preprocessing preprocessing() const;
  std::string precision() const;      // "fp32" or "int8"
  std::string metadata_json() const;  // the file's metadata
  uint64_t file_bytes() const;
  int threads() const;                // the most OpenMP threads a call uses
  // The OpenMP threads a call of `batch` runs on: threads(), or 1 when its layers are too small
  // to gain from more (compiles the plan it runs, as its first call would).
  int threads_at(int64_t batch) const;
  // How many examples one pass of the compiled model takes when a call predicts `batch`: all, or
  // fewer where the call is spread over the threads (a pass per thread, or several where a pass's
  // activations would outgrow one core's caches) or where a pass on all threads would outgrow
  // theirs (passes one after the other). The logits are the same. Calls that keep layer outputs
  // run in one pass.
  int64_t batch_per_pass(int64_t batch) const;

 private:
  std::vector<float> run(const float* input, int64_t batch, bool softmax, const std::vector<std::string>& kept = {},
                         std::vector<std::vector<float>>* kept_values = nullptr) const;
  Model() = default;  // only load() and from_memory() make one
  struct Impl;
  Impl& impl() const;           // an Error for a moved-from Model
  std::shared_ptr<Impl> impl_;  // shared by copies; never changed after load but for the plan cache
};

}  // namespace shrink::rt
