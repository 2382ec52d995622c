// maxpool, avgpool (padding counted in the average or not, as the layer says) and global average
// pooling, whose N,C,1,1 output is viewed as N,C unless it keeps its dims. Pooling keeps its
// input's type and grid (averages round onto it). The right and bottom padding come from the
// output size, so a ceil-mode pool's last window may pass the padding (spec/shapes.cpp refuses
// that for an average that counts the padding, which torch and oneDNN count differently). An
// int8 max pool runs as shrink's own kernel (max_pool_kernel).
#include <algorithm>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {
namespace {

// out = max(out, in) over c channels, in blocks of 16 bytes, so the compiler emits one vector max
// per block whatever the ISA (a loop over a run-time count cost more than the max itself here).
template <typename T>
void max_into(T* __restrict out, const T* __restrict in, int64_t c) {
  constexpr int64_t kBlock = 16 / sizeof(T);
  int64_t ch = 0;
  for (; ch + kBlock <= c; ch += kBlock)
    for (int64_t j = 0; j < kBlock; ++j) out[ch + j] = std::max(out[ch + j], in[ch + j]);
  for (; ch < c; ++ch) out[ch] = std::max(out[ch], in[ch]);
}

// out = in over c channels, the same way (std::copy called memmove for each 16-byte pixel: 0.7 us
// of the USPS student's 0.9 us first pool at batch 1).
template <typename T>
void copy_into(T* __restrict out, const T* __restrict in, int64_t c) {
  constexpr int64_t kBlock = 16 / sizeof(T);
  int64_t ch = 0;
  for (; ch + kBlock <= c; ch += kBlock)
    for (int64_t j = 0; j < kBlock; ++j) out[ch + j] = in[ch + j];
  for (; ch < c; ++ch) out[ch] = in[ch];
}

// A max pool over int8 NHWC values: each output pixel is the elementwise max of its window's
// input pixels (padding is skipped: it never wins). Exact, as oneDNN's is, and shorter: at batch 1
// oneDNN's int8 pooling primitive's fixed cost dominated the profile of small models (1.5 us of
// the USPS student's 9), and at batch 256 its kernel took 3x its float pooling's time on 16
// channels (it works in 64-channel vectors). Output rows are spread over the plan's threads.
template <typename T>
Kernel max_pool_kernel(int src, int dst, int64_t n, int64_t h, int64_t w, int64_t c, int64_t oh, int64_t ow, Layer::Window win, int threads) {
  return [=](const std::vector<memory>& slots) {
    const T* in = static_cast<const T*>(slots[src].get_data_handle());
    T* out_base = static_cast<T*>(slots[dst].get_data_handle());
    auto pool_row = [&](int64_t row) {
      const int64_t b = row / oh, y = row % oh;
      const int64_t top = y * win.stride[0] - win.padding[0], y0 = std::max<int64_t>(top, 0), y1 = std::min(top + win.kernel[0], h);
      T* out = out_base + row * ow * c;
      for (int64_t x = 0; x < ow; ++x, out += c) {
        const int64_t left = x * win.stride[1] - win.padding[1], x0 = std::max<int64_t>(left, 0), x1 = std::min(left + win.kernel[1], w);
        const T* first = in + ((b * h + y0) * w + x0) * c;  // every window holds one input pixel at least
        copy_into(out, first, c);
        for (int64_t iy = y0; iy < y1; ++iy)
          for (int64_t ix = iy == y0 ? x0 + 1 : x0; ix < x1; ++ix) max_into(out, in + ((b * h + iy) * w + ix) * c, c);
      }
    };
    // Not `omp parallel ... if`: even a parallel region the `if` turns off costs more than a small pool.
    if (threads > 1 && n * oh * ow * c >= (1 << 16)) {
#pragma omp parallel for num_threads(threads)
      for (int64_t row = 0; row < n * oh; ++row) pool_row(row);
    } else {
      for (int64_t row = 0; row < n * oh; ++row) pool_row(row);
    }
  };
}

}  // namespace

Act build_pool(Builder& b, const OpContext& c) {
  const Layer& L = c.layer;
  const Act src = c.inputs[0];
  const int64_t n = b.batch();
  memory::desc sd = b.desc(src.slot);
  const auto& is = c.info.in_shape;
  const auto& out_shape = c.info.out_shape;
  const bool global = L.type == LayerType::GlobalAvgPool || L.type == LayerType::GlobalMaxPool;
  const Layer::Window win = global ? Layer::Window{{is[1], is[2]}, {1, 1}, {0, 0}} : L.window();
  int64_t oh = global ? 1 : out_shape[1], ow = global ? 1 : out_shape[2];
  memory::desc dst_md({n, is[0], oh, ow}, sd.data_type(), tag::nhwc);
  const bool int8 = sd.data_type() == dt::u8 || sd.data_type() == dt::s8;
  if (L.type == LayerType::MaxPool && int8) {
    Act pooled{b.slot(dst_md), src.scale};
    auto kernel = sd.data_type() == dt::u8 ? max_pool_kernel<uint8_t> : max_pool_kernel<int8_t>;
    b.add(kernel(src.slot, pooled.slot, n, is[1], is[2], is[0], oh, ow, win, b.plan.threads), "max pool", {{DNNL_ARG_SRC, src.slot, {}}, {DNNL_ARG_DST, pooled.slot, {}}});
    return pooled;
  }
  auto alg = L.type == LayerType::MaxPool || L.type == LayerType::GlobalMaxPool ? dnnl::algorithm::pooling_max
             : global || L.include_pad     ? dnnl::algorithm::pooling_avg_include_padding
                                           : dnnl::algorithm::pooling_avg_exclude_padding;
  const auto& [k, s, p] = win;
  dnnl::pooling_forward::desc d(dnnl::prop_kind::forward_inference, alg, sd, dst_md, {s[0], s[1]}, {k[0], k[1]}, {p[0], p[1]},
                                {(oh - 1) * s[0] + k[0] - is[1] - p[0], (ow - 1) * s[1] + k[1] - is[2] - p[1]});
  dnnl::pooling_forward::primitive_desc pd(d, user_scratchpad(), b.engine());
  Act pooled{b.slot(dst_md), src.scale};
  b.add(dnnl::pooling_forward(pd), pd.scratchpad_desc(), {{DNNL_ARG_SRC, src.slot, {}}, {DNNL_ARG_DST, pooled.slot, {}}});
  if (global && !L.keep_dims) pooled.slot = b.alias(pooled.slot, memory::desc({n, is[0]}, sd.data_type(), tag::nc));
  return pooled;
}

}  // namespace shrink::rt::detail
