#include "spec/match.h"

#include <fmt/format.h>
#include <fnmatch.h>

#include <algorithm>
#include <regex>
#include <sstream>

#include "common/error.h"

namespace shrink {

std::vector<std::string> match_layers(const ModelSpec& spec, const std::string& patterns, const std::string& what) {
  std::vector<std::string> out;
  std::stringstream in(patterns);
  std::string p;
  while (std::getline(in, p, ',')) {
    p.erase(0, p.find_first_not_of(" \t"));
    p.erase(p.find_last_not_of(" \t") + 1);
    if (p.empty()) continue;
    bool any = false;
    std::regex re;
    bool is_regex = p.rfind("re:", 0) == 0;
    if (is_regex) {
      try {
        re = std::regex(p.substr(3));
      } catch (const std::regex_error&) {
        throw UserError(fmt::format("{}: '{}' is not a valid regular expression", what, p.substr(3)));
      }
    }
    for (const Layer& L : spec.layers) {
      bool hit = is_regex ? std::regex_match(L.name, re) : fnmatch(p.c_str(), L.name.c_str(), 0) == 0;
      if (!hit) continue;
      any = true;
      if (std::find(out.begin(), out.end(), L.name) == out.end()) out.push_back(L.name);
    }
    if (!any)
      throw UserError(fmt::format("{}: '{}' matches no layer of the model{}", what, p, is_regex ? " (a re: pattern must match the whole name, e.g. re:bn.*)" : ""));
  }
  return out;
}

std::vector<std::string> weight_layers(const ModelSpec& spec) {
  std::vector<std::string> out;
  for (const Layer& L : spec.layers)
    if (has_weights(L.type)) out.push_back(L.name);
  return out;
}

}  // namespace shrink
