// Readers of the ops that move channels (a channel shuffle's Reshape-Transpose-Reshape, Slice and
// Split along channels), and the arithmetic of constants that computes their shapes and bounds.
#include <fmt/format.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>

#include "common/error.h"
#include "onnx/importer.h"

namespace shrink::onnx_import {

namespace {

// The entries of `t` (a Reshape target after its batch entry) with a -1 filled in so that they
// hold `count` values in all; unchanged when there is no -1 or the count does not divide.
std::vector<int64_t> filled(std::vector<int64_t> t, int64_t count) {
  if (std::count(t.begin(), t.end(), -1) != 1) return t;
  int64_t known = 1;
  for (int64_t d : t)
    if (d != -1 && (d < 1 || __builtin_mul_overflow(known, d, &known))) return t;
  if (count % known == 0) *std::find(t.begin(), t.end(), int64_t(-1)) = count / known;
  return t;
}

// An ONNX start or end along an axis of `size`: negative counts from the end; then clamped.
int64_t bound(int64_t v, int64_t size) { return std::clamp(v < 0 ? v + size : v, int64_t(0), size); }

}  // namespace

bool Importer::batch_entry(const std::vector<int64_t>& t) const {
  if (t.empty()) return false;
  if (t[0] == kBatch || t[0] == 0 || (file_batch_ > 0 && t[0] == file_batch_)) return true;
  return t[0] == -1 && std::count(t.begin(), t.end(), -1) == 1;
}

// Add, Sub, Mul and Div of two constants (shape arithmetic: torch computes a chunk's bounds as
// (C + 1) / 2 * k) give a constant; integers divide toward zero, as ONNX Runtime's do. With a
// computed tensor they are a layer, a bias or the input's normalization (ops.cpp, ops_graph.cpp).
void Importer::arithmetic(const onnx::NodeProto& n) {
  const Value& a = input(n, 0);
  const Value& b = input(n, 1);
  if (a.kind != Value::Kind::Constant || b.kind != Value::Kind::Constant) {
    const Value& other = a.kind == Value::Kind::Constant ? b : a;
    const bool on_input = other.layer.empty() && (other.kind == Value::Kind::Layer || other.kind == Value::Kind::ChannelsLast);
    if (on_input && (a.kind == Value::Kind::Constant || b.kind == Value::Kind::Constant)) return normalization(n);
    if (n.op_type() == "Add") return add(n);
    if (n.op_type() == "Mul") return mul(n);
    if (gelu_step(n)) return;  // a Div by sqrt 2 that starts a GELU
    return normalization(n);  // refused there: a Sub or Div between layers
  }
  const Constant &x = a.constant, &y = b.constant;
  if (x.is_float != y.is_float) unsupported(n, "its constants must have one type");
  if (x.numel() == 0 || y.numel() == 0) unsupported(n, "arithmetic on an empty constant is not supported");
  if (x.numel() != y.numel() && x.numel() != 1 && y.numel() != 1) unsupported(n, "only constants of equal size, or one value with many, are supported");
  const char op = n.op_type() == "Add" ? '+' : n.op_type() == "Sub" ? '-' : n.op_type() == "Mul" ? '*' : '/';
  Constant c;
  c.is_float = x.is_float;
  c.dims = x.numel() >= y.numel() ? x.dims : y.dims;
  const int64_t count = std::max(x.numel(), y.numel());
  for (int64_t k = 0; k < count; ++k) {
    const int64_t i = x.numel() == 1 ? 0 : k, j = y.numel() == 1 ? 0 : k;
    if (c.is_float) {
      const float p = x.floats[i], q = y.floats[j];
      c.floats.push_back(op == '+' ? p + q : op == '-' ? p - q : op == '*' ? p * q : p / q);
      continue;
    }
    const int64_t p = x.ints[i], q = y.ints[j];
    if (p == kBatch || q == kBatch) unsupported(n, "arithmetic on the batch size is not supported");
    if (op == '/' && q == 0) unsupported(n, "a division by zero");
    int64_t r = 0;
    const bool overflow = op == '+' ? __builtin_add_overflow(p, q, &r) : op == '-' ? __builtin_sub_overflow(p, q, &r)
                          : op == '*' ? __builtin_mul_overflow(p, q, &r) : (r = p / q, false);
    if (overflow || r == kBatch) unsupported(n, "an integer overflow");
    c.ints.push_back(r);
  }
  Value v;
  v.kind = Value::Kind::Constant;
  v.constant = std::move(c);
  set_output(n, std::move(v));
}

// Reshape of an image C,H,W to [batch, g, C/g, H, W]: the first step of a channel shuffle.
void Importer::group(const onnx::NodeProto& n, const Value& x, const std::vector<int64_t>& target) {
  const std::vector<int64_t>& s = x.shape;
  if (s.size() != 3 || !batch_entry(target)) unsupported(n, "a reshape to 5 dimensions is supported only as a channel shuffle's, of an image to [batch, g, C/g, H, W]");
  const auto t = filled({target.begin() + 1, target.end()}, s[0] * s[1] * s[2]);
  if (t[0] < 1 || s[0] % t[0] != 0 || t[1] != s[0] / t[0] || t[2] != s[1] || t[3] != s[2])
    unsupported(n, fmt::format("a reshape of {} to [batch, {}] is not a channel shuffle's [batch, g, C/g, H, W]", shape_string(s), fmt::join(target.begin() + 1, target.end(), ", ")));
  Value v = x;
  v.kind = Value::Kind::Grouped;
  v.groups = t[0];
  set_output(n, std::move(v));
}

// Transpose: a channel shuffle's swap of its two group axes, a switch between channels first and
// last (tf2onnx's Keras models), or of a constant.
void Importer::transpose(const onnx::NodeProto& n) {
  const Value& x = input(n, 0);
  if (x.kind == Value::Kind::Constant) return transpose_constant(n, x.constant);
  const std::vector<int64_t> perm = attr_ints(n, "perm");
  Value v = x;
  if (x.kind == Value::Kind::ChannelsLast && perm == std::vector<int64_t>{0, 3, 1, 2}) {
    v.kind = Value::Kind::Layer;  // back to channels first: the layer's own output
  } else if (x.kind == Value::Kind::Layer && x.shape.size() == 3 && perm == std::vector<int64_t>{0, 2, 3, 1}) {
    v.kind = Value::Kind::ChannelsLast;
  } else if (x.kind == Value::Kind::Grouped && !x.swapped && perm == std::vector<int64_t>{0, 2, 1, 3, 4}) {
    v.swapped = true;
  } else {
    unsupported(n, "only a channel shuffle's transpose (Reshape to [batch, g, C/g, H, W], Transpose(perm 0,2,1,3,4), Reshape back) and one "
                   "between channels first and last (perm 0,2,3,1 and back with 0,3,1,2) are supported");
  }
  set_output(n, std::move(v));
}

// Flatten (or a flattening Reshape) of `x`: a flatten layer, or nothing when it is flat already. Of
// a channels-last view, the features come in H,W,C order: FlatChannelsLast tells the Gemm or
// MatMul that reads them (linear_weight reorders its columns).
void Importer::flatten_value(const onnx::NodeProto& n, const Value& x) {
  if (x.shape.size() == 1) {
    values_[n.output(0)] = x;
    return;
  }
  add_layer(n, layer_of(LayerType::Flatten), {x.layer});
  if (x.kind != Value::Kind::ChannelsLast) return;
  Value& flat = values_[n.output(0)];
  flat.kind = Value::Kind::FlatChannelsLast;
  flat.image = x.shape;
}

// The input of a Gemm or MatMul: a flat layer output (or a channels-last one flattened).
const Value& Importer::linear_input(const onnx::NodeProto& n) const {
  const Value& a = input(n, 0);
  return a.kind == Value::Kind::FlatChannelsLast ? a : layer_input(n, 0);
}

// A linear layer's weight [out, in] for input `a`: columns of features flattened in H,W,C order
// (a FlatChannelsLast input) moved to the C,H,W order the layer's flatten gives.
std::vector<float> Importer::linear_weight(const Value& a, std::vector<float> w, int64_t out) const {
  if (a.kind != Value::Kind::FlatChannelsLast) return w;
  const int64_t C = a.image[0], H = a.image[1], W = a.image[2], in = C * H * W;
  if (static_cast<int64_t>(w.size()) != out * in) throw std::logic_error("linear_weight: a weight of another size than its input's features");
  std::vector<float> chw(w.size());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) chw[o * in + c * H * W + p] = w[o * in + p * C + c];
  return chw;
}

// Reshape of the swapped view back to [batch, C, H, W]: the channel shuffle is one layer.
void Importer::ungroup(const onnx::NodeProto& n, const Value& x) {
  const std::vector<int64_t>& s = x.shape;
  const Constant& target = constant_input(n, 1);
  if (!x.swapped || target.is_float || target.ints.size() != 4 || !batch_entry(target.ints) ||
      filled({target.ints.begin() + 1, target.ints.end()}, s[0] * s[1] * s[2]) != s)
    unsupported(n, fmt::format("only the end of a channel shuffle is supported here: the swapped [batch, C/g, g, H, W] back to [batch, {}]", fmt::join(s, ", ")));
  Layer L = layer_of(LayerType::Shuffle);
  L.groups = x.groups;
  add_layer(n, L, {x.layer});
}

// Slice of channels (axis 1, step 1; other axes whole): a slice layer, or nothing when it keeps all
// (a slice of a constant: ops_constants.cpp).
void Importer::slice(const onnx::NodeProto& n) {
  if (input(n, 0).kind == Value::Kind::Constant) return slice_constant(n, input(n, 0).constant);
  const Value& x = layer_input(n, 0);
  const int64_t rank = static_cast<int64_t>(x.shape.size()) + 1;
  const SliceArgs args = slice_args(n);
  const std::vector<int64_t> &axes = args.axes, &steps = args.steps;
  int64_t start = 0, end = x.shape[0];
  for (size_t k = 0; k < axes.size(); ++k) {
    const int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k], s = args.starts[k], e = args.ends[k];
    if (axis < 0 || axis >= rank) unsupported(n, fmt::format("axis {} is outside the input's {} dimensions", axes[k], rank));
    if (s == kBatch || e == kBatch) unsupported(n, "a bound from the batch size is not supported");
    if (steps[k] != 1) unsupported(n, "only steps of 1 are supported");
    const int64_t size = axis == 0 ? std::numeric_limits<int64_t>::max() : x.shape[axis - 1];
    const bool whole = axis == 0 ? s == 0 && e >= std::numeric_limits<int32_t>::max() : bound(s, size) == 0 && bound(e, size) == size;
    if (axis == 1) start = bound(s, size), end = bound(e, size);
    else if (!whole) unsupported(n, "only a slice of channels (axis 1) is supported");
  }
  if (end <= start) unsupported(n, "the slice keeps no channels");
  if (start == 0 && end == x.shape[0]) return set_output(n, x);
  Layer L = layer_of(LayerType::Slice);
  L.start = start, L.end = end;
  add_layer(n, L, {x.layer});
}

// Split along channels: one slice layer per output that is read.
void Importer::split(const onnx::NodeProto& n) {
  const Value& x = layer_input(n, 0);
  const int64_t rank = static_cast<int64_t>(x.shape.size()) + 1, channels = x.shape[0], parts = n.output_size();
  int64_t axis = attr_int(n, "axis", 0);
  if (axis < 0) axis += rank;
  if (axis != 1) unsupported(n, "only a split of channels (axis 1) is supported");
  std::vector<int64_t> sizes = has_input(n, 1) ? constant_input(n, 1).ints : attr_ints(n, "split");
  if (sizes.empty() && attr_int(n, "num_outputs", 0) > 0) {  // opset 18: parts of ceil(C / parts), the last one smaller
    if (attr_int(n, "num_outputs", 0) != parts) unsupported(n, fmt::format("num_outputs {} but {} outputs", attr_int(n, "num_outputs", 0), parts));
    const int64_t part = (channels + parts - 1) / parts;
    for (int64_t left = channels; left > 0; left -= part) sizes.push_back(std::min(part, left));
  } else if (sizes.empty()) {
    if (parts < 1 || channels % parts) unsupported(n, fmt::format("{} channels do not split into {} equal parts", channels, parts));
    sizes.assign(parts, channels / parts);
  }
  if (static_cast<int64_t>(sizes.size()) != parts || std::any_of(sizes.begin(), sizes.end(), [](int64_t v) { return v < 1; }) ||
      std::accumulate(sizes.begin(), sizes.end(), int64_t(0)) != channels)
    unsupported(n, fmt::format("split sizes {} must be positive, one per output, and add up to the {} channels", fmt::join(sizes, ","), channels));
  int64_t offset = 0;
  for (int k = 0; k < parts; offset += sizes[k++]) {
    if (n.output(k).empty()) continue;
    if (sizes[k] == channels) {
      values_[n.output(k)] = x;
      continue;
    }
    Layer L = layer_of(LayerType::Slice);
    L.start = offset, L.end = offset + sizes[k];
    add_layer(n, L, {x.layer}, k);
  }
}

}  // namespace shrink::onnx_import
