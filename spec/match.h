// Choosing layers by name: what prune, quantize and the feature losses select layers with.
#pragma once
#include <string>
#include <vector>

#include "spec/spec.h"

namespace shrink {

// Layer names matching comma-separated patterns: exact names, globs (conv*, *linear?) or
// regular expressions written re:PATTERN. A pattern that matches no layer is a UserError
// starting with `what`.
std::vector<std::string> match_layers(const ModelSpec& spec, const std::string& patterns, const std::string& what);
// The layers with weights (conv and linear), in spec order.
std::vector<std::string> weight_layers(const ModelSpec& spec);

}  // namespace shrink
