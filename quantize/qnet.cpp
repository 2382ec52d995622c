#include "quantize/qnet.h"

#include <fmt/format.h>

#include <cmath>

#include "common/error.h"
#include "train/checkpoint.h"
#include "train/fold.h"

namespace shrink {

nlohmann::json QuantSettings::to_json() const {
  return {{"observer", observer}, {"ema_momentum", ema_momentum}, {"percentile", percentile}, {"lsq", lsq}, {"float_layers", float_layers}};
}

QuantSettings QuantSettings::from_json(const nlohmann::json& j) {
  QuantSettings s;
  s.observer = j.value("observer", s.observer);
  s.ema_momentum = j.value("ema_momentum", s.ema_momentum);
  s.percentile = j.value("percentile", s.percentile);
  s.lsq = j.value("lsq", false);
  s.float_layers = j.value("float_layers", std::vector<std::string>{});
  return s;
}

ActQuantImpl::ActQuantImpl(bool is_signed, const QuantSettings& s)
    : signed_(is_signed), lsq_(s.lsq), observer_(Observer::parse(s.observer), s.ema_momentum, s.percentile) {
  scale = lsq_ ? register_parameter("scale", torch::ones({1})) : register_buffer("scale", torch::ones({1}));
  register_buffer("range", torch::zeros({1}));
}

torch::Tensor ActQuantImpl::forward(const torch::Tensor& x, bool observe, bool quantize) {
  if (observe) {
    auto range = named_buffers()["range"];
    if (!observer_.seen() && range.item<double>() > 0) observer_.seed(range.item<double>());
    observer_.observe(x);
    torch::NoGradGuard no_grad;
    range.fill_(observer_.range());
    if (!lsq_) scale.fill_(std::max(observer_.range(), 1e-8) / qmax());
  }
  if (!quantize) return x;
  double grad_scale = lsq_ ? 1.0 / std::sqrt(static_cast<double>(x.numel()) * qmax()) : 1.0;
  return fake_quant(x, scale, qmin(), qmax(), grad_scale);
}

void ActQuantImpl::finish_calibration() {
  torch::NoGradGuard no_grad;
  named_buffers()["range"].fill_(observer_.range());
  scale.fill_(std::max(observer_.range(), 1e-8) / qmax());
}

namespace {

// What a layer that is not computed in int8 does to the int8 grid of its input.
enum class OnGrid {
  Leaves,    // its output is off the grid (a float conv, linear, add or batchnorm): it needs a point of its own
  Keeps,     // picks, moves or clamps values: its output lies on its input's grid
  Rerounds,  // averages fall between grid points: rounded back onto its input's grid
};

OnGrid on_grid(LayerType t) {
  switch (t) {
    case LayerType::Conv2d:
    case LayerType::Linear:
    case LayerType::BatchNorm:
    case LayerType::Add:
    case LayerType::Mul:
    case LayerType::Concat:     // its inputs go onto its own grid (one scale for all of them)
    case LayerType::HardSwish:  // not scale-invariant: x * relu6(x + 3) / 6
    case LayerType::LeakyReLU:  // its slope takes values off the grid (one activation scheme for all but the clamps)
    case LayerType::Tanh:
    case LayerType::Elu:
    case LayerType::Softplus:
    case LayerType::Mish:
    case LayerType::Gelu:
    case LayerType::PReLU:
    case LayerType::Sigmoid:
    case LayerType::HardSigmoid: return OnGrid::Leaves;
    case LayerType::ReLU:
    case LayerType::ReLU6:
    case LayerType::MaxPool:
    case LayerType::GlobalMaxPool:
    case LayerType::Flatten:
    case LayerType::Unflatten:
    case LayerType::Dropout:
    case LayerType::Shuffle:
    case LayerType::Slice: return OnGrid::Keeps;
    case LayerType::AvgPool:
    case LayerType::GlobalAvgPool: return OnGrid::Rerounds;
  }
  return OnGrid::Leaves;
}

// A layer with weights computed with its fake-quantized weight `w` and bias `b`.
torch::Tensor weighted_forward(const Layer& L, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  switch (L.type) {
    case LayerType::Conv2d: return conv2d_of(L, x, w, b);
    case LayerType::Linear: return torch::linear(x.dim() > 2 ? x.flatten(1) : x, w, b);
    case LayerType::BatchNorm:
    case LayerType::PReLU:
    SHRINK_CASES_WITHOUT_PARAMETERS break;
  }
  throw std::logic_error(fmt::format("layer {}: {} has no weights to quantize", L.name, layer_type_name(L.type)));
}

// The integer sum of a layer's integer weights times its integer inputs (|x| <= 255, |w| <= 127),
// exactly, in float64. A float32 sum is exact while its partial sums stay below 2^24: so a window
// of up to 2^24 / (255 * 127) = 518 inputs sums in float32 at once; a larger one (a 3x3 conv of
// more than 57 channels) splits the inputs into x = 16 * high + low, high in [-16, 15] and low in
// [0, 15], two float32 sums exact up to windows of 8,256 (torchvision's resnet18 on 400 inputs
// of 32x32: 20 s, against 47 s with its 3x3 convs of 128 to 512 channels in float64); past that,
// float64.
torch::Tensor exact_integer_sum(const Layer& L, const torch::Tensor& x, const torch::Tensor& w) {
  const double window = w[0].numel(), exact_below = 1 << 24;
  if (window * 255 * 127 < exact_below) return weighted_forward(L, x, w, {}).to(torch::kFloat64);
  if (window * 16 * 127 < exact_below) {
    auto high = torch::floor(x / 16);
    return weighted_forward(L, high, w, {}).to(torch::kFloat64) * 16 + weighted_forward(L, x - 16 * high, w, {}).to(torch::kFloat64);
  }
  return weighted_forward(L, x.to(torch::kFloat64), w.to(torch::kFloat64), {});
}

// An average pool of values on an int8 grid of `scale`, as oneDNN's int8 pooling computes it: the
// integer sum over each window times the float reciprocal of its count, rounded half to even
// onto the same grid. Rounding the float average instead would differ on ties (x.5), which
// averages hit often.
torch::Tensor int8_average_values(const Layer& L, const torch::Tensor& x, const torch::Tensor& scale, double qmin, double qmax) {
  torch::NoGradGuard no_grad;
  auto q = torch::round(x / scale);
  torch::Tensor sum, count;
  if (L.type == LayerType::GlobalAvgPool) {
    sum = q.sum({2, 3});
    count = torch::full({}, static_cast<float>(q.size(2) * q.size(3)));
  } else {
    const Layer::Window W = L.window();
    sum = torch::avg_pool2d(q, W.kernel, W.stride, W.padding, L.ceil, true, 1);  // divisor 1: the window's sum
    count = L.include_pad ? torch::full({}, static_cast<float>(W.kernel[0] * W.kernel[1]))
                          : torch::avg_pool2d(torch::ones_like(q.narrow(1, 0, 1)), W.kernel, W.stride, W.padding, L.ceil, true, 1);
  }
  return torch::clamp(torch::round(sum * torch::reciprocal(count)), qmin, qmax).mul_(scale);
}

// That average in place of the float average `y`, whose gradient it passes straight through (the
// value is computed without autograd; a NoGradGuard around this sum too once cut every layer
// before the pool off from QAT's gradients).
torch::Tensor int8_average(const Layer& L, const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& scale, double qmin, double qmax) {
  return y + (int8_average_values(L, x, scale, qmin, qmax).view_as(y) - y).detach();  // gradients pass straight through to y
}

}  // namespace

QuantNetImpl::QuantNetImpl(ModelSpec spec_in, QuantSettings settings) : SpecNetImpl(std::move(spec_in)), settings_(std::move(settings)) {
  const ModelSpec& sp = spec();
  const size_t n = sp.layers.size();
  quantized_.assign(n, false);
  folded_into_.assign(n, -1);
  folded_bn_.assign(n, -1);
  point_after_.assign(n, -1);
  grid_.assign(n, -1);
  input_grid_.assign(n, -1);
  unit_point_.assign(n, -1);
  weight_scale_.resize(n);
  auto stays_float = [&](const std::string& name) {
    return std::find(settings_.float_layers.begin(), settings_.float_layers.end(), name) != settings_.float_layers.end();
  };
  std::vector<std::vector<int>> consumers(n);
  std::vector<int> input_consumers;
  for (size_t i = 0; i < n; ++i)
    for (const auto& in : sp.layers[i].inputs) (in.empty() ? input_consumers : consumers[sp.index_of(in)]).push_back(static_cast<int>(i));
  // A conv or linear kept in float keeps the batchnorm after it in float too: folded into it when
  // it is int8, alone it could not be quantized.
  for (size_t i = 0; i + 1 < n; ++i)
    if (has_weights(sp.layers[i].type) && stays_float(sp.layers[i].name) && sp.layers[i + 1].type == LayerType::BatchNorm &&
        consumers[i] == std::vector<int>{int(i + 1)} && !stays_float(sp.layers[i + 1].name))
      settings_.float_layers.push_back(sp.layers[i + 1].name);

  std::vector<int> unit_of_end(n, -1);  // layer ending a quantized unit -> the unit's first layer
  for (size_t i = 0; i < n; ++i) {
    const Layer& L = sp.layers[i];
    if (!runs_int8(L.type) || stays_float(L.name)) continue;
    quantized_[i] = true;
    size_t end = i;
    if (has_weights(L.type) && i + 1 < n && sp.layers[i + 1].type == LayerType::BatchNorm && consumers[i] == std::vector<int>{int(i + 1)}) {
      folded_bn_[i] = static_cast<int>(i + 1);
      folded_into_[i + 1] = static_cast<int>(i);
      end = i + 1;
    }
    // A clamp after it (relu, relu6) runs fused, on the unit's output point (as the runtime's
    // post-op); other activations get an output point of their own after the unit's.
    const Layer* next = consumers[end].size() == 1 ? &sp.layers[consumers[end][0]] : nullptr;
    if (fuses_activation(L.type) && next && only_clamps(next->type) && !stays_float(next->name)) end = consumers[end][0];
    unit_of_end[end] = static_cast<int>(i);
  }
  std::vector<std::string> unfolded;  // named all at once: a DenseNet has dozens
  for (size_t i = 0; i < n; ++i)
    if (sp.layers[i].type == LayerType::BatchNorm && folded_into_[i] < 0 && !stays_float(sp.layers[i].name)) unfolded.push_back(sp.layers[i].name);
  if (!unfolded.empty())
    throw UserError(fmt::format("{} {}: a batchnorm that does not directly follow a conv or linear cannot be quantized; "
                                "keep {} float with quantize.float_layers = {}",
                                unfolded.size() == 1 ? "layer" : "layers", fmt::join(unfolded, ", "), unfolded.size() == 1 ? "it" : "them",
                                fmt::join(unfolded, ",")));

  std::vector<bool> nonnegative(n, false);
  auto add_point = [&](const std::string& name, bool is_signed) {
    points_.push_back(register_module(kActivationPointPrefix + name, ActQuant(is_signed, settings_)));
    return static_cast<int>(points_.size() - 1);
  };
  auto feeds_quantized = [&](const std::vector<int>& cs) {
    return std::any_of(cs.begin(), cs.end(), [&](int c) { return quantized_[c]; });
  };
  if (feeds_quantized(input_consumers)) input_point_ = add_point("input", true);
  for (size_t k = 0; k < n; ++k) {
    const Layer& L = sp.layers[k];
    int src = L.inputs[0].empty() ? -2 : sp.index_of(L.inputs[0]);
    int src_grid = src == -2 ? input_point_ : grid_[src];
    input_grid_[k] = src_grid;
    const bool keeps_grid = on_grid(L.type) != OnGrid::Leaves;
    auto all_inputs_nonnegative = [&] {
      return std::all_of(L.inputs.begin(), L.inputs.end(), [&](const std::string& in) { return !in.empty() && nonnegative[sp.index_of(in)]; });
    };
    nonnegative[k] = never_negative(L.type) || (keeps_grid && src >= 0 && nonnegative[src]) || (merges_inputs(L.type) && all_inputs_nonnegative());
    bool last = k + 1 == n;
    if (unit_of_end[k] >= 0) {
      if (!last) point_after_[k] = add_point(L.name, !nonnegative[k]);
      unit_point_[unit_of_end[k]] = point_after_[k];
    } else if (keeps_grid && src_grid >= 0 && !stays_float(L.name)) {
      grid_[k] = src_grid;  // stays on its input's grid (average pools re-round onto it)
    } else if (!last && feeds_quantized(consumers[k]) && folded_into_[k] < 0 && !(quantized_[k] && has_weights(L.type))) {
      point_after_[k] = add_point(L.name, !nonnegative[k]);  // a float tensor entering int8 layers
    }
    if (point_after_[k] >= 0) grid_[k] = point_after_[k];
  }
  if (settings_.lsq) {
    auto params = named_parameters();
    for (size_t i = 0; i < n; ++i)
      if (quantized_[i] && has_weights(sp.layers[i].type))
        weight_scale_[i] = register_parameter(kWeightScalePrefix + sp.layers[i].name, torch::ones({params[sp.layers[i].name + ".weight"].size(0)}));
  }
}

namespace {

// Quantized checkpoints load as this simulation (train/checkpoint.h cannot name it).
[[maybe_unused]] const bool registered_with_the_loader = (register_quant_aware_builder([](const ModelSpec& spec, const nlohmann::json& settings) {
  return std::static_pointer_cast<SpecNetImpl>(QuantNet(spec, QuantSettings::from_json(settings)).ptr());
}), true);

}  // namespace

nlohmann::json QuantNetImpl::describe() const { return {{"quantization", settings_.to_json()}}; }

torch::Tensor QuantNetImpl::fold_factor(size_t i) {
  const std::string& bn = spec().layers[folded_bn_[i]].name;
  auto params = named_parameters();
  auto buffers = named_buffers();
  double eps = batchnorm_eps(*this, bn);
  return params[bn + ".weight"] / (buffers[bn + ".running_var"] + eps).sqrt();
}

namespace {
std::vector<int64_t> per_channel_shape(const torch::Tensor& w) {
  std::vector<int64_t> shape(w.dim(), 1);
  shape[0] = -1;
  return shape;
}
}  // namespace

torch::Tensor QuantNetImpl::folded_weight(size_t i) {
  auto w = named_parameters()[spec().layers[i].name + ".weight"];
  return folded_bn_[i] >= 0 ? w * fold_factor(i).view(per_channel_shape(w)) : w;
}

torch::Tensor QuantNetImpl::weight_scale(size_t i) {
  return weight_scale_[i].defined() ? weight_scale_[i] : weight_scales(folded_weight(i));
}

torch::Tensor QuantNetImpl::quantized_weight(size_t i) {
  auto w = folded_weight(i);
  if (weight_scale_[i].defined())
    return fake_quant(w, weight_scale_[i].view(per_channel_shape(w)), -kWeightMax, kWeightMax, 1.0 / std::sqrt(w[0].numel() * kWeightMax));
  return fake_quant(w, weight_scales(w).view(per_channel_shape(w)), -kWeightMax, kWeightMax);
}

// Evaluation computes what the runtime's int8 kernels (and ONNX Runtime's) compute, bit for bit:
// the int32 sum on the integers of the input's and the weight's grids, bias included, times
// the float multiplier s_in * s_w[c] / s_out, rounded onto the unit's output grid (the point after
// the unit then keeps it; its clamp, relu and relu6 commute with the rounding). The logits:
// the sum times s_in * s_w[c]. Summing dequantized values instead rounds every product, and deep
// nets carry the flipped rounding steps forward.
torch::Tensor QuantNetImpl::integer_forward(size_t i, const torch::Tensor& x, const torch::Tensor& qw, const torch::Tensor& b) {
  if (input_grid_[i] < 0) return weighted_forward(spec().layers[i], x, qw, accumulator_bias(i, b));
  torch::NoGradGuard no_grad;
  auto s_in = points_[input_grid_[i]]->scale.detach();
  auto s_w = weight_scale(i).detach();
  auto step = s_in * s_w;
  auto sum = exact_integer_sum(spec().layers[i], torch::round(x / s_in), torch::round(qw / s_w.view(per_channel_shape(qw))));
  std::vector<int64_t> shape(sum.dim(), 1);
  shape[1] = -1;
  if (b.defined()) sum += torch::round(b / step).clamp(kBiasMin, kBiasMax).to(torch::kFloat64).view(shape);
  sum = sum.to(torch::kFloat32);
  if (unit_point_[i] < 0) return sum * step.view(shape);
  auto s_out = points_[unit_point_[i]]->scale.detach();
  return torch::round(sum * (step / s_out).view(shape)) * s_out;
}

// Rounded onto the accumulator's grid, as an int32 bias is: what the runtime adds to the integer
// sum and what ONNX Runtime's fused QLinearConv / QGemm require. Gradients pass straight through.
torch::Tensor QuantNetImpl::accumulator_bias(size_t i, const torch::Tensor& b) {
  if (!b.defined() || input_grid_[i] < 0) return b;
  auto step = (points_[input_grid_[i]]->scale * weight_scale(i)).detach();
  return fake_quant(b, step, kBiasMin, kBiasMax);
}

torch::Tensor QuantNetImpl::apply_point(int point, const torch::Tensor& x) {
  return points_[point]->forward(x, is_training() && !observers_frozen_, true);
}

void QuantNetImpl::finish_calibration() {
  for (auto& p : points_) p->finish_calibration();
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < weight_scale_.size(); ++i)
    if (weight_scale_[i].defined()) weight_scale_[i].copy_(weight_scales(folded_weight(i)));
}

torch::Tensor QuantNetImpl::layer_forward(size_t i, torch::Tensor& in, const std::vector<torch::Tensor>& rest, bool inplace) {
  const Layer& L = spec().layers[i];
  const bool from_input = L.inputs[0].empty();
  if (calibrating_) {  // float forward; observers see every point
    if (from_input && input_point_ >= 0) points_[input_point_]->forward(in, true, false);
    auto out = SpecNetImpl::layer_forward(i, in, rest, false);
    if (point_after_[i] >= 0) points_[point_after_[i]]->forward(out, true, false);
    return out;
  }
  torch::Tensor x = from_input && input_point_ >= 0 ? apply_point(input_point_, in) : in;
  torch::Tensor y;
  if (folded_into_[i] >= 0) {
    y = x;  // computed with the conv or linear it is folded into
  } else if (quantized_[i] && has_weights(L.type)) {
    auto qw = quantized_weight(i);
    auto params = named_parameters();
    torch::Tensor bias = params.contains(L.name + ".bias") ? params[L.name + ".bias"] : torch::Tensor();
    auto compute = [&](const torch::Tensor& b) {
      return is_training() ? weighted_forward(L, x, qw, accumulator_bias(i, b)) : integer_forward(i, x, qw, b);
    };
    if (folded_bn_[i] < 0) {
      y = compute(bias);
    } else {
      const std::string& bn = spec().layers[folded_bn_[i]].name;
      auto buffers = named_buffers();
      auto gamma = params[bn + ".weight"], beta = params[bn + ".bias"];
      auto mean = buffers[bn + ".running_mean"], var = buffers[bn + ".running_var"];
      auto sf = fold_factor(i);
      auto b = bias.defined() ? bias : torch::zeros_like(mean);
      if (!is_training() || bn_frozen_) {
        y = compute((b - mean) * sf + beta);  // exactly the folded layer the runtime runs
      } else {
        // Batch statistics still train (Krishnamoorthi 2018): quantize with the running-stat fold,
        // undo it, and let batchnorm normalize with the batch's statistics.
        std::vector<int64_t> shape(qw.dim() == 4 ? 4 : 2, 1);
        shape[1] = -1;
        auto y0 = compute(torch::Tensor()) / sf.view(shape) + b.view(shape);
        y = training_batchnorm() ? training_batchnorm()(y0, gamma, beta, mean, var, batchnorm_eps(*this, bn), 0.1)
                                 : torch::batch_norm(y0, gamma, beta, mean, var, true, 0.1, batchnorm_eps(*this, bn), false);
      }
    }
  } else {
    y = SpecNetImpl::layer_forward(i, x, rest, inplace && x.is_same(in));
    // Averages of values on a grid are re-rounded onto it; a pool of float values (entering int8
    // layers, so with a point of its own) is not on one.
    if (on_grid(L.type) == OnGrid::Rerounds && input_grid_[i] >= 0 && grid_[i] == input_grid_[i]) {
      auto& p = points_[grid_[i]];
      y = int8_average(L, x, y, p->scale.detach(), p->qmin(), p->qmax());  // averages re-rounded onto the input's grid
    }
  }
  if (point_after_[i] >= 0) y = apply_point(point_after_[i], y);
  return y;
}

nlohmann::json QuantNetImpl::scales() {
  nlohmann::json out = {{"activations", nlohmann::json::object()}, {"weights", nlohmann::json::object()}};
  torch::NoGradGuard no_grad;
  auto point_json = [](ActQuant& p) { return nlohmann::json{{"scale", p->scale.item<double>()}, {"signed", p->is_signed()}}; };
  if (input_point_ >= 0) out["activations"]["input"] = point_json(points_[input_point_]);
  for (size_t i = 0; i < point_after_.size(); ++i) {
    if (point_after_[i] >= 0) out["activations"][spec().layers[i].name] = point_json(points_[point_after_[i]]);
    if (quantized_[i] && has_weights(spec().layers[i].type)) {
      auto s = weight_scale(i);
      out["weights"][spec().layers[i].name] = std::vector<float>(s.data_ptr<float>(), s.data_ptr<float>() + s.numel());
    }
  }
  return out;
}

}  // namespace shrink
