// Shapes, parameter counts and MACs of every layer, checked as they are worked out.
#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "common/error.h"
#include "spec/spec.h"

namespace shrink {

ModelCost total_cost(const ModelSpec& spec) {
  ModelCost c;
  for (const auto& i : analyze(spec)) c.params += i.params, c.macs += i.macs;
  return c;
}

int64_t pool_windows(const Layer& L, int64_t size, int d) {
  const Layer::Window win = L.window();
  const int64_t k = win.kernel[d], s = win.stride[d], p = win.padding[d];
  const int64_t room = size + 2 * p - k;
  int64_t n = (L.ceil ? room + s - 1 : room) / s + 1;
  if (L.ceil && (n - 1) * s >= size + p) --n;
  return n;
}

std::vector<LayerInfo> analyze(const ModelSpec& spec) {
  if (spec.input.size() != 3 && spec.input.size() != 1)
    throw UserError(fmt::format("model input shape {} must be C,H,W or a feature count", shape_string(spec.input)));
  std::vector<LayerInfo> info(spec.layers.size());
  std::map<std::string, std::vector<int64_t>> shapes;
  shapes[""] = spec.input;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    LayerInfo& I = info[i];
    I.in_shape = shapes.at(L.inputs[0]);
    const auto& s = I.in_shape;
    auto fail = [&](const std::string& what) {
      throw UserError(fmt::format("model spec, layer {} ({}): {}", L.name, shape_string(s), what));
    };
    auto need_image = [&] {
      if (s.size() != 3) fail("needs an image input C,H,W");
    };
    // Products of sizes from a file or a spec string: too large is an error, never an overflow.
    auto product = [&](std::initializer_list<int64_t> factors) {
      int64_t p = 1;
      for (int64_t f : factors)
        if (f < 0 || __builtin_mul_overflow(p, f, &p) || p > (int64_t(1) << 53)) fail("sizes too large");
      return p;
    };
    int64_t numel = 1;
    for (int64_t d : s) numel = product({numel, d});
    switch (L.type) {
      case LayerType::Conv2d: {
        need_image();
        int64_t in_c = s[0];
        int64_t out_c = L.depthwise ? in_c : L.out;
        int64_t groups = L.depthwise ? in_c : L.groups;
        if (in_c % groups || out_c % groups) fail(fmt::format("groups={} must divide {} input and {} output channels", groups, in_c, out_c));
        const Pads P = L.pads();
        const int64_t kh = L.kernel, kw = L.kernel_width();
        // the dilated kernel's extent along height and width
        int64_t span_h = product({L.dilation, kh}) - L.dilation + 1, span_w = product({L.dilation, kw}) - L.dilation + 1;
        product({4, std::max({P.top, P.left, P.bottom, P.right}), s[1], s[2], std::max(span_h, span_w)});  // every sum below fits
        int64_t h = s[1] + P.top + P.bottom, w = s[2] + P.left + P.right;
        if (h < span_h || w < span_w) fail("kernel is larger than the padded input");
        int64_t oh = (h - span_h) / L.stride + 1, ow = (w - span_w) / L.stride_width() + 1;
        I.out_shape = {out_c, oh, ow};
        I.weight_shape = {out_c, in_c / groups, kh, kw};
        I.params = product({out_c, in_c / groups, kh, kw}) + (L.bias ? out_c : 0);
        I.macs = product({oh, ow, out_c, in_c / groups, kh, kw});
        break;
      }
      case LayerType::Linear:
        I.out_shape = {L.out};
        I.weight_shape = {L.out, numel};
        I.params = product({numel, L.out}) + (L.bias ? L.out : 0);
        I.macs = product({numel, L.out});
        break;
      case LayerType::BatchNorm:
        if (s.size() != 3 && s.size() != 1) fail("batchnorm needs C,H,W or features");
        I.out_shape = s;
        I.params = 2 * s[0];
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool: {
        need_image();
        auto windows = [&](int d) {
          const int64_t size = s[1 + d], k = L.window().kernel[d], pad = L.window().padding[d];
          const char* axis = d == 0 ? "height" : "width";
          if (pad < 0 || pad * 2 > k) fail(fmt::format("padding {} along the {} must be at most half the kernel's {} {}", pad, axis, axis, k));
          product({2, pad, size, k});
          if (size + 2 * pad < k) fail("kernel is larger than the padded input");
          const int64_t n = pool_windows(L, size, d);
          // torch divides by the window clipped to the padded image, oneDNN by the whole kernel:
          // they differ only for a window that passes the padding.
          if (L.type == LayerType::AvgPool && L.include_pad && (n - 1) * L.window().stride[d] + k > size + 2 * pad)
            fail("avgpool with ceil=1 and include_pad=1 has a window past the padding, which runtimes average differently; "
                 "use include_pad=0 or ceil=0");
          return n;
        };
        I.out_shape = {s[0], windows(0), windows(1)};
        break;
      }
      case LayerType::GlobalAvgPool:
      case LayerType::GlobalMaxPool:
        need_image();
        I.out_shape = L.keep_dims ? std::vector<int64_t>{s[0], 1, 1} : std::vector<int64_t>{s[0]};
        break;
      case LayerType::Flatten: I.out_shape = {numel}; break;
      case LayerType::PReLU:
        I.out_shape = s;
        I.weight_shape = {L.per_channel ? s[0] : 1};
        I.params = I.weight_shape[0];
        break;
      case LayerType::Unflatten:
        if (s.size() != 1) fail("unflatten needs features (a flat input), e.g. after linear");
        I.out_shape = {s[0], 1, 1};
        break;
      case LayerType::Add: {
        const auto& other = shapes.at(L.inputs[1]);
        if (other != s) fail(fmt::format("add of {} and {} ({}): shapes differ", L.inputs[0], L.inputs[1], shape_string(other)));
        I.out_shape = s;
        break;
      }
      case LayerType::Mul: {
        // Equal shapes, or C,1,1 scaling every pixel of C,H,W (squeeze-excite).
        const auto& other = shapes.at(L.inputs[1]);
        auto scales = [](const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
          return a.size() == 3 && b.size() == 3 && a[0] == b[0] && a[1] == 1 && a[2] == 1;
        };
        if (other != s && !scales(other, s) && !scales(s, other))
          fail(fmt::format("mul of {} and {} ({}): shapes must be equal, or one C,1,1 and the other C,H,W", L.inputs[0], L.inputs[1], shape_string(other)));
        I.out_shape = scales(s, other) ? other : s;
        break;
      }
      case LayerType::Concat: {
        I.out_shape = s;
        for (size_t k = 1; k < L.inputs.size(); ++k) {
          const auto& other = shapes.at(L.inputs[k]);
          if (other.size() != s.size() || !std::equal(s.begin() + 1, s.end(), other.begin() + 1))
            fail(fmt::format("concat of {} and {} ({}): only the channels may differ", L.inputs[0], L.inputs[k], shape_string(other)));
          I.out_shape[0] = product({1, I.out_shape[0] + other[0]});
        }
        break;
      }
      case LayerType::Shuffle:
        need_image();
        if (L.groups < 1 || s[0] % L.groups) fail(fmt::format("shuffle groups={} must divide its {} channels", L.groups, s[0]));
        I.out_shape = s;
        break;
      case LayerType::Slice:
        if (L.start < 0 || L.end <= L.start || L.end > s[0])
          fail(fmt::format("slice({}, {}) must keep channels 0 <= start < end <= {}", L.start, L.end, s[0]));
        I.out_shape = s;
        I.out_shape[0] = L.end - L.start;
        break;
      case LayerType::ReLU:
      case LayerType::ReLU6:
      case LayerType::HardSwish:
      case LayerType::LeakyReLU:
      case LayerType::Tanh:
      case LayerType::Elu:
      case LayerType::Softplus:
      case LayerType::Mish:
      case LayerType::Gelu:
      case LayerType::Sigmoid:
      case LayerType::HardSigmoid:
      case LayerType::Dropout: I.out_shape = s; break;
    }
    shapes[L.name] = I.out_shape;
  }
  if (spec.classes > 0 && info.back().out_shape != std::vector<int64_t>{spec.classes})
    throw UserError(fmt::format("model spec: the output has shape {} but the data has {} classes", shape_string(info.back().out_shape), spec.classes));
  return info;
}

}  // namespace shrink
