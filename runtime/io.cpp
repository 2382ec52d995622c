// A call's data at the plan's edges: the caller's raw floats into the plan's input slot, and the
// outputs a plan keeps (Model::predict with names) back into the caller's N,C,H,W floats.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "runtime/loaded.h"

namespace shrink::rt::detail {

// The caller's raw N,C,H,W (or N,F) floats into the plan's input: normalized ((x - mean[c]) /
// std[c]), images transposed to NHWC, and for an int8 model rounded onto the input's grid by
// division, round(x / s), as the simulation and ONNX Runtime's QuantizeLinear do, and saturated.
// One plane (a channel of an image, or a whole feature vector) at a time, with its constants
// hoisted, so a one-channel float input is one loop the compiler vectorizes (at batch 256 the
// element-by-element form took a tenth of the USPS student's forward).
namespace {
template <typename T, typename Convert>
void write_plane(const float* in, T* out, int64_t count, int64_t stride, const float* mean, const float* stdev, bool per_element, Convert convert) {
  if (!mean) {
    for (int64_t p = 0; p < count; ++p) out[p * stride] = convert(in[p]);
  } else if (!per_element) {
    const float m = *mean, sd = *stdev;
    if (stride == 1)
      for (int64_t p = 0; p < count; ++p) out[p] = convert((in[p] - m) / sd);
    else
      for (int64_t p = 0; p < count; ++p) out[p * stride] = convert((in[p] - m) / sd);
  } else {
    for (int64_t p = 0; p < count; ++p) out[p * stride] = convert((in[p] - mean[p]) / stdev[p]);
  }
}
}  // namespace

void Loaded::write_input(const float* input, int64_t batch, memory::data_type type, void* dst) const {
  const std::vector<float>& mean = meta.normalization.mean;
  const std::vector<float>& stdev = meta.normalization.std;
  const bool image = spec.input.size() == 3;
  const int64_t channels = image ? spec.input[0] : 1, per = image ? spec.input[0] * spec.input[1] * spec.input[2] : spec.input[0];
  const int64_t plane = per / channels;  // images: one mean and std per channel; feature vectors: one for all, or one per feature
  const bool per_element = !image && mean.size() > 1;
  const float s = type == memory::data_type::f32 ? 1.f : static_cast<float>(point_scale(kInputPoint)->scale);
  const float lo = type == memory::data_type::s8 ? -128.f : 0.f, hi = type == memory::data_type::s8 ? 127.f : 255.f;
  // round(v / s) half to even, saturated (clamping first changes nothing); NaN: 0, not undefined.
  auto on_grid = [&](float v) { return std::isnan(v) ? 0.f : round_on_grid(std::clamp(v / s, lo, hi)); };
  for (int64_t n = 0; n < batch; ++n)
    for (int64_t c = 0; c < channels; ++c) {
      const float* in = input + n * per + c * plane;
      const int64_t to = n * per + c;  // N,C,H,W -> N,H,W,C: the plane's values lie `channels` apart
      const float* m = mean.empty() ? nullptr : mean.data() + (image ? c : 0);
      const float* sd = mean.empty() ? nullptr : stdev.data() + (image ? c : 0);
      switch (type) {
        case memory::data_type::s8:
          write_plane(in, static_cast<int8_t*>(dst) + to, plane, channels, m, sd, per_element, [&](float v) { return static_cast<int8_t>(on_grid(v)); });
          break;
        case memory::data_type::u8:
          write_plane(in, static_cast<uint8_t*>(dst) + to, plane, channels, m, sd, per_element, [&](float v) { return static_cast<uint8_t>(on_grid(v)); });
          break;
        default: write_plane(in, static_cast<float*>(dst) + to, plane, channels, m, sd, per_element, [](float v) { return v; });
      }
    }
}

// A kept output (NHWC or NC; float or on an int8 grid) as N,C,H,W (or N,F) floats.
void Loaded::read_kept(const Plan& plan, const Binding& bound, std::vector<std::vector<float>>& values) const {
  values.clear();
  for (const std::string& name : plan.kept) {
    auto named_it = std::find_if(plan.named.begin(), plan.named.end(), [&](const Plan::Named& n) { return n.name == name; });
    if (named_it == plan.named.end()) throw std::logic_error("read_kept: the plan forms no output " + name);  // Model::predict checked
    const Plan::Named& named = *named_it;
    const memory& m = bound.slots[named.act.slot];
    const memory::dims d = m.get_desc().dims();
    const int64_t n = d[0], c = d[1], plane = d.size() == 4 ? d[2] * d[3] : 1;
    const float scale = named.act.scale > 0 ? named.act.scale : 1.f;
    const auto type = m.get_desc().data_type();
    const void* data = m.get_data_handle();
    auto value = [&](int64_t i) -> float {
      switch (type) {
        case memory::data_type::u8: return scale * static_cast<const uint8_t*>(data)[i];
        case memory::data_type::s8: return scale * static_cast<const int8_t*>(data)[i];
        default: return static_cast<const float*>(data)[i];
      }
    };
    std::vector<float>& out = values.emplace_back(n * c * plane);
    for (int64_t b = 0; b < n; ++b)
      for (int64_t p = 0; p < plane; ++p)
        for (int64_t k = 0; k < c; ++k) out[(b * c + k) * plane + p] = value((b * plane + p) * c + k);  // N,H,W,C -> N,C,H,W
  }
}

}  // namespace shrink::rt::detail
