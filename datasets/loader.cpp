#include "datasets/loader.h"

#include <fmt/format.h>

#include <numeric>

#include "common/error.h"

namespace shrink {

namespace {

// `x` in channels-last strides. contiguous(ChannelsLast) leaves a one-channel batch in NCHW
// strides (the same bytes, so it counts as contiguous either way), and LibTorch's convolution then
// writes its output NCHW: every layer after a grayscale model's first conv ran in NCHW, the next
// conv converting its input back (in bf16 the batchnorms and ReLUs took their slow paths too).
torch::Tensor channels_last_strides(const torch::Tensor& x) {
  if (x.size(1) != 1) return x.contiguous(torch::MemoryFormat::ChannelsLast);
  return torch::empty(x.sizes(), x.options().memory_format(torch::MemoryFormat::ChannelsLast)).copy_(x);
}

}  // namespace

torch::Tensor random_shift(const torch::Tensor& x, int64_t pad, at::Generator& gen, int64_t first, int64_t total) {
  if (pad <= 0) return x;
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3), choices = 2 * pad + 1;
  auto padded = torch::constant_pad_nd(x, {pad, pad, pad, pad}, 0);
  // One offset per example; examples sharing an offset are cropped together, so the work is
  // (2*pad+1)^2 batched copies instead of one slice per example.
  auto offset = torch::randint(0, choices * choices, {total < 0 ? n : total}, gen, torch::kInt64).narrow(0, first, n).contiguous();
  auto out = torch::empty_like(x, torch::MemoryFormat::Contiguous);
  auto counts = torch::bincount(offset, {}, choices * choices);
  auto order = offset.argsort();
  const int64_t* c = counts.data_ptr<int64_t>();
  int64_t start = 0;
  for (int64_t k = 0; k < choices * choices; ++k) {
    if (c[k] == 0) continue;
    auto idx = order.narrow(0, start, c[k]);
    start += c[k];
    out.index_copy_(0, idx, padded.index_select(0, idx).narrow(2, k / choices, h).narrow(3, k % choices, w));
  }
  return out;
}

torch::Tensor random_hflip(const torch::Tensor& x, at::Generator& gen, int64_t first, int64_t total) {
  auto flip = (torch::rand({total < 0 ? x.size(0) : total}, gen) < 0.5).narrow(0, first, x.size(0));
  auto idx = flip.nonzero().flatten();
  if (idx.numel() == 0) return x;
  auto out = x.clone();
  out.index_copy_(0, idx, x.index_select(0, idx).flip({3}));
  return out;
}

torch::Tensor normalize(const torch::Tensor& x, const std::vector<float>& mean, const std::vector<float>& std) {
  if (mean.empty()) return x;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = static_cast<int64_t>(mean.size());
  auto m = torch::tensor(mean).view(shape), s = torch::tensor(std).view(shape);
  return (x - m) / s;
}

void for_each_batch(std::shared_ptr<const Source> source, int64_t batch_size, const Augment& normalization,
                    const std::function<void(const Batch&)>& fn, int64_t max_batches, std::optional<uint64_t> shuffle_seed) {
  LoaderOptions o;
  o.batch_size = batch_size;
  o.shuffle = shuffle_seed.has_value();
  o.seed = shuffle_seed.value_or(0);
  o.train = false;
  o.prefetch = 0;
  o.augment = normalization;
  Loader loader(std::move(source), o);
  loader.start_epoch(0);
  Batch b;
  for (int64_t k = 0; (max_batches < 0 || k < max_batches) && loader.next(b); ++k) fn(b);
}

Loader::Loader(std::shared_ptr<const Source> source, LoaderOptions options) : source_(std::move(source)), options_(std::move(options)) {
  if (options_.batch_size < 1) throw UserError("train.batch_size must be at least 1");
  if (options_.drop_last && source_->size() < options_.batch_size)
    throw UserError(fmt::format("{} has {} examples, fewer than one batch of {} (drop_last is set)", source_->describe(), source_->size(),
                                options_.batch_size));
}

Loader::~Loader() { stop(); }

int64_t Loader::batches_per_epoch() const {
  int64_t n = source_->size(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void Loader::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  ready_.clear();
  stopping_ = false;
  done_ = false;
  error_ = nullptr;
}

void Loader::start_epoch(int64_t epoch, int64_t first_batch) {
  stop();
  epoch_ = epoch;
  next_batch_ = first_batch;
  const int64_t n = source_->size();
  order_.resize(n);
  if (options_.shuffle) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>(options_.seed * 1000003 + epoch);
    auto perm = torch::randperm(n, gen, torch::kInt64);
    std::copy(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + n, order_.begin());
  } else {
    std::iota(order_.begin(), order_.end(), 0);
  }
  if (options_.prefetch <= 0) return;
  worker_ = std::thread([this, first_batch] {
    try {
      for (int64_t b = first_batch; b < batches_per_epoch(); ++b) {
        Batch batch = make_batch(b);
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || static_cast<int>(ready_.size()) < options_.prefetch; });
        if (stopping_) return;
        ready_.push_back(std::move(batch));
        cv_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    done_ = true;
    cv_.notify_all();
  });
}

bool Loader::next(Batch& batch) {
  if (options_.prefetch <= 0) {
    if (next_batch_ >= batches_per_epoch()) return false;
    batch = make_batch(next_batch_++);
    return true;
  }
  std::unique_lock<std::mutex> lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || done_; });
  if (!ready_.empty()) {
    batch = std::move(ready_.front());
    ready_.pop_front();
    cv_.notify_all();
    return true;
  }
  if (error_) std::rethrow_exception(error_);
  return false;
}

Batch Loader::make_batch(int64_t b) const {
  const int64_t batch_start = b * options_.batch_size, global = std::min(options_.batch_size, source_->size() - batch_start);
  // This worker's rows of the batch (all of it on one worker). A batch with fewer examples than
  // workers (a short last batch) goes whole to each, counted once per worker, so that each takes a
  // 1/shards share of its loss and none runs an empty step; the first alone counts it in the metrics.
  const bool whole = global < options_.shards;
  const int64_t first = whole ? 0 : global * options_.shard / options_.shards, start = batch_start + first,
                count = whole ? global : global * (options_.shard + 1) / options_.shards - first;
  Batch batch;
  batch.global_size = whole ? global * options_.shards : global;
  batch.counted = !whole || options_.shard == 0;
  if (options_.shuffle) {
    std::vector<int64_t> idx(order_.begin() + start, order_.begin() + start + count);
    source_->read(idx, batch.x, batch.y);
    batch.index = torch::tensor(idx, torch::kInt64);
  } else {
    source_->read_range(start, count, batch.x, batch.y);
    batch.index = torch::arange(start, start + count, torch::kInt64);
  }
  const Augment& a = options_.augment;
  if (options_.train && (a.shift > 0 || a.hflip)) {
    auto gen = at::make_generator<at::CPUGeneratorImpl>((options_.seed * 1000003 + epoch_) * 100003 + b);
    if (a.shift > 0) batch.x = random_shift(batch.x, a.shift, gen, first, global);
    if (a.hflip) batch.x = random_hflip(batch.x, gen, first, global);
  }
  batch.x = normalize(batch.x, a.mean, a.std);
  if (a.channels_last && batch.x.dim() == 4) batch.x = channels_last_strides(batch.x);
  else batch.x = batch.x.contiguous();
  if (options_.train && options_.ahead) options_.ahead(batch);
  return batch;
}

}  // namespace shrink
