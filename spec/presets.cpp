// The preset architectures (docs/models.md), as spec text.
#include <fmt/format.h>

#include "spec/spec.h"

namespace shrink {

std::string preset_text(const std::string& name) {
  if (name == "usps_teacher")
    return "conv(64) bn relu conv(64) bn relu maxpool(2) conv(128) bn relu conv(128) bn relu maxpool(2) "
           "conv(256) bn relu gap linear(classes)";
  if (name == "usps_student") return "conv(16) bn relu maxpool(2) conv(32) bn relu maxpool(2) conv(64) bn relu gap linear(classes)";
  if (name == "lenet5")
    return "conv(6,5) relu maxpool(2) conv(16,5,p=0) relu maxpool(2) flatten linear(120) relu linear(84) relu linear(classes)";
  if (name == "mlp_300_100") return "flatten linear(300) relu linear(100) relu linear(classes)";
  if (name == "resnet20") {
    // CIFAR ResNet-20 (He et al. 2016): 3 stages of 3 basic blocks, 16/32/64 channels,
    // 1x1 projection shortcuts where the shape changes.
    std::string s = "stem=conv(16) bn r0=relu";
    std::string in = "r0";
    int block = 0;
    for (int stage = 0; stage < 3; ++stage) {
      int width = 16 << stage;
      for (int b = 0; b < 3; ++b) {
        ++block;
        int stride = (stage > 0 && b == 0) ? 2 : 1;
        std::string id = std::to_string(block);
        s += fmt::format(" b{0}c1=conv({1},s={2},from={3}) b{0}n1=bn relu b{0}c2=conv({1}) b{0}n2=bn", id, width, stride, in);
        if (stride != 1) s += fmt::format(" b{0}pc=conv({1},1,s=2,from={2}) b{0}pn=bn b{0}add=add(b{0}n2)", id, width, in);
        else s += fmt::format(" b{0}add=add({1})", id, in);
        s += fmt::format(" r{}=relu", id);
        in = "r" + id;
      }
    }
    return s + " gap linear(classes)";
  }
  return "";
}


std::vector<std::string> preset_names() { return {"usps_teacher", "usps_student", "lenet5", "mlp_300_100", "resnet20"}; }

}  // namespace shrink
