// maxpool, avgpool (padding counted in the average or not, as the layer says) and global average
// pooling, whose N,C,1,1 output is viewed as N,C unless it keeps its dims. Pooling keeps its
// input's type and grid (averages round onto it). The right and bottom padding come from the
// output size, so a ceil-mode pool's last window may pass the padding (spec/shapes.cpp refuses
// that for an average that counts the padding, which torch and oneDNN count differently). An
// int8 max pool runs as shrink's own kernel (max_pool_kernel).
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "runtime/loaded.h"
#include "runtime/ops/ops.h"

namespace shrink::rt::detail {
namespace {

// 16 bytes of int8 values as one vector register on any x86-64 (GCC's vector extension; an
// alias template cannot carry the attribute, GCC drops it on a dependent type).
using U8x16 = uint8_t __attribute__((vector_size(16)));
using S8x16 = int8_t __attribute__((vector_size(16)));
template <typename T>
using Vec16 = std::conditional_t<std::is_same_v<T, uint8_t>, U8x16, S8x16>;

template <typename T>
Vec16<T> load16(const T* p) {
  Vec16<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// out[0, kLanes * 16) = the max over the window rows y0..y1, columns x0..x1 of an image of width
// w and c channels (`image` points at its first pixel, already offset to the channels wanted):
// the kLanes vectors stay in registers until the window is done and are stored once, and each
// pixel's channels are read in order. Before, each window pixel was maxed into the output pixel in
// memory: the USPS teacher's two pools (64 and 128 channels) at batch 256 on 2 threads took
// 394-566 us against 271-290 now, the student's (16, 32) 90-127 against 53-86, and at batch 1
// 1.0 us against 0.5 (2-core EPYC, two runs, best of 5 profiles each). Going over the window once
// per block of 16 channels was as slow as before on 64 channels at batch 256.
template <int kLanes, typename T>
void window_max(T* out, const T* image, int64_t w, int64_t c, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  Vec16<T> m[kLanes];
  const T* first = image + (y0 * w + x0) * c;  // every window holds one input pixel at least
  for (int j = 0; j < kLanes; ++j) m[j] = load16(first + 16 * j);
  for (int64_t iy = y0; iy < y1; ++iy)
    for (int64_t ix = x0; ix < x1; ++ix) {
      const T* pixel = image + (iy * w + ix) * c;
      for (int j = 0; j < kLanes; ++j) {
        const Vec16<T> v = load16(pixel + 16 * j);
        m[j] = v > m[j] ? v : m[j];
      }
    }
  std::memcpy(out, m, sizeof m);
}

// The same for all c channels: 64 at a time, then 16, then one by one.
template <typename T>
void window_max(T* out, const T* image, int64_t w, int64_t c, int64_t y0, int64_t y1, int64_t x0, int64_t x1) {
  int64_t ch = 0;
  for (; ch + 64 <= c; ch += 64) window_max<4>(out + ch, image + ch, w, c, y0, y1, x0, x1);
  for (; ch + 16 <= c; ch += 16) window_max<1>(out + ch, image + ch, w, c, y0, y1, x0, x1);
  for (; ch < c; ++ch) {
    T m = image[(y0 * w + x0) * c + ch];
    for (int64_t iy = y0; iy < y1; ++iy)
      for (int64_t ix = x0; ix < x1; ++ix) m = std::max(m, image[(iy * w + ix) * c + ch]);
    out[ch] = m;
  }
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
    auto pool_row = [&](int64_t row) {  // one of the N * oh output rows
      const int64_t b = row / oh, y = row % oh;
      const int64_t top = y * win.stride[0] - win.padding[0], y0 = std::max<int64_t>(top, 0), y1 = std::min(top + win.kernel[0], h);
      T* out = out_base + row * ow * c;
      for (int64_t x = 0; x < ow; ++x, out += c) {
        const int64_t left = x * win.stride[1] - win.padding[1], x0 = std::max<int64_t>(left, 0), x1 = std::min(left + win.kernel[1], w);
        window_max(out, in + b * h * w * c, w, c, y0, y1, x0, x1);
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
