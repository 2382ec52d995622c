// The runtime's executor: a loaded model (runtime/loaded.h) compiled once per batch size into an
// immutable Plan (runtime/plan.h, the ops in runtime/ops/), and run. Activations are NHWC
// (images) or NC (features); in int8 models they are u8/s8 with the scales of docs/quantization.md.
//
// Sharing and memory (runtime.hpp says what callers may rely on):
// - Model::load validates the whole model once (metadata, spec, every tensor, the caps of
//   docs/format.md: validate.cpp) and compiles the plan for batch 1, so a model that loads runs.
// - Weights are read in place from the mapped file; a packed copy is made only where oneDNN
//   wants another layout, once per (tensor, layout) and shared by every plan that uses it.
// - Plans hold primitives and constants only. Each predict() has its own activations and
//   scratchpad (every primitive is built with scratchpad_mode::user), and borrows from the plan a
//   binding of oneDNN objects over them (plan.h: Binding), so calls on one Model run in parallel;
//   mutexes guard only the plan cache, an LRU of kPlanCacheSize, and each plan's idle bindings.
// - A plan runs on all the model's threads, or on one when its forward is small (plan.cpp:
//   choose_threads): at batch 1 a small model's layers are shorter than a parallel region. A
//   large enough batch runs as passes side by side, each on one thread (call_shape).
#include <fmt/format.h>
#include <omp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <functional>
#include <numeric>
#include <thread>
#include <utility>

#include "runtime/loaded.h"
#include "runtime/ops/weighted.h"

namespace shrink::rt {
namespace detail {
namespace {

constexpr int kMostThreads = 1024;                     // per call (OpenMP's own limits are not errors, but crashes)
constexpr size_t kPlanCacheSize = 8;                    // compiled plans kept (a batch size, and the outputs kept; docs/format.md)
constexpr uint64_t kMaxCallBytes = uint64_t(8) << 30;  // activations + scratchpad of one predict()
// Weights packed into oneDNN's layouts. Padding can make them far larger than the file's: a
// grouped conv of one input and two output channels per group is padded to 16 x 16 per group.
constexpr uint64_t kMaxPackedBytes = uint64_t(8) << 30;

// Aligned memory freed on scope exit (constants made at build time).
struct Arena {
  uint8_t* base = nullptr;
  explicit Arena(uint64_t bytes) {
    base = static_cast<uint8_t*>(std::aligned_alloc(kAlign, align_up(std::max<uint64_t>(bytes, 1))));
    if (!base) throw std::bad_alloc();
  }
  ~Arena() { std::free(base); }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
};

// A call's working memory (activations and scratchpad). Mapped directly rather than malloc'd:
// freeing large malloc'd blocks raises glibc's mmap threshold, after which oneDNN's JIT code
// buffers come from dirty heap pages (RSS grew ~5x under random batch sizes). Each thread keeps
// its last working memory up to kKeepCallBytes for its next call, so a steady stream of calls
// neither maps nor faults pages in. The limit is high: mapping afresh costs a page fault and a
// zeroed page per 4 KiB on every call, which made the MobileNetV2-class Fashion student's fp32
// batch 256 (100 MiB of activations) spend more time faulting than computing when it was 64 MiB.
constexpr uint64_t kKeepCallBytes = uint64_t(1) << 30;

struct Mapped {
  uint8_t* base = nullptr;
  uint64_t size = 0;
  Mapped() = default;
  explicit Mapped(uint64_t bytes) : size(bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    base = static_cast<uint8_t*>(p);
  }
  ~Mapped() {
    if (base) ::munmap(base, size);
  }
  Mapped(Mapped&& o) noexcept : base(std::exchange(o.base, nullptr)), size(std::exchange(o.size, 0)) {}
  Mapped& operator=(Mapped&& o) noexcept {
    std::swap(base, o.base), std::swap(size, o.size);
    return *this;
  }
};

thread_local Mapped t_kept;  // this thread's working memory between calls
thread_local bool t_kept_in_use = false;

class CallMemory {
 public:
  explicit CallMemory(uint64_t bytes) {
    bytes = std::max<uint64_t>((bytes + 4095) / 4096 * 4096, 4096);
    if (t_kept_in_use || bytes > kKeepCallBytes) {
      own_ = Mapped(bytes);
      base_ = own_.base;
      return;
    }
    if (t_kept.size < bytes) t_kept = Mapped(bytes);
    t_kept_in_use = kept_ = true;
    base_ = t_kept.base;
  }
  ~CallMemory() {
    if (kept_) t_kept_in_use = false;
  }
  CallMemory(const CallMemory&) = delete;
  CallMemory& operator=(const CallMemory&) = delete;
  uint8_t* base() const { return base_; }

 private:
  Mapped own_;
  uint8_t* base_ = nullptr;
  bool kept_ = false;
};

// A binding of `plan` over the working memory at `base`, lent for one call: an idle one of the
// plan's (re-pointed when it viewed other memory) or a new one; given back to the plan at the end.
class LentBinding {
 public:
  LentBinding(const Plan& plan, const dnnl::engine& engine, uint8_t* base) : pool_(*plan.bindings) {
    {
      std::lock_guard<std::mutex> lock(pool_.mutex);
      if (!pool_.idle.empty()) b_ = std::move(pool_.idle.back()), pool_.idle.pop_back();
    }
    if (!b_)
      b_ = make(plan, engine, base);
    else if (b_->base != base)
      repoint(plan, base);
  }
  ~LentBinding() {
    std::lock_guard<std::mutex> lock(pool_.mutex);
    pool_.idle.push_back(std::move(b_));
  }
  LentBinding(const LentBinding&) = delete;
  LentBinding& operator=(const LentBinding&) = delete;
  Binding& operator*() const { return *b_; }
  Binding* operator->() const { return b_.get(); }

 private:
  static std::unique_ptr<Binding> make(const Plan& plan, const dnnl::engine& engine, uint8_t* base) {
    auto b = std::make_unique<Binding>();
    b->base = base;
    b->stream = dnnl::stream(engine);
    for (const Slot& s : plan.slots) b->slots.emplace_back(s.desc, engine, base + plan.offsets[s.buffer]);
    auto bind = [&](const Step& step) {
      std::vector<dnnl_exec_arg_t> args;
      for (const Arg& a : step.args) args.push_back({a.id, (a.slot >= 0 ? b->slots[a.slot] : a.constant).get()});
      memory scratchpad;
      if (step.scratchpad.get_size()) {
        scratchpad = memory(step.scratchpad, engine, base + plan.arena_bytes);
        args.push_back({DNNL_ARG_SCRATCHPAD, scratchpad.get()});
      }
      b->scratchpads.push_back(scratchpad);
      b->args.push_back(std::move(args));
    };
    for (const Step& step : plan.steps) bind(step);
    bind(plan.softmax);
    return b;
  }
  void repoint(const Plan& plan, uint8_t* base) {
    for (size_t i = 0; i < plan.slots.size(); ++i) b_->slots[i].set_data_handle(base + plan.offsets[plan.slots[i].buffer]);
    for (memory& m : b_->scratchpads)
      if (m) m.set_data_handle(base + plan.arena_bytes);
    b_->base = base;
  }

  BindingPool& pool_;
  std::unique_ptr<Binding> b_;
};

}  // namespace

memory Loaded::constant(const std::string& key, const Tensor& t, const memory::desc& user, const memory::desc& want) const {
  if (static_cast<size_t>(user.get_size()) != t.bytes.size()) fail("tensor " + key + " does not match its layer's size");
  auto& layouts = packed[key];
  for (const auto& [d, m] : layouts)
    if (d == want) return m;
  memory src(user, engine, const_cast<uint8_t*>(t.bytes.data()));  // oneDNN only reads it
  if (want == user) {
    in_place.insert(key);
    layouts.emplace_back(want, src);
    return src;
  }
  packed_bytes += want.get_size();
  if (packed_bytes > kMaxPackedBytes)
    fail(fmt::format("its weights in oneDNN's layouts need over {} MiB (layer tensor {} padded to {} MiB), more than the runtime's limit of {} MiB",
                     packed_bytes >> 20, key, want.get_size() >> 20, kMaxPackedBytes >> 20));
  memory dst(want, engine);
  dnnl::reorder::primitive_desc pd(engine, user, engine, want, user_scratchpad());
  Arena scratch(pd.scratchpad_desc().get_size());
  dnnl::stream stream(engine);
  dnnl::reorder(pd).execute(stream, {{DNNL_ARG_FROM, src}, {DNNL_ARG_TO, dst}, {DNNL_ARG_SCRATCHPAD, memory(pd.scratchpad_desc(), engine, scratch.base)}});
  stream.wait();
  if (!in_place.count(key)) release_pages(file, t.bytes.data(), t.bytes.size());  // packed: the file's copy can go
  layouts.emplace_back(want, dst);
  return dst;
}

memory Loaded::derived(const std::string& key, const memory::desc& d, const std::function<void(float*)>& fill) const {
  auto& layouts = packed[key];
  if (!layouts.empty()) return layouts.front().second;
  memory m(d, engine);
  fill(static_cast<float*>(m.get_data_handle()));
  layouts.emplace_back(d, m);
  return m;
}

Plan Loaded::build(int64_t n, const std::vector<std::string>& kept, bool one_thread) const {
  Builder b(*this, n, kept, one_thread);
  try {
    b.build();
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("{}: oneDNN cannot run layer {} for batch {}: {}", path, b.building, n, e.what()));
  }
  if (b.plan.arena_bytes + b.plan.scratchpad_bytes > kMaxCallBytes)
    throw Error(fmt::format("{}: predict: batch {} needs {} MiB of working memory, more than the runtime's limit of {} MiB; split the batch", path, n,
                            (b.plan.arena_bytes + b.plan.scratchpad_bytes) >> 20, kMaxCallBytes >> 20));
  return std::move(b.plan);
}

std::shared_ptr<const Plan> Loaded::plan_for(int64_t batch, const std::vector<std::string>& kept, bool one_thread) const {
  auto lookup = [&]() -> std::shared_ptr<const Plan> {
    std::lock_guard<std::mutex> lock(cache_mutex);
    for (auto it = plans.begin(); it != plans.end(); ++it)
      if ((*it)->batch == batch && (*it)->kept == kept && (*it)->one_thread == one_thread) {
        plans.splice(plans.begin(), plans, it);  // most recently used first
        return plans.front();
      }
    return nullptr;
  };
  if (auto plan = lookup()) return plan;
  // Refuse absurd batches before compiling anything (activations alone would exceed the limit).
  if (static_cast<uint64_t>(batch) > kMaxCallBytes / std::max<uint64_t>(activation_bytes, 1))
    throw Error(fmt::format("{}: predict: batch {} needs more than the runtime's limit of {} MiB of working memory; split the batch", path, batch,
                            kMaxCallBytes >> 20));
  std::lock_guard<std::mutex> building(build_mutex);
  if (auto plan = lookup()) return plan;  // another thread built it meanwhile
  std::shared_ptr<const Plan> plan;
  try {
    plan = std::make_shared<const Plan>(build(batch, kept, one_thread));
  } catch (const dnnl::error& e) {
    throw Error(fmt::format("{}: oneDNN cannot run this model for batch {}: {}", path, batch, e.what()));
  } catch (const std::bad_alloc&) {
    throw Error(fmt::format("{}: out of memory compiling the model for batch {}", path, batch));
  }
  std::lock_guard<std::mutex> lock(cache_mutex);
  plans.push_front(plan);
  if (plans.size() > kPlanCacheSize) plans.pop_back();  // calls still running it keep their reference
  return plan;
}

// A batch whose activations outgrow the caches runs in passes of a power of two that keep each
// pass's working memory within twice the L2 cache of the threads it runs on: oneDNN runs layer by
// layer, so a batch of 256 through the MobileNetV2-class Fashion student (368 KB of fp32
// activations per example, 96 MB in all) reread every layer's input from DRAM. Measured on the
// 2-core EPYC (1 MB of L2 per core): fp32 9,400 examples/s at batch 256 against 14,100 in passes
// of 8 (3 MB), int8 26,900 against 31,000 in passes of 32 to 64; the USPS models, whose batch of
// 256 fits, ran alike at any size. A pass never gets so small that its plan would give up threads.
int64_t Loaded::batch_per_pass(int64_t batch) const {
  // Checked first: a call pays one comparison for a batch that fits. An absurd batch is not split
  // either: plan_for refuses it.
  if (static_cast<uint64_t>(batch) <= pass_budget / arena_per_example ||
      static_cast<uint64_t>(batch) > kMaxCallBytes / std::max<uint64_t>(activation_bytes, 1))
    return batch;
  int64_t pass = 1;
  while (static_cast<uint64_t>(pass) * 2 * arena_per_example <= pass_budget) pass *= 2;
  while (pass < batch && plan_for(pass)->threads < threads) pass *= 2;
  return std::min(pass, batch);
}

// A batch of at least one example per thread, whose share per thread carries enough work to
// repay a parallel region, runs as passes spread over the threads, each on one thread with a plan
// built for one: no layer waits for its slowest thread, and no pass reads what another core
// wrote. Measured on the 2-core EPYC against the same batch run on both threads layer by layer
// (throughput, 2 threads, batches 2 to 256): the USPS teacher 1.07-1.21x (int8 and fp32), its
// student 1.3-1.9x at batches 8 and 32 (int8 and fp32), 1.0-1.08x at 256, the Fashion
// MobileNetV2-class student 1.17-1.62x int8 and 1.06-1.85x fp32. There are as many passes as
// threads, or a multiple of that where one core's share of the caches holds fewer examples (but
// no more than the examples), and their sizes differ by one example at most.
// Only a model whose example fits in one core's share is spread: each thread keeps its own
// working memory, so a larger one (an ImageNet-sized input) would take `threads` times the
// memory of a pass run on all threads, and was not measured.
Loaded::CallShape Loaded::call_shape(int64_t batch) const {
  const bool absurd = static_cast<uint64_t>(batch) > kMaxCallBytes / std::max<uint64_t>(activation_bytes, 1);  // plan_for refuses it
  const int64_t fits = static_cast<int64_t>(pass_budget / static_cast<uint64_t>(threads) / arena_per_example);  // one core's share
  if (threads > 1 && batch >= threads && !absurd && fits >= 1 &&
      static_cast<double>(batch / threads) * work_per_example >= kParallelWorkPerStep) {
    const int64_t passes = std::min(batch, threads * ceil_div(batch, threads * fits));  // none empty
    return {ceil_div(batch, passes), passes, true};
  }
  const int64_t pass = batch_per_pass(batch);
  return {pass, ceil_div(batch, pass), false};
}

std::vector<float> Loaded::run_passes(const float* input, int64_t batch, bool softmax, CallShape shape) const {
  auto first = [&](int64_t k) { return shape.spread ? k * batch / shape.passes : std::min(k * shape.pass, batch); };
  // Two pass sizes at most, the first pass's and the last's (spread: the quotient and one more;
  // else `pass` and the rest): their plans are built once, here, rather than by the threads.
  const auto head = plan_for(first(1), {}, shape.spread), tail = plan_for(batch - first(shape.passes - 1), {}, shape.spread);
  const int64_t per_example = std::accumulate(spec.input.begin(), spec.input.end(), int64_t(1), std::multiplies<int64_t>());
  std::vector<float> out(static_cast<size_t>(batch * spec.classes));
  auto run_pass = [&](int64_t k) {
    const int64_t n = first(k + 1) - first(k);
    auto part = execute(n == head->batch ? *head : *tail, input + first(k) * per_example, softmax);
    std::copy(part.begin(), part.end(), out.begin() + first(k) * spec.classes);
  };
  if (!shape.spread) {
    for (int64_t k = 0; k < shape.passes; ++k) run_pass(k);
    return out;
  }
  std::exception_ptr failed;  // an exception must not leave a parallel region
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t k = 0; k < shape.passes; ++k) {
    try {
      run_pass(k);
    } catch (...) {
#pragma omp critical(shrink_failed_pass)
      failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
  return out;
}

std::vector<float> Loaded::execute(const Plan& plan, const float* input, bool softmax, std::vector<double>* step_seconds,
                                   std::vector<std::vector<float>>* kept_values) const {
  const int64_t batch = plan.batch;
  omp_set_num_threads(plan.threads);  // the caller's ThreadScope restores its own count
  CallMemory arena(plan.arena_bytes + plan.scratchpad_bytes);
  LentBinding bound(plan, engine, arena.base());
  write_input(input, batch, plan.slots[plan.input].desc.data_type(), bound->slots[plan.input].get_data_handle());
  auto run = [&](const Step& step, size_t k) {
    if (step.kernel) return step.kernel(bound->slots);
    const auto& args = bound->args[k];
    dnnl::error::wrap_c_api(dnnl_primitive_execute(step.prim.get(), bound->stream.get(), static_cast<int>(args.size()), args.data()),
                            "could not execute a primitive");
  };
  for (size_t k = 0; k < plan.steps.size(); ++k) {
    if (!step_seconds) {
      run(plan.steps[k], k);
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    run(plan.steps[k], k);
    bound->stream.wait();
    (*step_seconds)[k] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  if (softmax) run(plan.softmax, plan.steps.size());
  bound->stream.wait();
  if (kept_values) read_kept(plan, *bound, *kept_values);
  const float* out = static_cast<const float*>(bound->slots[softmax ? plan.probabilities : plan.output].get_data_handle());
  return std::vector<float>(out, out + batch * spec.classes);
}

// Whether oneDNN 2.6's int8 convolutions and inner products sum exactly here: with VNNI
// (vpdpbusd) they do; without it their u8 x s8 products are added in pairs into 16 bits, which
// saturate, and an s8 input's weights are halved first (measured: nearly every sum of a 64-channel
// 3x3 conv wrong on AVX2, with random u8 inputs, or with s8 ones).
bool int8_kernels_exact() {
  using isa = dnnl::cpu_isa;
  const isa i = dnnl::get_effective_cpu_isa();
  return i == isa::avx2_vnni || i == isa::avx512_core_vnni || i == isa::avx512_core_bf16 || i == isa::avx512_core_amx;
}

void Loaded::init(ModelFile f, const std::string& name, int n_threads, Int8Sums sums) {
  path = name;
  int8_kernels = detail::int8_kernels_exact() || sums == Int8Sums::fast;
  file = std::move(f);
  if (n_threads < 0 || n_threads > kMostThreads) fail(fmt::format("threads = {}: give 0 (all cores) to {}", n_threads, kMostThreads));
  threads = n_threads > 0 ? n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    read_metadata();
    check_tensors();
    on_floats = layers_on_floats(*this);
  } catch (const nlohmann::json::exception& e) {  // a type the checks above missed: still the file's fault
    fail(std::string("metadata: ") + e.what());
  }
  ThreadScope scope(threads);
  const auto first = plan_for(1);  // builds every primitive once: problems surface at load
  arena_per_example = std::max<uint64_t>(first->arena_bytes, 1);
  work_per_example = first->work_per_example;
  const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
  pass_budget = 2 * (l2 > 0 ? static_cast<uint64_t>(l2) : uint64_t(1) << 20) * static_cast<uint64_t>(threads);
}

}  // namespace detail

}  // namespace shrink::rt
