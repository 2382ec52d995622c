// Batches from a Source: shuffled per epoch from the seed, augmented as whole-batch tensor ops,
// prepared on a background thread while the model trains on the previous batch.
// Everything random is derived from (seed, epoch, batch), so a resumed run sees the same batches.
#pragma once
#include <torch/torch.h>

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <optional>
#include <memory>
#include <mutex>
#include <thread>

#include "datasets/source.h"

namespace shrink {

struct Augment {
  int64_t shift = 0;         // random shift up to this many pixels, zero fill (pad + random crop)
  bool hflip = false;        // random horizontal flip
  std::vector<float> mean, std;  // per-channel normalization; empty = none
  bool channels_last = false;    // return batches in NHWC memory format
};

// Whole-batch transforms (also used directly by tests). x may be rows [first, first + x.size(0))
// of a batch of `total` examples (-1: x is the whole batch): the draws are made for all `total`, so
// an example is shifted and flipped the same whichever worker's shard of the batch holds it.
torch::Tensor random_shift(const torch::Tensor& x, int64_t pad, at::Generator& gen, int64_t first = 0, int64_t total = -1);
torch::Tensor random_hflip(const torch::Tensor& x, at::Generator& gen, int64_t first = 0, int64_t total = -1);
torch::Tensor normalize(const torch::Tensor& x, const std::vector<float>& mean, const std::vector<float>& std);

struct Batch {
  torch::Tensor x, y;
  torch::Tensor index;  // int64: which examples of the source these are (for per-example caches)
  torch::Tensor soft_targets;  // a frozen teacher's logits, when LoaderOptions::ahead computed them
  std::map<std::string, torch::Tensor> teacher_features;  // and its layers' outputs the feature losses read
  int64_t global_size = 0;     // examples in the whole batch, over every shard (data parallel)
  bool counted = true;         // in the epoch's train loss and accuracy: a short last batch every worker runs whole counts on one
};

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int prefetch = 2;  // batches prepared ahead; 0 = prepare on the calling thread
  Augment augment;
  bool train = true;  // random augmentation on (normalization always applies)
  // Data parallel: each batch (batch_size examples of the epoch's permutation) is split over
  // `shards` workers and this loader yields rows [size*shard/shards, size*(shard+1)/shards) of it.
  int shard = 0, shards = 1;
  // Run on each training batch once it is made, on the prefetch thread when there is one: a frozen
  // teacher's forward of batch k+1 while the model trains on batch k, on the same augmented inputs.
  std::function<void(Batch&)> ahead;
};

class Loader {
 public:
  Loader(std::shared_ptr<const Source> source, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;
  int64_t batches_per_epoch() const;
  int64_t size() const { return source_->size(); }
  // Starts an epoch; `first_batch` > 0 skips batches already seen (resuming mid-epoch).
  void start_epoch(int64_t epoch, int64_t first_batch = 0);
  // The next batch of this epoch; false at its end.
  bool next(Batch& batch);

 private:
  Batch make_batch(int64_t b) const;
  void stop();
  std::shared_ptr<const Source> source_;
  LoaderOptions options_;
  int64_t epoch_ = 0, next_batch_ = 0;
  std::vector<int64_t> order_;
  // Prefetching
  std::thread worker_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  bool stopping_ = false, done_ = false;
};

// Calls fn(batch) for every batch of `source` (at most max_batches; -1: all), normalized,
// without augmentation or a prefetch thread, in order, or shuffled from `shuffle_seed`: how
// evaluation, caching and calibration read data.
void for_each_batch(std::shared_ptr<const Source> source, int64_t batch_size, const Augment& normalization,
                    const std::function<void(const Batch&)>& fn, int64_t max_batches = -1,
                    std::optional<uint64_t> shuffle_seed = std::nullopt);

}  // namespace shrink
