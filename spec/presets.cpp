// The preset architectures (docs/models.md), as spec text. Some take arguments, written like a
// layer's: mobilenet_v2(width=0.5).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "common/error.h"
#include "spec/spec.h"

namespace shrink {
namespace {

// A preset's key=value arguments, each read once with its default and range; what is left over
// is unknown.
class PresetArgs {
 public:
  PresetArgs(std::string text, std::string name, const std::string& inner) : text_(std::move(text)), name_(std::move(name)) {
    size_t start = 0;
    while (!inner.empty() && start <= inner.size()) {
      size_t comma = std::min(inner.find(',', start), inner.size());
      std::string arg = inner.substr(start, comma - start);
      start = comma + 1;
      size_t eq = arg.find('=');
      if (eq == std::string::npos || eq == 0) fail(fmt::format("argument '{}' is not key=value, e.g. {}(width=0.5)", arg, name_));
      std::string key = arg.substr(0, eq);
      if (!given_.emplace(key, arg.substr(eq + 1)).second) fail(fmt::format("argument '{}' given twice", key));
    }
  }
  // A number in (lo, hi].
  double real(const std::string& key, double fallback, double lo, double hi) {
    known_.push_back(key);
    auto it = given_.find(key);
    if (it == given_.end()) return fallback;
    std::string value = it->second;
    given_.erase(it);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (value.empty() || used != value.size()) fail(fmt::format("{}={} is not a number", key, value));
    if (!(v > lo && v <= hi)) fail(fmt::format("{}={} must be more than {} and at most {}", key, value, lo, hi));
    return v;
  }
  // After the preset has read its arguments: any other is an error.
  void no_others() const {
    if (given_.empty()) return;
    std::string takes = known_.empty() ? "it takes no arguments" : fmt::format("it takes: {}", fmt::join(known_, ", "));
    fail(fmt::format("unknown argument '{}' ({})", given_.begin()->first, takes));
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw UserError(fmt::format("model spec '{}': preset {}: {}", text_, name_, what));
  }
  std::string text_, name_;
  std::map<std::string, std::string> given_;
  std::vector<std::string> known_;
};

// ResNet of basic blocks (He et al. 2016) for small images: a 3x3 stride-1 stem and no stem
// pool; `stages` stages of `blocks` blocks, each stage doubling the width and (but the first)
// halving the size; 1x1 projection shortcuts with batchnorm where the shape changes.
std::string resnet_text(int64_t width, int stages, int blocks) {
  std::string s = fmt::format("stem=conv({}) bn r0=relu", width);
  std::string in = "r0";
  int64_t in_channels = width;
  int block = 0;
  for (int stage = 0; stage < stages; ++stage) {
    int64_t w = width << stage;
    for (int b = 0; b < blocks; ++b) {
      ++block;
      int stride = (stage > 0 && b == 0) ? 2 : 1;
      std::string id = std::to_string(block);
      s += fmt::format(" b{0}c1=conv({1},s={2},from={3}) b{0}n1=bn relu b{0}c2=conv({1}) b{0}n2=bn", id, w, stride, in);
      if (stride != 1 || in_channels != w) s += fmt::format(" b{0}pc=conv({1},1,s={2},from={3}) b{0}pn=bn b{0}add=add(b{0}n2)", id, w, stride, in);
      else s += fmt::format(" b{0}add=add({1})", id, in);
      s += fmt::format(" r{}=relu", id);
      in = "r" + id, in_channels = w;
    }
  }
  return s + " gap linear(classes)";
}

// torchvision's _make_divisible: v rounded to the nearest multiple of 8, at least 8, and not
// below 90% of v.
int64_t make_divisible(double v) {
  int64_t n = std::max<int64_t>(8, static_cast<int64_t>(v + 4) / 8 * 8);
  return n < 0.9 * v ? n + 8 : n;
}

// MobileNetV2 (Sandler et al. 2018) as torchvision builds it, CIFAR-style for 28x28..32x32
// images: the 3x3 stem and the first stride-2 stage (24 channels) have stride 1, so both sizes
// end at 4x4 before the global pool (torchvision's strides would leave 1x1). Inverted residual
// blocks: 1x1 expand (t times the channels; none when t = 1), 3x3 depthwise, 1x1 linear project,
// each with batchnorm, relu6 after the first two; a residual add where the shape stays.
std::string mobilenet_v2_text(double width) {
  struct Stage {
    int t, c, n, s;  // expansion, output channels, blocks, stride of the first
  };
  const Stage stages[] = {{1, 16, 1, 1}, {6, 24, 2, 1}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t in_channels = make_divisible(32 * width);
  std::string s = fmt::format("stem=conv({}) stem_bn=bn stem_relu=relu6", in_channels);
  std::string in = "stem_relu";
  int block = 0;
  for (const Stage& st : stages) {
    int64_t out = make_divisible(st.c * width);
    for (int i = 0; i < st.n; ++i) {
      std::string b = "b" + std::to_string(++block);
      int stride = i == 0 ? st.s : 1;
      if (st.t != 1) s += fmt::format(" {0}_expand=conv({1},1) {0}_expand_bn=bn {0}_expand_relu=relu6", b, in_channels * st.t);
      s += fmt::format(" {0}_dw=dwconv(s={1}) {0}_dw_bn=bn {0}_dw_relu=relu6 {0}_project=conv({2},1) {0}_project_bn=bn", b, stride, out);
      if (stride == 1 && in_channels == out) s += fmt::format(" {0}_add=add({1})", b, in);
      in = b + (stride == 1 && in_channels == out ? "_add" : "_project_bn");
      in_channels = out;
    }
  }
  // The last conv's 1280 channels grow with a width above 1 only (torchvision).
  return s + fmt::format(" head=conv({},1) head_bn=bn head_relu=relu6 pool=gap drop=dropout(0.2) fc=linear(classes)",
                         make_divisible(1280 * std::max(1.0, width)));
}

}  // namespace

std::string preset_text(const std::string& text) {
  size_t paren = text.find('(');
  std::string name = text.substr(0, paren);
  const auto names = preset_names();
  if (std::find(names.begin(), names.end(), name) == names.end()) return "";
  if (paren != std::string::npos && text.back() != ')') throw UserError(fmt::format("model spec '{}': expected ')' at the end", text));
  PresetArgs args(text, name, paren == std::string::npos ? "" : text.substr(paren + 1, text.size() - paren - 2));
  std::string s;
  if (name == "usps_teacher")
    s = "conv(64) bn relu conv(64) bn relu maxpool(2) conv(128) bn relu conv(128) bn relu maxpool(2) "
        "conv(256) bn relu gap linear(classes)";
  if (name == "usps_student") s = "conv(16) bn relu maxpool(2) conv(32) bn relu maxpool(2) conv(64) bn relu gap linear(classes)";
  if (name == "lenet5")
    s = "conv(6,5) relu maxpool(2) conv(16,5,p=0) relu maxpool(2) flatten linear(120) relu linear(84) relu linear(classes)";
  if (name == "mlp_300_100") s = "flatten linear(300) relu linear(100) relu linear(classes)";
  // CIFAR ResNet-20: 3 stages of 3 basic blocks, 16/32/64 channels.
  if (name == "resnet20") s = resnet_text(16, 3, 3);
  // ResNet-18 with a small-input stem: 4 stages of 2 basic blocks, 64/128/256/512 channels times width.
  if (name == "resnet18") s = resnet_text(std::max<int64_t>(1, std::llround(64 * args.real("width", 1, 0, 8))), 4, 2);
  if (name == "mobilenet_v2") s = mobilenet_v2_text(args.real("width", 1, 0, 8));
  args.no_others();
  return s;
}

std::vector<std::string> preset_names() {
  return {"usps_teacher", "usps_student", "lenet5", "mlp_300_100", "resnet20", "resnet18", "mobilenet_v2"};
}

}  // namespace shrink
