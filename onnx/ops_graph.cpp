// Readers of the ops that shape, pool, join or pass tensors on, and of the small integer
// arithmetic (Shape, Gather, Unsqueeze, Concat) a dynamic batch axis produces (the other ops on
// constants: ops_constants.cpp).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "onnx/importer.h"
#include "spec/arguments.h"

namespace shrink::onnx_import {

// Pads larger at the end than at the start (shrink's export of a ceil-mode pool, TensorFlow's SAME
// padding): a ceil-mode pool with the start's padding, when it counts the same windows. They then
// hold the same values when the padding adds nothing: a max, or an average that leaves it out.
void Importer::ceil_from_end_pads(const onnx::NodeProto& n, Layer& L, const std::vector<int64_t>& in, const std::vector<int64_t>& pads) {
  if (L.ceil) unsupported(n, "ceil_mode with more padding at the end than at the start is not supported");
  if (L.type == LayerType::AvgPool && L.include_pad) unsupported(n, "count_include_pad with more padding at the end than at the start is not supported");
  if (in.size() != 3) unsupported(n, "its input is not an image");
  L.ceil = true;  // L.padding is the start's
  for (int d = 0; d < 2; ++d) {
    const int64_t size = in[1 + d], windows = (size + pads[d] + pads[2 + d] - L.window().kernel[d]) / L.window().stride[d] + 1;  // ONNX's count, ceil_mode 0
    if (windows != pool_windows(L, size, d))
      unsupported(n, fmt::format("pads {} with no ceil-mode pool of the same windows is not supported", fmt::join(pads, ",")));
  }
}

// MaxPool and AveragePool: 2-D kernels, the same padding at both ends of each axis (or more at the
// ends: ceil mode), ceil mode; an AveragePool after a zero Pad counts the padding (torch exports
// count_include_pad so).
void Importer::pool(const onnx::NodeProto& n) {
  const Value& x = padded_input(n, 0);
  only_first_output_used(n);  // MaxPool's indices
  const bool is_max = n.op_type() == "MaxPool";
  const auto kernel = attr_ints(n, "kernel_shape"), strides = attr_ints(n, "strides", {1, 1}), pads = attr_ints(n, "pads", {0, 0, 0, 0});
  const auto dilations = attr_ints(n, "dilations", {1, 1});
  if (kernel.size() != 2 || strides.size() != 2) unsupported(n, "only 2-D kernels and strides are supported");
  if (dilations != std::vector<int64_t>{1, 1}) unsupported(n, "dilated pooling is not supported");
  if (kernel[0] < 1 || kernel[1] < 1 || strides[0] < 1 || strides[1] < 1) unsupported(n, "kernel_shape and strides must be at least 1");
  if (pads.size() != 4 || pads[0] < 0 || pads[1] < 0 || pads[2] < pads[0] || pads[3] < pads[1])
    unsupported(n, "only the same padding at both ends of an axis (or more at the end, as ceil mode) is supported");
  const std::string auto_pad = attr_string(n, "auto_pad", "NOTSET");
  if (auto_pad != "NOTSET" && auto_pad != "VALID" && !auto_pad.empty()) unsupported(n, fmt::format("auto_pad {} is not supported", auto_pad));
  const bool padded = std::any_of(pads.begin(), pads.end(), [](int64_t p) { return p != 0; });
  if (auto_pad == "VALID" && padded) unsupported(n, "auto_pad VALID and pads together (ONNX allows one or the other)");
  if (attr_int(n, "storage_order", 0) != 0) unsupported(n, "storage_order 1 is not supported");
  Layer L = layer_of(is_max ? LayerType::MaxPool : LayerType::AvgPool);
  L.kernel = kernel[0], L.kernel_w = kernel[1], L.stride = strides[0], L.stride_w = strides[1], L.padding = pads[0], L.padding_w = pads[1];
  L.ceil = attr_int(n, "ceil_mode", 0) != 0;
  if (!is_max) L.include_pad = attr_int(n, "count_include_pad", 0) != 0;
  if (pads[2] != pads[0] || pads[3] != pads[1]) ceil_from_end_pads(n, L, x.shape, pads);
  if (x.kind == Value::Kind::Padded) {
    const Pads& p = x.pads;
    if (is_max || padded || p.top != p.bottom || p.left != p.right)
      unsupported(n, "only an AveragePool without pads of its own may follow a Pad, and only the same padding at both ends of an axis");
    L.padding = p.top, L.padding_w = p.left, L.include_pad = true;
  }
  add_layer(n, L, {x.layer});
}

void Importer::global_pool(const onnx::NodeProto& n) {
  Layer L = layer_of(n.op_type() == "GlobalMaxPool" ? LayerType::GlobalMaxPool : LayerType::GlobalAvgPool);
  L.keep_dims = true;  // ONNX's output is N,C,1,1
  add_layer(n, L, {layer_input(n, 0).layer});
}

// ReduceMean (ReduceMax) over height and width is a global average (max) pool.
// A node's `axes` (an attribute, an input from opset 13 for Squeeze and Unsqueeze and from 18 for
// the Reduce ops) of a result of `rank` axes, negative ones counted from the end, sorted.
std::vector<int64_t> Importer::axes_of(const onnx::NodeProto& n, int64_t rank) const {
  std::vector<int64_t> axes = has_input(n, 1) ? constant_input(n, 1).ints : attr_ints(n, "axes");
  for (auto& a : axes)
    if (a < 0) a += rank;
  std::sort(axes.begin(), axes.end());
  return axes;
}

int64_t Importer::axes_count(const onnx::NodeProto& n) const {
  return static_cast<int64_t>(has_input(n, 1) ? constant_input(n, 1).ints.size() : attr_ints(n, "axes").size());
}

void Importer::reduce(const onnx::NodeProto& n) {
  const bool max = n.op_type() == "ReduceMax";
  const bool last = input(n, 0).kind == Value::Kind::ChannelsLast;  // N,H,W,C: height and width are axes 1, 2
  const Value& x = last ? input(n, 0) : layer_input(n, 0);
  const std::vector<int64_t> axes = axes_of(n, 4);
  if (x.shape.size() != 3 || axes != (last ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{2, 3}))
    unsupported(n, fmt::format("only a {} over height and width (axes {}) of an image is supported", max ? "max" : "mean", last ? "1, 2 of N,H,W,C" : "2, 3"));
  Layer L = layer_of(max ? LayerType::GlobalMaxPool : LayerType::GlobalAvgPool);
  L.keep_dims = attr_int(n, "keepdims", 1) != 0;
  add_layer(n, L, {x.layer});
  if (last && L.keep_dims) values_[n.output(0)].kind = Value::Kind::ChannelsLast;  // N,1,1,C
}

void Importer::flatten(const onnx::NodeProto& n) {
  const Value& x = input(n, 0).kind == Value::Kind::ChannelsLast ? input(n, 0) : layer_input(n, 0);
  if (attr_int(n, "axis", 1) != 1) unsupported(n, "only axis 1 (keeping the batch axis) is supported");
  flatten_value(n, x);
}

// A Reshape to [batch, features]: the target's first entry is the batch (batch_entry), its
// second all features (their count or -1). Or a step of a channel shuffle (ops_channels.cpp).
void Importer::reshape(const onnx::NodeProto& n) {
  const Value& in = input(n, 0);
  if (in.kind == Value::Kind::Grouped) return ungroup(n, in);
  if (in.kind == Value::Kind::Constant) return reshape_constant(n, in.constant);
  const Value& x = in.kind == Value::Kind::ChannelsLast ? in : layer_input(n, 0);
  const Constant& target = constant_input(n, 1);
  int64_t features = 1;
  for (int64_t d : x.shape) features *= d;
  const auto& t = target.ints;
  if (target.is_float) unsupported(n, "its shape must be integers");
  if (attr_int(n, "allowzero", 0) != 0 && std::count(t.begin(), t.end(), 0)) unsupported(n, "allowzero with a 0 in the shape is not supported");
  if (t.size() == 5 && x.kind == Value::Kind::Layer) return group(n, x, t);
  if (t.size() == 4 && x.kind == Value::Kind::Layer && x.shape.size() == 1 && batch_entry(t) &&
      (t[1] == features || t[1] == -1) && t[2] == 1 && t[3] == 1) {
    add_layer(n, layer_of(LayerType::Unflatten), {x.layer});  // features to F,1,1: a squeeze-excite's gate from linear layers
    return;
  }
  const bool flattens = t.size() == 2 && batch_entry(t) && (t[1] == -1 || t[1] == features);
  if (!flattens)
    unsupported(n, "only a reshape that flattens each sample ([batch, -1]), one of features to [batch, F, 1, 1], or a channel shuffle's, is supported");
  flatten_value(n, x);
}

// Shape of a computed tensor: [batch, its per-sample shape...] (start and end of opset 15 too).
void Importer::shape(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  Constant c;
  c.is_float = false;
  c.ints = {kBatch};
  c.ints.insert(c.ints.end(), x.shape.begin(), x.shape.end());
  const int64_t rank = static_cast<int64_t>(c.ints.size());
  auto clamp_axis = [&](int64_t a) { return std::clamp(a < 0 ? a + rank : a, int64_t(0), rank); };
  int64_t start = clamp_axis(attr_int(n, "start", 0)), end = clamp_axis(attr_int(n, "end", rank));
  c.ints = std::vector<int64_t>(c.ints.begin() + start, c.ints.begin() + std::max(start, end));
  c.dims = {static_cast<int64_t>(c.ints.size())};
  set_output(n, constant_value(std::move(c)));
}

void Importer::gather(const onnx::NodeProto& n) {
  const Constant& data = constant_input(n, 0);
  const Constant& indices = constant_input(n, 1);
  if (data.is_float || indices.is_float || data.dims.size() > 1 || attr_int(n, "axis", 0) != 0)
    unsupported(n, "only picking entries of a shape vector is supported");
  Constant c;
  c.is_float = false;
  c.dims = indices.dims;
  for (int64_t i : indices.ints) {
    int64_t k = i < 0 ? i + data.numel() : i;
    if (k < 0 || k >= data.numel()) unsupported(n, fmt::format("index {} is outside the {} entries", i, data.numel()));
    c.ints.push_back(data.ints[k]);
  }
  set_output(n, constant_value(std::move(c)));
}

// Unsqueeze and Squeeze of shape arithmetic's small vectors: the values stay, as a vector.
void Importer::squeeze(const onnx::NodeProto& n) {
  const Value& x = input(n, 0);
  if (x.kind == Value::Kind::Layer) return squeeze_layer(n, x);
  if (x.kind != Value::Kind::Constant) unsupported(n, "only of a constant or of a computed tensor at axes 2, 3 is supported");
  // Of a constant: the same values with axes of size 1 put in (Unsqueeze) or taken out (Squeeze),
  // e.g. a per-channel PRelu slope shaped [C,1,1].
  Constant c = x.constant;
  const bool unsqueeze = n.op_type() == "Unsqueeze";
  const int64_t rank = static_cast<int64_t>(c.dims.size()) + (unsqueeze ? axes_count(n) : 0);
  const std::vector<int64_t> axes = axes_of(n, rank);
  if (std::adjacent_find(axes.begin(), axes.end()) != axes.end() || std::any_of(axes.begin(), axes.end(), [&](int64_t a) { return a < 0 || a >= rank; }))
    unsupported(n, fmt::format("axes {} out of range for a rank-{} result", fmt::join(axes, ","), rank));
  if (unsqueeze) {
    for (int64_t a : axes) c.dims.insert(c.dims.begin() + a, 1);
  } else {
    std::vector<int64_t> kept;
    for (int64_t d = 0; d < static_cast<int64_t>(c.dims.size()); ++d) {
      const bool named = axes.empty() ? c.dims[d] == 1 : std::binary_search(axes.begin(), axes.end(), d);
      if (named && c.dims[d] != 1) unsupported(n, fmt::format("axis {} has size {}, not 1", d, c.dims[d]));
      if (!named) kept.push_back(c.dims[d]);
    }
    c.dims = kept;
  }
  set_output(n, constant_value(std::move(c)));
}

// Unsqueeze of features at axes 2, 3 is an unflatten (F to F,1,1: a squeeze-excite's gate from
// linear layers); Squeeze of a C,1,1 image at axes 2, 3 a flatten.
void Importer::squeeze_layer(const onnx::NodeProto& n, const Value& x) {
  const bool unsqueeze = n.op_type() == "Unsqueeze";
  const int64_t rank = static_cast<int64_t>(x.shape.size()) + 1 + (unsqueeze ? axes_count(n) : 0);
  if (axes_of(n, rank) != std::vector<int64_t>{2, 3})
    unsupported(n, "of a computed tensor, only an Unsqueeze of features or a Squeeze of a C,1,1 image at axes 2, 3 is supported");
  if (unsqueeze && x.shape.size() == 1) {
    add_layer(n, layer_of(LayerType::Unflatten), {x.layer});
  } else if (!unsqueeze && x.shape.size() == 3 && x.shape[1] == 1 && x.shape[2] == 1) {
    flatten_value(n, x);
  } else {
    unsupported(n, fmt::format("{} of a tensor of shape {} per sample at axes 2, 3", n.op_type(), shape_string(x.shape)));
  }
}

// Expand of a C,1,1 layer output to [batch, C, H, W] (torch's expand_as in a squeeze-excite): an
// Expanded value, which a Mul reads as the C,1,1 tensor it broadcasts anyway.
void Importer::expand(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  const Constant& target = constant_input(n, 1);
  const auto& t = target.ints;
  if (target.is_float || x.shape.size() != 3 || x.shape[1] != 1 || x.shape[2] != 1 || t.size() != 4 || !batch_entry(t) || (t[1] != x.shape[0] && t[1] != 1) ||
      t[2] < 1 || t[3] < 1)
    unsupported(n, fmt::format("only an Expand of a C,1,1 tensor to [batch, C, H, W] is supported (here {} to {})", shape_string(x.shape),
                               fmt::join(t, ",")));
  Value v = x;
  v.kind = Value::Kind::Expanded;
  v.image = {x.shape[0], t[2], t[3]};
  set_output(n, std::move(v));
}

// Concat of computed tensors along channels is a concat layer; of constants, shape arithmetic.
void Importer::concat(const onnx::NodeProto& n) {
  if (input(n, 0).kind == Value::Kind::Constant) {
    Constant c;
    c.is_float = false;
    for (int k = 0; k < n.input_size(); ++k) {
      const Constant& part = constant_input(n, k);
      if (part.is_float) unsupported(n, "only integer vectors (shape arithmetic) may be joined as constants");
      c.ints.insert(c.ints.end(), part.ints.begin(), part.ints.end());
    }
    c.dims = {c.numel()};
    set_output(n, constant_value(std::move(c)));
    return;
  }
  std::vector<std::string> layers;
  size_t rank = 0;
  for (int k = 0; k < n.input_size(); ++k) {
    const Value& v = layer_input(n, k);
    layers.push_back(v.layer);
    rank = v.shape.size();
  }
  int64_t axis = attr_int(n, "axis", 1);
  if (axis < 0) axis += static_cast<int64_t>(rank) + 1;
  if (axis != 1) unsupported(n, "only a concat along channels (axis 1) is supported");
  const int most = spec_text::kMaxMergeInputs;
  if (layers.size() > static_cast<size_t>(most)) unsupported(n, fmt::format("a concat of at most {} tensors is supported", most));
  if (layers.size() == 1) {  // torch.cat([x]) (a DenseNet's first layer): x itself
    set_output(n, input(n, 0));
    return;
  }
  add_layer(n, layer_of(LayerType::Concat), layers);
}

void Importer::identity(const onnx::NodeProto& n) { set_output(n, input(n, 0)); }

// A Softmax (or LogSoftmax) over the classes that is the graph's output, read by nothing else:
// left out, so the model gives logits (what training, distillation and int8 calibration need;
// the runtime and the exports turn logits into probabilities themselves). The class ranking stays.
void Importer::output_softmax(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  const int64_t axis = attr_int(n, "axis", opset_ < 13 ? 1 : -1);
  if (n.output(0) != model_.graph().output(0).name() || uses(n.output(0)) != 1 || x.shape.size() != 1 || (axis != 1 && axis != -1))
    unsupported(n, "a softmax is read only as the model's last node, over the classes of [batch, classes] (it is then left out: shrink works on logits)");
  out_.output_softmax = n.op_type();
  set_output(n, x);
}

// Dropout is kept (it trains again); inference treats it as the identity.
void Importer::dropout(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  only_first_output_used(n);  // the mask
  Layer L = layer_of(LayerType::Dropout);
  L.dropout = attr_float(n, "ratio", 0.5f);
  if (has_input(n, 1)) {
    const Constant& r = constant_input(n, 1);
    if (!r.is_float || r.numel() != 1) unsupported(n, "its ratio must be a float scalar");
    L.dropout = as_double(r.floats[0]);
  }
  add_layer(n, L, {x.layer});
}

// A zero Pad of height and width, which the Conv or AveragePool reading it takes as padding.
// Pad-18's pads for the given axes only ([begins..., ends...] of those axes) as pads of all `rank`.
std::vector<int64_t> Importer::pads_of_all_axes(const onnx::NodeProto& n, const std::vector<int64_t>& pads, const std::vector<int64_t>& axes, int64_t rank) {
  const size_t k = axes.size();
  if (pads.size() != 2 * k) unsupported(n, fmt::format("{} pads for {} axes (two per axis)", pads.size(), k));
  std::vector<int64_t> all(2 * rank, 0);
  std::vector<bool> seen(rank, false);
  for (size_t i = 0; i < k; ++i) {
    const int64_t a = axes[i] < 0 ? axes[i] + rank : axes[i];
    if (a < 0 || a >= rank || seen[a]) unsupported(n, fmt::format("axes {} must be distinct axes of a rank-{} tensor", fmt::join(axes, ","), rank));
    seen[a] = true;
    all[a] = pads[i], all[a + rank] = pads[i + k];
  }
  return all;
}

void Importer::pad(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  if (attr_string(n, "mode", "constant") != "constant") unsupported(n, "only constant (zero) padding is supported");
  if (has_input(n, 2)) {
    const Constant& v = constant_input(n, 2);
    if (v.numel() != 1 || (v.is_float ? v.floats[0] != 0 : v.ints[0] != 0)) unsupported(n, "only zero padding is supported");
  }
  std::vector<int64_t> p = has_input(n, 1) ? constant_input(n, 1).ints : attr_ints(n, "pads");
  if (has_input(n, 3)) p = pads_of_all_axes(n, p, constant_input(n, 3).ints, static_cast<int64_t>(x.shape.size()) + 1);
  // [N, C, H, W] begins, then ends.
  if (x.shape.size() != 3 || p.size() != 8 || p[0] || p[1] || p[4] || p[5] || std::any_of(p.begin(), p.end(), [](int64_t v) { return v < 0; }))
    unsupported(n, "only padding the height and width of an image, by non-negative amounts, is supported");
  Value v = x;
  v.kind = Value::Kind::Padded;
  v.pads = Pads{p[2], p[3], p[6], p[7]};
  set_output(n, std::move(v));
}

// The input's normalization: Sub, Div, Mul and Add of constants on the model input before any
// layer ((x - mean) / std as a model shrink exported has it, x * scale + offset as Keras' Rescaling),
// in any order, before or after a channels-last input's Transpose. It becomes the checkpoint's
// normalization, not layers: x * s + o = (x - mean) / std with std = 1 / s and mean = -o / s.
void Importer::normalization(const onnx::NodeProto& n) {
  const std::string& op = n.op_type();
  const int at = input(n, 0).kind == Value::Kind::Constant ? 1 : 0;  // the input's side
  const Value& x = input(n, at);
  const Constant& c = constant_input(n, 1 - at);
  if ((x.kind != Value::Kind::Layer && x.kind != Value::Kind::ChannelsLast) || !x.layer.empty() || !spec_.layers.empty() || uses(n.input(at)) != 1 || (at == 1 && (op == "Sub" || op == "Div")))
    unsupported(n, "Add, Sub, Mul and Div of a constant are read only as the input's normalization ((input - mean) / std, or input * scale + "
                   "offset), before any other node and the only reader of the input");
  const std::vector<float> v = per_input_channel(n, x, c);
  if (norm_scale_.empty()) norm_scale_.assign(v.size(), 1.f), norm_offset_.assign(v.size(), 0.f);
  out_.mean.clear(), out_.std.clear();
  for (size_t k = 0; k < v.size(); ++k) {
    float &s = norm_scale_[k], &o = norm_offset_[k];
    if (op == "Sub" || op == "Add") {
      o += op == "Add" ? v[k] : -v[k];
    } else {
      const float f = op == "Mul" ? v[k] : 1.f / v[k];
      s *= f, o *= f;
    }
    if (!(s > 0) || !std::isfinite(s) || !std::isfinite(o)) unsupported(n, "the input's normalization must scale it by a positive, finite factor");
    out_.std.push_back(1.f / s), out_.mean.push_back(o == 0 ? 0.f : -o / s);
  }
  set_output(n, x);
}

// A normalization constant as one value per input channel (or feature): one value for all, or one
// per channel broadcast over C,H,W ([1,C,1,1]; [1,1,1,C] over a channels-last input), or per
// feature ([1,F]).
std::vector<float> Importer::per_input_channel(const onnx::NodeProto& n, const Value& x, const Constant& c) const {
  const bool image = spec_.input.size() == 3, last = x.kind == Value::Kind::ChannelsLast;
  const int64_t count = spec_.input[0];
  std::vector<int64_t> dims(c.dims.begin(), c.dims.end());
  while (!dims.empty() && dims.front() == 1) dims.erase(dims.begin());
  const std::vector<int64_t> expect = image && !last ? std::vector<int64_t>{count, 1, 1} : std::vector<int64_t>{count};
  if (!c.is_float || (c.numel() != 1 && dims != expect))
    unsupported(n, fmt::format("its constant must be one value, or one per input {} shaped [1,{}]", image ? "channel" : "feature",
                               !image ? std::to_string(count) : last ? fmt::format("1,1,{}", count) : fmt::format("{},1,1", count)));
  return c.numel() == 1 ? std::vector<float>(static_cast<size_t>(count), c.floats[0]) : c.floats;
}

}  // namespace shrink::onnx_import
