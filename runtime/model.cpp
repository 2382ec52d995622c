// The public Model (shrink/runtime.hpp) over a loaded model (runtime/loaded.h, run by
// runtime/engine.cpp): loading, predict and its variants, profile, and what the file says.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>

#include "runtime/loaded.h"

namespace shrink::rt {

struct Model::Impl : detail::Loaded {};

// A Model that holds no model (moved from) says so, where it would dereference nothing.
Model::Impl& Model::impl() const {
  if (!impl_) throw Error("this Model holds no model (it was moved from): load one");
  return *impl_;
}

Model Model::load(const std::string& path, int threads, Int8Sums sums) {
  Model m;
  m.impl_ = std::make_shared<Impl>();
  m.impl_->init(read_model_file(path), path, threads, sums);
  return m;
}

Model Model::from_memory(const void* data, size_t size, int threads, const std::string& name, Int8Sums sums) {
  if (!data && size) throw Error(name + ": null data");
  Model m;
  m.impl_ = std::make_shared<Impl>();
  m.impl_->init(parse_model_file(static_cast<const uint8_t*>(data), size, name), name, threads, sums);
  return m;
}

std::vector<float> Model::predict(const float* input, int64_t batch) const { return run(input, batch, false); }

std::vector<Model::StepTime> Model::profile(const float* input, int64_t batch, int runs) const {
  if (batch < 1 || runs < 1) throw Error("profile: batch and runs must be at least 1");
  if (!input) throw Error("profile: input is null");
  detail::ThreadScope scope(impl().threads);
  auto plan = impl().plan_for(batch);
  std::vector<std::vector<double>> seconds(plan->steps.size(), std::vector<double>(runs, 0.0));  // [step][run]
  try {
    impl().execute(*plan, input, false);  // warm: first-touch of the activations, caches
    std::vector<double> one(plan->steps.size());
    for (int r = 0; r < runs; ++r) {
      std::fill(one.begin(), one.end(), 0.0);
      impl().execute(*plan, input, false, &one);
      for (size_t k = 0; k < one.size(); ++k) seconds[k][r] = one[k];
    }
  } catch (const dnnl::error& e) {
    throw Error(impl().path + ": oneDNN failed profiling batch " + std::to_string(batch) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(impl().path + ": out of memory profiling batch " + std::to_string(batch));
  }
  std::vector<StepTime> out;
  for (size_t k = 0; k < seconds.size(); ++k) {  // the median: a call interrupted by another process does not count
    std::nth_element(seconds[k].begin(), seconds[k].begin() + runs / 2, seconds[k].end());
    out.push_back({plan->steps[k].what, 1e6 * seconds[k][runs / 2], plan->threads});
  }
  return out;
}

std::vector<float> Model::probabilities(const float* input, int64_t batch) const { return run(input, batch, true); }

std::vector<std::string> Model::outputs() const {
  std::vector<std::string> names;
  const auto plan = impl().plan_for(1);  // held: another thread's call may push it out of the plan cache
  for (const auto& n : plan->named) names.push_back(n.name);
  return names;
}

std::vector<int64_t> Model::output_shape(const std::string& name) const {
  auto plan = impl().plan_for(1);
  for (const auto& n : plan->named)
    if (n.name == name) {
      const auto d = plan->slots[n.act.slot].desc.dims();
      return std::vector<int64_t>(d.begin() + 1, d.end());
    }
  throw Error(fmt::format("{}: the compiled model forms no output of a layer '{}' (folded or fused, or no such layer)", impl().path, name));
}

std::vector<float> Model::predict(const float* input, int64_t batch, const std::vector<std::string>& names,
                                  std::vector<std::vector<float>>& values) const {
  std::vector<std::string> kept = names;
  std::sort(kept.begin(), kept.end());
  kept.erase(std::unique(kept.begin(), kept.end()), kept.end());
  for (const std::string& name : kept) output_shape(name);  // an Error for a name the model does not form
  std::vector<std::vector<float>> sorted;
  auto logits = run(input, batch, false, kept, &sorted);
  values.clear();
  for (const std::string& name : names) values.push_back(sorted[std::lower_bound(kept.begin(), kept.end(), name) - kept.begin()]);
  return logits;
}

std::vector<float> Model::run(const float* input, int64_t batch, bool softmax, const std::vector<std::string>& kept,
                              std::vector<std::vector<float>>* kept_values) const {
  if (batch < 1) throw Error("predict: batch must be at least 1");
  if (!input) throw Error("predict: input is null");
  detail::ThreadScope scope(impl().threads);
  try {
    const auto shape = kept.empty() ? impl().call_shape(batch) : detail::Loaded::CallShape{batch, 1, false};  // kept outputs come from one pass
    if (shape.passes == 1) return impl().execute(*impl().plan_for(batch, kept), input, softmax, nullptr, kept_values);
    return impl().run_passes(input, batch, softmax, shape);
  } catch (const dnnl::error& e) {
    throw Error(impl().path + ": oneDNN failed running batch " + std::to_string(batch) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(impl().path + ": out of memory running batch " + std::to_string(batch));
  }
}

std::vector<int64_t> Model::input_shape() const { return impl().spec.input; }
int64_t Model::classes() const { return impl().spec.classes; }
std::string Model::precision() const { return impl().meta.precision; }
std::string Model::metadata_json() const { return impl().file.meta.dump(); }
std::vector<std::string> Model::class_names() const { return impl().meta.class_names; }
Model::Preprocessing Model::preprocessing() const {
  return {impl().meta.image_input, impl().meta.normalization.mean, impl().meta.normalization.std};
}
uint64_t Model::file_bytes() const { return impl().file.file_size; }
int Model::threads() const { return impl().threads; }

int Model::threads_at(int64_t batch) const {
  if (batch < 1) throw Error("threads_at: batch must be at least 1");
  detail::ThreadScope scope(impl().threads);
  const auto shape = impl().call_shape(batch);
  return shape.spread ? impl().threads : impl().plan_for(shape.pass)->threads;  // a spread call has a pass per thread at least
}

int64_t Model::batch_per_pass(int64_t batch) const {
  if (batch < 1) throw Error("batch_per_pass: batch must be at least 1");
  detail::ThreadScope scope(impl().threads);
  return impl().call_shape(batch).pass;
}

}  // namespace shrink::rt
