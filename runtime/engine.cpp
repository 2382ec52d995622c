// The runtime's executor: one oneDNN primitive per layer (ReLUs fused as post-ops), built once
// per batch size from the ModelSpec in the file; weights reordered once to the layouts the
// primitives prefer. Activations are NHWC (images) or NC (features); in int8 models they are
// u8/s8 with the scales of docs/quantization.md.
#include <fmt/format.h>
#include <omp.h>

#include <cmath>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <set>
#include <thread>

#include "runtime/model_file.h"
#include "train/spec.h"

namespace shrink::rt {

using dnnl::memory;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {

// One activation tensor of a plan.
struct Act {
  memory mem;
  float scale = 0;  // 0: float; else the quantization scale of its u8/s8 values
};

struct Step {
  dnnl::primitive prim;
  std::unordered_map<int, memory> args;
};

struct Plan {
  memory input;   // user layout: N,C,H,W (or N,F) f32
  memory output;  // N,classes f32 logits
  memory probabilities;
  dnnl::primitive softmax;  // run only when probabilities are asked for
  std::vector<Step> steps;
  std::vector<memory> keep;  // weights and biases in the primitives' layouts
};

memory::dims dims_of(const std::vector<int64_t>& shape, int64_t batch) {
  memory::dims d{batch};
  d.insert(d.end(), shape.begin(), shape.end());
  return d;
}

}  // namespace

struct Model::Impl {
  ModelFile file;
  ModelSpec spec;
  std::vector<LayerInfo> info;
  std::string path, precision;
  std::vector<float> mean, stdev;
  std::map<std::string, std::pair<float, bool>> act_scales;  // point -> (scale, signed)
  std::set<std::string> int8_layers;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  mutable dnnl::stream stream{engine};
  mutable std::map<int64_t, Plan> plans;
  mutable std::mutex mutex;

  [[noreturn]] void fail(const std::string& what) const { throw Error(path + ": " + what); }

  const Tensor& tensor(const std::string& name) const {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end()) fail("tensor " + name + " is missing");
    return it->second;
  }

  // A weight from the file, reordered once into the layout the primitive wants.
  memory constant(Plan& plan, const Tensor& t, const memory::desc& user, const memory::desc& want) {
    if (static_cast<size_t>(user.get_size()) != t.bytes.size()) fail("a tensor's size does not match its layer");
    memory src(user, engine, const_cast<uint8_t*>(t.bytes.data()));
    memory dst(want, engine);
    dnnl::reorder(src, dst).execute(stream, src, dst);
    plan.keep.push_back(dst);
    return dst;
  }

  // `a` as a float tensor (dequantizing int8 with a reorder when needed).
  Act as_float(Plan& plan, const Act& a) {
    if (a.scale == 0) return a;
    memory::desc d(a.mem.get_desc().dims(), dt::f32, a.mem.get_desc().dims().size() == 4 ? tag::nhwc : tag::nc);
    Act out{memory(d, engine), 0};
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {a.scale});
    plan.steps.push_back({dnnl::reorder(dnnl::reorder::primitive_desc(engine, a.mem.get_desc(), engine, d, attr)), {{DNNL_ARG_FROM, a.mem}, {DNNL_ARG_TO, out.mem}}});
    return out;
  }

  // `a` quantized onto point `name`'s grid.
  Act quantize(Plan& plan, const Act& a, const std::string& name) {
    auto [scale, is_signed] = act_scales.at(name);
    Act f = as_float(plan, a);
    memory::desc d(f.mem.get_desc().dims(), is_signed ? dt::s8 : dt::u8, f.mem.get_desc().dims().size() == 4 ? tag::nhwc : tag::nc);
    Act out{memory(d, engine), scale};
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {1.0f / scale});
    plan.steps.push_back({dnnl::reorder(dnnl::reorder::primitive_desc(engine, f.mem.get_desc(), engine, d, attr)), {{DNNL_ARG_FROM, f.mem}, {DNNL_ARG_TO, out.mem}}});
    return out;
  }

  Plan build(int64_t n);
};

Plan Model::Impl::build(int64_t n) {
  Plan plan;
  const bool int8 = precision == "int8";
  const auto& in_shape = spec.input;
  memory::desc user_md(dims_of(in_shape, n), dt::f32, in_shape.size() == 3 ? tag::nchw : tag::nc);
  plan.input = memory(user_md, engine);
  Act input{plan.input, 0};
  if (in_shape.size() == 3) {  // to NHWC, the layout oneDNN's convolutions run fastest in
    memory::desc nhwc(dims_of(in_shape, n), dt::f32, tag::nhwc);
    Act converted{memory(nhwc, engine), 0};
    plan.steps.push_back({dnnl::reorder(plan.input, converted.mem), {{DNNL_ARG_FROM, plan.input}, {DNNL_ARG_TO, converted.mem}}});
    input = converted;
  }
  if (int8 && act_scales.count("input")) input = quantize(plan, input, "input");

  const size_t count = spec.layers.size();
  std::vector<int> readers(count, 0);
  for (const Layer& L : spec.layers)
    for (const auto& in : L.inputs)
      if (!in.empty()) ++readers[spec.index_of(in)];
  std::vector<Act> acts(count);
  std::vector<bool> fused(count, false);
  auto act_of = [&](const std::string& name) -> Act& { return name.empty() ? input : acts[spec.index_of(name)]; };

  for (size_t i = 0; i < count; ++i) {
    const Layer& L = spec.layers[i];
    if (fused[i]) continue;  // a ReLU already applied as its producer's post-op
    const auto& out_shape = info[i].out_shape;
    const bool last = i + 1 == count;
    const bool q = int8 && int8_layers.count(L.name);
    // A ReLU that only this layer feeds runs as its post-op; the point after it is the unit's output.
    int relu = -1;
    if ((L.type == LayerType::Conv2d || L.type == LayerType::Linear || L.type == LayerType::Add) && !last && readers[i] == 1 &&
        (spec.layers[i + 1].type == LayerType::ReLU || spec.layers[i + 1].type == LayerType::ReLU6) && spec.layers[i + 1].inputs[0] == L.name)
      relu = static_cast<int>(i + 1);
    const std::string& end_name = relu >= 0 ? spec.layers[relu].name : L.name;
    // The unit's output type: int8 onto its point's grid, or float (the logits, float layers).
    bool out_q = q && act_scales.count(end_name) && !(relu >= 0 ? relu + 1 == static_cast<int>(count) : last);
    float out_scale = out_q ? act_scales.at(end_name).first : 0;
    // Post-ops see values after the output scales, in the output's units: ReLU6 clips at 6 / scale there.
    dnnl::post_ops ops;
    if (relu >= 0) {
      if (spec.layers[relu].type == LayerType::ReLU) ops.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
      else ops.append_eltwise(1.f, dnnl::algorithm::eltwise_clip, 0.f, out_q ? 6.f / out_scale : 6.f);
    }
    dt out_dt = out_q ? (act_scales.at(end_name).second ? dt::s8 : dt::u8) : dt::f32;
    Act& src = act_of(L.inputs[0]);
    Act result;
    switch (L.type) {
      case LayerType::Conv2d:
      case LayerType::Linear: {
        Act x = q ? src : as_float(plan, src);
        if (q && x.scale == 0) x = quantize(plan, x, L.inputs[0].empty() ? "input" : L.inputs[0]);
        const Tensor& w = tensor(L.name + ".weight");
        bool has_bias = file.tensors.count(L.name + ".bias");
        auto xd = x.mem.get_desc();
        memory::desc dst_md(dims_of(out_shape, n), out_dt, out_shape.size() == 3 ? tag::nhwc : tag::nc);
        memory::desc b_md({static_cast<int64_t>(out_shape[0])}, dt::f32, tag::x);
        dnnl::primitive_attr attr;
        std::vector<float> scales;
        if (q) {
          const Tensor& ws = tensor(L.name + ".weight_scale");
          if (ws.numel() != out_shape[0]) fail("weight scales of " + L.name + " have the wrong size");
          for (int64_t c = 0; c < ws.numel(); ++c) scales.push_back(x.scale * ws.f32()[c] / (out_q ? out_scale : 1.0f));
          attr.set_output_scales(1 << 1, scales);
        }
        attr.set_post_ops(ops);
        dt w_dt = q ? dt::s8 : dt::f32;
        memory weights, bias;
        dnnl::primitive prim;
        if (L.type == LayerType::Conv2d) {
          int64_t in_c = info[i].in_shape[0], out_c = out_shape[0], groups = L.depthwise ? in_c : L.groups, k = L.kernel;
          memory::dims wd = groups == 1 ? memory::dims{out_c, in_c, k, k} : memory::dims{groups, out_c / groups, in_c / groups, k, k};
          memory::desc w_any(wd, w_dt, tag::any), w_user(wd, w_dt, groups == 1 ? tag::oihw : tag::goihw);
          memory::desc src_any(xd.dims(), xd.data_type(), tag::nhwc);
          dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src_any, w_any,
                                            has_bias ? b_md : memory::desc(), dst_md, {L.stride, L.stride}, {L.padding, L.padding},
                                            {L.padding, L.padding});
          dnnl::convolution_forward::primitive_desc pd(d, attr, engine);
          weights = constant(plan, w, w_user, pd.weights_desc());
          prim = dnnl::convolution_forward(pd);
        } else {
          memory::dims wd{out_shape[0]};
          auto in_dims = xd.dims();
          wd.insert(wd.end(), in_dims.begin() + 1, in_dims.end());
          memory::desc w_any(wd, w_dt, tag::any), w_user(wd, w_dt, wd.size() == 4 ? tag::oihw : tag::oi);
          dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, xd, w_any, has_bias ? b_md : memory::desc(), dst_md);
          dnnl::inner_product_forward::primitive_desc pd(d, attr, engine);
          weights = constant(plan, w, w_user, pd.weights_desc());
          prim = dnnl::inner_product_forward(pd);
        }
        result = Act{memory(dst_md, engine), out_scale};
        Step step{prim, {{DNNL_ARG_SRC, x.mem}, {DNNL_ARG_WEIGHTS, weights}, {DNNL_ARG_DST, result.mem}}};
        if (has_bias) {
          const Tensor& b = tensor(L.name + ".bias");
          if (b.numel() != out_shape[0]) fail("bias of " + L.name + " has the wrong size");
          memory bias_mem(b_md, engine);
          float* dst_b = static_cast<float*>(bias_mem.get_data_handle());
          // int8: oneDNN adds the bias to the int32 sum before the output scales, so it goes in
          // the sum's units, b / (s_in * s_w[c]).
          for (int64_t c = 0; c < out_shape[0]; ++c) dst_b[c] = q ? b.f32()[c] / (x.scale * tensor(L.name + ".weight_scale").f32()[c]) : b.f32()[c];
          plan.keep.push_back(bias_mem);
          step.args[DNNL_ARG_BIAS] = bias_mem;
        }
        plan.steps.push_back(step);
        break;
      }
      case LayerType::Add: {
        Act a = src, b = act_of(L.inputs[1]);
        if (!q) a = as_float(plan, a), b = as_float(plan, b);
        memory::desc dst_md(dims_of(out_shape, n), out_dt, out_shape.size() == 3 ? tag::nhwc : tag::nc);
        dnnl::primitive_attr attr;
        attr.set_post_ops(ops);
        if (q) {  // dst = s_a/s_out * a + s_b/s_out * b, rounded and saturated into the output type
          float so = out_q ? out_scale : 1.0f;
          attr.set_scales(DNNL_ARG_SRC_0, 0, {a.scale / so});
          attr.set_scales(DNNL_ARG_SRC_1, 0, {b.scale / so});
        }
        dnnl::binary::desc d(dnnl::algorithm::binary_add, a.mem.get_desc(), b.mem.get_desc(), dst_md);
        result = Act{memory(dst_md, engine), out_scale};
        plan.steps.push_back({dnnl::binary(dnnl::binary::primitive_desc(d, attr, engine)),
                              {{DNNL_ARG_SRC_0, a.mem}, {DNNL_ARG_SRC_1, b.mem}, {DNNL_ARG_DST, result.mem}}});
        break;
      }
      case LayerType::MaxPool:
      case LayerType::AvgPool:
      case LayerType::GlobalAvgPool: {
        auto sd = src.mem.get_desc();
        const auto& is = info[i].in_shape;
        bool global = L.type == LayerType::GlobalAvgPool;
        int64_t kh = global ? is[1] : L.kernel, kw = global ? is[2] : L.kernel, s = global ? 1 : L.stride, p = global ? 0 : L.padding;
        int64_t oh = global ? 1 : out_shape[1], ow = global ? 1 : out_shape[2];
        memory::desc dst_md({n, is[0], oh, ow}, sd.data_type(), tag::nhwc);
        auto alg = L.type == LayerType::MaxPool ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_include_padding;
        dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, alg, sd, dst_md, {s, s}, {kh, kw}, {p, p},
                                      {(oh - 1) * s + kh - is[1] - p, (ow - 1) * s + kw - is[2] - p});
        Act pooled{memory(dst_md, engine), src.scale};  // pooling keeps the grid (averages round onto it)
        plan.steps.push_back({dnnl::pooling_forward(dnnl::pooling_forward::primitive_desc(d, engine)), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, pooled.mem}}});
        result = pooled;
        if (global) result.mem = memory(memory::desc({n, is[0]}, sd.data_type(), tag::nc), engine, pooled.mem.get_data_handle());
        break;
      }
      case LayerType::Flatten: {
        auto sd = src.mem.get_desc();
        if (sd.dims().size() == 4) {  // torch flattens in C,H,W order
          memory::desc nchw(sd.dims(), sd.data_type(), tag::nchw);
          memory plain(nchw, engine);
          plan.steps.push_back({dnnl::reorder(src.mem, plain), {{DNNL_ARG_FROM, src.mem}, {DNNL_ARG_TO, plain}}});
          result = Act{memory(memory::desc({n, out_shape[0]}, sd.data_type(), tag::nc), engine, plain.get_data_handle()), src.scale};
          plan.keep.push_back(plain);
        } else {
          result = src;
        }
        break;
      }
      case LayerType::Dropout: result = src; break;
      case LayerType::ReLU:
      case LayerType::ReLU6: {
        auto sd = src.mem.get_desc();
        result = Act{memory(sd, engine), src.scale};
        float upper = L.type == LayerType::ReLU6 ? (src.scale > 0 ? 6.0f / src.scale : 6.0f) : 0.f;
        auto alg = L.type == LayerType::ReLU ? dnnl::algorithm::eltwise_relu : dnnl::algorithm::eltwise_clip;
        dnnl::eltwise_forward::desc d(dnnl::prop_kind::forward_inference, alg, sd, 0.f, upper);
        plan.steps.push_back({dnnl::eltwise_forward(dnnl::eltwise_forward::primitive_desc(d, engine)), {{DNNL_ARG_SRC, src.mem}, {DNNL_ARG_DST, result.mem}}});
        break;
      }
      case LayerType::BatchNorm: fail("layer " + L.name + ": unfolded batchnorm is not supported (export folds batchnorm into convs)");
    }
    if (int8 && !q && !last && act_scales.count(L.name) && result.scale == 0) result = quantize(plan, result, L.name);
    acts[i] = result;
    if (relu >= 0) {
      fused[relu] = true;
      acts[relu] = result;
    }
  }
  Act out = as_float(plan, acts.back());
  plan.output = out.mem;
  plan.probabilities = memory(out.mem.get_desc(), engine);
  dnnl::softmax_forward::desc sd(dnnl::prop_kind::forward_inference, out.mem.get_desc(), 1);
  plan.softmax = dnnl::softmax_forward(dnnl::softmax_forward::primitive_desc(sd, engine));
  return plan;
}

Model Model::load(const std::string& path, int threads) {
  Model m;
  m.impl_ = std::make_shared<Impl>();
  Impl& impl = *m.impl_;
  impl.path = path;
  impl.file = read_model_file(path);
  const auto& meta = impl.file.meta;
  try {
    if (meta.value("format", "") != "shrink-model") impl.fail("metadata does not describe a shrink model");
    impl.spec = parse_spec(meta.at("spec").get<std::string>(), meta.at("input").get<std::vector<int64_t>>(), meta.at("classes").get<int64_t>());
    impl.info = analyze(impl.spec);
    impl.precision = meta.value("precision", "fp32");
    impl.mean = meta["normalization"].value("mean", std::vector<float>{});
    impl.stdev = meta["normalization"].value("std", std::vector<float>{});
    if (impl.precision == "int8") {
      for (auto& [name, v] : meta.at("quantization").at("activations").items()) {
        float s = v.at("scale").get<float>();
        if (!(s > 0) || !std::isfinite(s)) impl.fail("activation scale of " + name + " is not a positive number");
        impl.act_scales[name] = {s, v.at("signed").get<bool>()};
      }
      for (const auto& name : meta.at("quantization").at("int8_layers")) impl.int8_layers.insert(name.get<std::string>());
    } else if (impl.precision != "fp32") {
      impl.fail("unknown precision " + impl.precision);
    }
  } catch (const nlohmann::json::exception& e) {
    impl.fail(std::string("metadata is incomplete: ") + e.what());
  } catch (const std::runtime_error& e) {  // the spec parser's UserError
    if (dynamic_cast<const Error*>(&e)) throw;
    impl.fail(std::string("model spec: ") + e.what());
  }
  if (!impl.mean.empty() && (impl.mean.size() != impl.stdev.size() || static_cast<int64_t>(impl.mean.size()) != impl.spec.input[0]))
    impl.fail("normalization does not match the input channels");
  omp_set_num_threads(threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  try {
    impl.plans.emplace(1, impl.build(1));  // builds every primitive once: problems surface at load
  } catch (const dnnl::error& e) {
    impl.fail(std::string("oneDNN cannot run this model: ") + e.what());
  }
  return m;
}

std::vector<float> Model::predict(const float* input, int64_t batch) const { return run(input, batch, false); }

std::vector<float> Model::probabilities(const float* input, int64_t batch) const { return run(input, batch, true); }

std::vector<float> Model::run(const float* input, int64_t batch, bool softmax) const {
  if (batch < 1) throw Error("predict: batch must be at least 1");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  auto it = impl_->plans.find(batch);
  if (it == impl_->plans.end()) it = impl_->plans.emplace(batch, impl_->build(batch)).first;
  Plan& plan = it->second;
  float* dst = static_cast<float*>(plan.input.get_data_handle());
  int64_t per = 1;
  for (int64_t d : impl_->spec.input) per *= d;
  const auto& mean = impl_->mean;
  int64_t channels = impl_->spec.input.size() == 3 ? impl_->spec.input[0] : 1, plane = per / channels;
  for (int64_t k = 0; k < batch * per; ++k) {
    float v = input[k];
    if (!mean.empty()) {
      int64_t c = (k % per) / plane;
      v = (v - mean[c]) / impl_->stdev[c];
    }
    dst[k] = v;
  }
  for (auto& step : plan.steps) step.prim.execute(impl_->stream, step.args);
  if (softmax) plan.softmax.execute(impl_->stream, {{DNNL_ARG_SRC, plan.output}, {DNNL_ARG_DST, plan.probabilities}});
  impl_->stream.wait();
  const float* out = static_cast<const float*>((softmax ? plan.probabilities : plan.output).get_data_handle());
  return std::vector<float>(out, out + batch * impl_->spec.classes);
}

std::vector<int64_t> Model::input_shape() const { return impl_->spec.input; }
int64_t Model::classes() const { return impl_->spec.classes; }
std::string Model::precision() const { return impl_->precision; }
std::string Model::metadata_json() const { return impl_->file.meta.dump(); }
uint64_t Model::file_bytes() const { return impl_->file.file_size; }

}  // namespace shrink::rt
