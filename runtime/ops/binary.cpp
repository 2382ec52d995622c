// add (the residual sum) and mul (SiLU, squeeze-excite): oneDNN's binary primitive. In int8 both
// operands are on their points' grids (a float one is quantized at its point first) and the result
// goes straight onto the output's grid, rounded and saturated into the output type:
//   add: dst = s_a / s_out * a + s_b / s_out * b
//   mul: dst = (s_a / s_out * a) * (s_b * b)
// mul also takes C,1,1 by C,H,W; oneDNN broadcasts only its second source, so that one goes second.
// An int8 add of two int8 tensors of one shape onto an int8 output (the residual sum) runs as
// shrink's own kernel instead (add_kernel), which rounds as the simulation and ONNX's
// DequantizeLinear-Add-QuantizeLinear do.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <utility>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {
namespace {

// The residual sum on int8 grids, computed as the simulation (and ONNX Runtime on the QDQ export:
// DequantizeLinear, Add, QuantizeLinear) compute it: each input dequantized (q * s, rounded to
// float), the float sum, ReLU when one is fused, then divided by the output's scale and rounded half
// to even onto its grid. oneDNN's binary folds the scales first (s_a / s_out * a + s_b / s_out * b):
// the same value, rounded differently, and a value near x.5 then lands one step away; deep nets
// (resnet18) carry such steps to a different top class. Separate multiplies and adds, never an FMA:
// this file is compiled with -ffp-contract=off (its AVX-512 clone has FMA instructions).
// Vectorized (runtime/CMakeLists.txt compiles this file with -fno-trapping-math): values in
// locals and restrict pointers, since a store through a uint8_t pointer may alias anything (with
// the scales read through a closure the compiler reloaded them every step), and no branch.
// One copy per ISA, picked at load by an ifunc: with GCC (clang takes no target_clones on a
// template) and not under ThreadSanitizer (its runtime is not up yet when ifunc resolvers run, and
// the process crashed at start).
#if defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define SHRINK_ISA_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define SHRINK_ISA_CLONES
#endif

template <typename A, typename B, typename Out>
SHRINK_ISA_CLONES void add_range(const A* __restrict a, const B* __restrict b, Out* __restrict out, int64_t begin, int64_t end, float sa, float sb, float so, bool relu) {
  constexpr float lo = std::is_signed_v<Out> ? -128.f : 0.f, hi = std::is_signed_v<Out> ? 127.f : 255.f;
  // Clamped to integer bounds, then rounded half to even (round_on_grid): the same as rounding first.
  const float floor = relu ? 0.f : -std::numeric_limits<float>::infinity();  // no branch in the loop
  for (int64_t i = begin; i < end; ++i) {
    const float x = static_cast<float>(a[i]) * sa;
    const float y = static_cast<float>(b[i]) * sb;
    const float v = std::max(x + y, floor);
    const float q = std::min(std::max(v / so, lo), hi);
    out[i] = static_cast<Out>(static_cast<int>(round_on_grid(q)));
  }
}

template <typename A, typename B, typename Out>
Kernel add_kernel(int a_slot, int b_slot, int out_slot, int64_t count, float sa, float sb, float so, bool relu, int threads) {
  return [=](const std::vector<memory>& slots) {
    const A* a = static_cast<const A*>(slots[a_slot].get_data_handle());
    const B* b = static_cast<const B*>(slots[b_slot].get_data_handle());
    Out* out = static_cast<Out*>(slots[out_slot].get_data_handle());
    // Not `omp parallel ... if`: even a parallel region the `if` turns off costs more than a small add.
    if (threads > 1 && count >= (1 << 16)) {
      const int64_t chunk = (count + threads - 1) / threads;
#pragma omp parallel for num_threads(threads)
      for (int t = 0; t < threads; ++t) add_range(a, b, out, t * chunk, std::min(count, (t + 1) * chunk), sa, sb, so, relu);
    } else {
      add_range(a, b, out, 0, count, sa, sb, so, relu);
    }
  };
}

template <typename A, typename B>
Kernel add_kernel_for(dt out, int a_slot, int b_slot, int out_slot, int64_t count, float sa, float sb, float so, bool relu, int threads) {
  return out == dt::u8 ? add_kernel<A, B, uint8_t>(a_slot, b_slot, out_slot, count, sa, sb, so, relu, threads)
                       : add_kernel<A, B, int8_t>(a_slot, b_slot, out_slot, count, sa, sb, so, relu, threads);
}

// The kernel for an int8 add of two same-shape int8 inputs onto an int8 output, with no activation
// or a ReLU after it; null otherwise (oneDNN's binary computes it).
std::optional<Act> int8_add(Builder& b, const OpContext& c, const Act& x, const Act& y) {
  const memory::desc xd = b.desc(x.slot), yd = b.desc(y.slot);  // copies: adding a slot below may move the slots
  if (!c.out_int8 || xd.dims() != yd.dims() || (c.activation && c.activation->type != LayerType::ReLU)) return std::nullopt;
  memory::desc dst_md = b.output_desc(c);
  auto plain = [](const memory::desc& d) { return d == memory::desc(d.dims(), d.data_type(), Builder::plain(d)); };
  if (dst_md.dims() != xd.dims() || !plain(xd) || !plain(yd) || !plain(dst_md)) return std::nullopt;  // one element order for all three
  int64_t count = 1;
  for (auto d : xd.dims()) count *= d;
  const bool relu = c.activation != nullptr;
  Act result{b.slot(dst_md), c.out_scale};
  const int threads = b.plan.threads;
  Kernel kernel = xd.data_type() == dt::u8
                      ? (yd.data_type() == dt::u8 ? add_kernel_for<uint8_t, uint8_t>(c.out_type, x.slot, y.slot, result.slot, count, x.scale, y.scale, c.out_scale, relu, threads)
                                                  : add_kernel_for<uint8_t, int8_t>(c.out_type, x.slot, y.slot, result.slot, count, x.scale, y.scale, c.out_scale, relu, threads))
                      : (yd.data_type() == dt::u8 ? add_kernel_for<int8_t, uint8_t>(c.out_type, x.slot, y.slot, result.slot, count, x.scale, y.scale, c.out_scale, relu, threads)
                                                  : add_kernel_for<int8_t, int8_t>(c.out_type, x.slot, y.slot, result.slot, count, x.scale, y.scale, c.out_scale, relu, threads));
  b.add(kernel, "add", {{DNNL_ARG_SRC_0, x.slot, {}}, {DNNL_ARG_SRC_1, y.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

Act binary(Builder& b, const OpContext& c, dnnl::algorithm algorithm) {
  Act x = c.inputs[0], y = c.inputs[1];
  if (c.int8) {
    if (x.scale == 0) x = b.quantize(x, c.points[0], c.layer.name);
    if (y.scale == 0) y = b.quantize(y, c.points[1], c.layer.name);
  } else {
    x = b.as_float(x), y = b.as_float(y);
  }
  if (b.desc(x.slot).dims() != dims_of(c.info.out_shape, b.batch())) std::swap(x, y);  // the broadcast one second
  if (c.int8 && algorithm == dnnl::algorithm::binary_add)
    if (auto sum = int8_add(b, c, x, y)) return *sum;
  memory::desc dst_md = b.output_desc(c);
  auto attr = user_scratchpad();
  attr.set_post_ops(c.post_ops);
  if (c.int8) {
    const float so = c.out_int8 ? c.out_scale : 1.0f;
    attr.set_scales(DNNL_ARG_SRC_0, 0, {x.scale / so});
    attr.set_scales(DNNL_ARG_SRC_1, 0, {algorithm == dnnl::algorithm::binary_add ? y.scale / so : y.scale});
  }
  dnnl::binary::desc d(algorithm, b.desc(x.slot), b.desc(y.slot), dst_md);
  dnnl::binary::primitive_desc pd(d, attr, b.engine());
  Act result{b.slot(dst_md), c.out_scale};
  b.add(dnnl::binary(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC_0, x.slot, {}}, {DNNL_ARG_SRC_1, y.slot, {}}, {DNNL_ARG_DST, result.slot, {}}});
  return result;
}

}  // namespace

Act build_add(Builder& b, const OpContext& c) { return binary(b, c, dnnl::algorithm::binary_add); }
Act build_mul(Builder& b, const OpContext& c) { return binary(b, c, dnnl::algorithm::binary_mul); }

}  // namespace shrink::rt::detail
