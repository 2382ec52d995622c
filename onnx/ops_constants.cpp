// Readers of ops on constants, computed at import: Constant, Cast, Transpose, Reshape, Slice and
// ConstantOfShape of constants (the pad and shape vectors exporters build in the graph, such as
// torch's legacy exporter's F.pad at opset 18: ConstantOfShape, Concat, Reshape, Slice with step
// -1, Transpose, Reshape, Cast).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "onnx/importer.h"

namespace shrink::onnx_import {

namespace {

// Row-major strides of `dims`.
std::vector<int64_t> strides_of(const std::vector<int64_t>& dims) {
  std::vector<int64_t> s(dims.size(), 1);
  for (int64_t a = static_cast<int64_t>(dims.size()) - 2; a >= 0; --a) s[a] = s[a + 1] * dims[a + 1];
  return s;
}

}  // namespace

// Cast of a constant to float (or double: shrink's constants are float) or to a 32- or 64-bit
// integer (toward zero, as ONNX Runtime casts). Other types would change values in ways not
// modelled here (float16 rounding, narrow integers' wrap-around): refused.
void Importer::cast(const onnx::NodeProto& n) {
  const Value& x = input(n, 0);
  if (x.kind != Value::Kind::Constant) unsupported(n, "only a cast of a constant is supported");
  const int64_t to = attr_int(n, "to", 0);
  Value v = x;
  Constant& c = v.constant;
  if (to == onnx::TensorProto::FLOAT || to == onnx::TensorProto::DOUBLE) {
    if (!c.is_float && std::find(c.ints.begin(), c.ints.end(), kBatch) != c.ints.end()) unsupported(n, "a cast of the batch size to float is not supported");
    if (!c.is_float) c.floats.assign(c.ints.begin(), c.ints.end()), c.ints.clear(), c.is_float = true;
  } else if (to == onnx::TensorProto::INT32 || to == onnx::TensorProto::INT64) {
    if (c.is_float) {
      const double most = to == onnx::TensorProto::INT32 ? 2147483647.0 : 9.2e18;
      for (float f : c.floats)
        if (!std::isfinite(f) || std::abs(f) > most) unsupported(n, fmt::format("{} does not fit the cast's integer type", f));
      for (float f : c.floats) c.ints.push_back(static_cast<int64_t>(std::trunc(f)));
      c.floats.clear(), c.is_float = false;
    }
  } else {
    const auto type = static_cast<onnx::TensorProto_DataType>(to);
    unsupported(n, fmt::format("a cast to {} is not supported (float, double, int32 and int64 are)",
                               onnx::TensorProto_DataType_IsValid(type) ? onnx::TensorProto_DataType_Name(type) : std::to_string(to)));
  }
  set_output(n, std::move(v));
}

void Importer::constant(const onnx::NodeProto& n) {
  Constant c;
  for (const auto& a : n.attribute()) {
    std::string what = fmt::format("{}: node '{}' (Constant)", path_, n.name());
    if (a.name() == "value") c = decode_tensor(a.t(), what, path_);
    else if (a.name() == "value_float") c.floats = {a.f()};
    else if (a.name() == "value_floats") c.floats.assign(a.floats().begin(), a.floats().end()), c.dims = {c.numel()};
    else if (a.name() == "value_int") c.is_float = false, c.ints = {a.i()};
    else if (a.name() == "value_ints") c.is_float = false, c.ints.assign(a.ints().begin(), a.ints().end()), c.dims = {c.numel()};
    else unsupported(n, fmt::format("a constant given as '{}' is not supported", a.name()));
  }
  if (n.attribute_size() != 1) unsupported(n, "a Constant holds exactly one value attribute");
  set_output(n, constant_value(std::move(c)));
}

// A Transpose of a constant (a Linear's weight as some exporters write it: Transpose, MatMul): the
// constant with its axes permuted (default: reversed, as ONNX says).
void Importer::transpose_constant(const onnx::NodeProto& n, const Constant& c) {
  const int64_t rank = static_cast<int64_t>(c.dims.size());
  std::vector<int64_t> perm = attr_ints(n, "perm");
  if (perm.empty())
    for (int64_t a = rank - 1; a >= 0; --a) perm.push_back(a);
  std::vector<int64_t> sorted = perm;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t a = 0; a < rank; ++a)
    if (static_cast<int64_t>(sorted.size()) != rank || sorted[a] != a) unsupported(n, fmt::format("perm {} is not a permutation of {} axes", fmt::join(perm, ","), rank));
  Constant t = c;
  const std::vector<int64_t> in_strides = strides_of(c.dims);
  for (int64_t a = 0; a < rank; ++a) t.dims[a] = c.dims[perm[a]];
  std::vector<int64_t> index(rank, 0);  // the output element's index, counted up in row-major order
  for (int64_t out = 0; out < c.numel(); ++out) {
    int64_t from = 0;
    for (int64_t a = 0; a < rank; ++a) from += index[a] * in_strides[perm[a]];
    if (c.is_float) t.floats[out] = c.floats[from];
    else t.ints[out] = c.ints[from];
    for (int64_t a = rank - 1; a >= 0 && ++index[a] == t.dims[a]; --a) index[a] = 0;
  }
  set_output(n, constant_value(std::move(t)));
}

// ConstantOfShape of a constant shape: a tensor of that shape, every entry the `value` attribute's
// one entry (default float 0).
void Importer::constant_of_shape(const onnx::NodeProto& n) {
  const Constant& shape = constant_input(n, 0);
  if (shape.is_float || shape.dims.size() > 1) unsupported(n, "its shape must be a vector of integers");
  Constant c;
  c.dims = shape.ints;
  int64_t count = 1;
  for (int64_t d : c.dims) {
    if (d < 0 || d > (int64_t(1) << 24)) unsupported(n, d == kBatch ? "a shape from the batch size is not supported" : fmt::format("dimension {} is not supported", d));
    count *= d;
    if (count > (int64_t(1) << 24)) unsupported(n, "a constant of more than 16M entries is not supported");
  }
  Constant fill;
  fill.floats = {0.0f};
  for (const auto& a : n.attribute())
    if (a.name() == "value") fill = decode_tensor(a.t(), fmt::format("{}: node '{}' (ConstantOfShape)", path_, n.name()), path_);
  if (fill.numel() != 1) unsupported(n, "its value must hold one entry");
  c.is_float = fill.is_float;
  if (c.is_float) c.floats.assign(count, fill.floats[0]);
  else c.ints.assign(count, fill.ints[0]);
  set_output(n, constant_value(std::move(c)));
}

// Reshape of a constant: the same entries under the target's dimensions (0 copies the input's
// dimension unless allowzero, -1 takes what is left).
void Importer::reshape_constant(const onnx::NodeProto& n, const Constant& c) {
  const Constant& target = constant_input(n, 1);
  if (target.is_float) unsupported(n, "its shape must be integers");
  Constant r = c;
  r.dims = target.ints;
  int64_t known = 1, unknown = -1;
  for (size_t a = 0; a < r.dims.size(); ++a) {
    if (r.dims[a] == 0 && attr_int(n, "allowzero", 0) == 0) {
      if (a >= c.dims.size()) unsupported(n, fmt::format("its 0 at axis {} copies no dimension of its {}-D input", a, c.dims.size()));
      r.dims[a] = c.dims[a];
    }
    if (r.dims[a] == -1 && unknown < 0) unknown = static_cast<int64_t>(a);
    else if (r.dims[a] < 0) unsupported(n, fmt::format("shape {} is not a valid reshape", fmt::join(target.ints, ",")));
    else known *= r.dims[a];
  }
  if (unknown >= 0 && known > 0) r.dims[unknown] = c.numel() / known, known *= r.dims[unknown];
  if (known != c.numel()) unsupported(n, fmt::format("shape {} does not hold its {} entries", fmt::join(target.ints, ","), c.numel()));
  set_output(n, constant_value(std::move(r)));
}

Importer::SliceArgs Importer::slice_args(const onnx::NodeProto& n) const {
  const Constant &starts = constant_input(n, 1), &ends = constant_input(n, 2);
  SliceArgs s{starts.ints, ends.ints, std::vector<int64_t>(starts.ints.size()), std::vector<int64_t>(starts.ints.size(), 1)};
  std::iota(s.axes.begin(), s.axes.end(), int64_t(0));
  if (has_input(n, 3)) s.axes = constant_input(n, 3).ints;
  if (has_input(n, 4)) s.steps = constant_input(n, 4).ints;
  if (starts.is_float || ends.is_float || s.starts.size() != s.axes.size() || s.ends.size() != s.axes.size() || s.steps.size() != s.axes.size())
    unsupported(n, "starts, ends, axes and steps must be integers, one of each per axis");
  return s;
}

// Slice of a constant along any axes, with any steps (ONNX's clamping of starts and ends, for
// negative steps too).
void Importer::slice_constant(const onnx::NodeProto& n, const Constant& c) {
  const int64_t rank = static_cast<int64_t>(c.dims.size());
  const SliceArgs s = slice_args(n);
  const std::vector<int64_t> &starts = s.starts, &ends = s.ends, &axes = s.axes, &steps = s.steps;
  std::vector<int64_t> first(rank, 0), step(rank, 1), dims = c.dims;
  for (size_t k = 0; k < axes.size(); ++k) {
    const int64_t axis = axes[k] < 0 ? axes[k] + rank : axes[k];
    if (axis < 0 || axis >= rank) unsupported(n, fmt::format("axis {} is outside the constant's {} dimensions", axes[k], rank));
    if (steps[k] == 0) unsupported(n, "a step of 0");
    const int64_t size = c.dims[axis];
    int64_t b = starts[k] < 0 ? starts[k] + size : starts[k], e = ends[k] < 0 ? ends[k] + size : ends[k];
    if (steps[k] > 0) b = std::clamp<int64_t>(b, 0, size), e = std::clamp<int64_t>(e, 0, size);
    else b = std::clamp<int64_t>(b, 0, size - 1), e = std::clamp<int64_t>(e, -1, size - 1);
    const int64_t count = steps[k] > 0 ? (e - b + steps[k] - 1) / steps[k] : (b - e - steps[k] - 1) / -steps[k];
    first[axis] = b, step[axis] = steps[k], dims[axis] = std::max<int64_t>(0, count);
  }
  Constant r;
  r.is_float = c.is_float, r.dims = dims;
  const std::vector<int64_t> in_strides = strides_of(c.dims);
  const int64_t total = std::accumulate(dims.begin(), dims.end(), int64_t(1), std::multiplies<>());
  std::vector<int64_t> index(rank, 0);  // the output entry's index, counted up in row-major order
  for (int64_t out = 0; out < total; ++out) {
    int64_t from = 0;
    for (int64_t a = 0; a < rank; ++a) from += (first[a] + index[a] * step[a]) * in_strides[a];
    if (c.is_float) r.floats.push_back(c.floats[from]);
    else r.ints.push_back(c.ints[from]);
    for (int64_t a = rank - 1; a >= 0 && ++index[a] == dims[a]; --a) index[a] = 0;
  }
  set_output(n, constant_value(std::move(r)));
}

}  // namespace shrink::onnx_import
