// Shapes as text: {1,16,16} <-> "1x16x16" / "1,16,16". Header-only, no torch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"

namespace shrink {

inline std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "x" : "") + std::to_string(shape[i]);
  return s;
}

// Parses "1,16,16" or "1x16x16"; every dimension must be a positive integer.
inline std::vector<int64_t> parse_shape(const std::string& text) {
  std::vector<int64_t> shape;
  size_t start = 0;
  while (!text.empty()) {
    size_t sep = text.find_first_of(",x", start);
    std::string part = text.substr(start, sep == std::string::npos ? std::string::npos : sep - start);
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(part, &used);
    } catch (const std::exception&) {
    }
    if (used != part.size() || v < 1) throw UserError("'" + text + "' is not a shape like 1,16,16");
    shape.push_back(v);
    if (sep == std::string::npos) break;
    start = sep + 1;
  }
  if (shape.empty()) throw UserError("empty shape");
  return shape;
}

}  // namespace shrink
