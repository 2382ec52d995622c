// Parsing spec text (docs/models.md) into a ModelSpec: tokens, each kind's arguments, names and inputs.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "common/error.h"
#include "spec/arguments.h"
#include "spec/spec.h"

namespace shrink {
namespace {

struct Token {
  std::string text;
  size_t column;  // 1-based, in the spec text
};

[[noreturn]] void token_error(const Token& t, const std::string& what) {
  throw UserError(fmt::format("model spec, column {} ('{}'): {}", t.column, t.text, what));
}

std::vector<Token> tokenize(const std::string& text) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < text.size()) {
    if (std::isspace(static_cast<unsigned char>(text[i]))) { ++i; continue; }
    size_t start = i;
    int depth = 0;
    while (i < text.size() && (depth > 0 || !std::isspace(static_cast<unsigned char>(text[i])))) {
      if (text[i] == '(') ++depth;
      if (text[i] == ')' && --depth < 0) break;
      ++i;
    }
    Token t{text.substr(start, i - start), start + 1};
    if (depth != 0 || (i < text.size() && text[i] == ')')) token_error(t, "unbalanced parentheses");
    t.text.erase(std::remove_if(t.text.begin(), t.text.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); }),
                 t.text.end());
    tokens.push_back(t);
  }
  return tokens;
}

bool is_identifier(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// The keys of a merging layer's inputs: a, b, c, ..., z, then in27, in28, ...
std::string input_key(int k) { return k < 26 ? std::string(1, static_cast<char>('a' + k)) : "in" + std::to_string(k + 1); }

// The keys a kind accepts, and which may be given without key= (in order).
struct KeyCollector {
  std::vector<std::string> positional;
  std::set<std::string> keys;
  void integer(const char* key, int64_t&, int64_t, unsigned how, const char*) { add(key, how & spec_text::kPositional); }
  void real(const char* key, double&, double, double, double, unsigned how) { add(key, how & spec_text::kPositional); }
  void flag(const char* key, bool&, bool, unsigned) { add(key, false); }
  void inputs(Layer&, int most) {
    for (int k = 0; k < most; ++k) add(input_key(k), true);
  }
  void add(const std::string& key, bool positional) {
    keys.insert(key);
    if (positional) this->positional.push_back(key);
  }
};

// Op names in spec text: each kind's, plus dwconv (a conv with one group per channel).
const std::map<std::string, LayerType>& op_names() {
  static const std::map<std::string, LayerType> names = [] {
    std::map<std::string, LayerType> m;
    for (const LayerTraits& t : kLayerTraits) m[t.op] = t.type;
    m["dwconv"] = LayerType::Conv2d;
    return m;
  }();
  return names;
}

int64_t parse_int(const Token& t, const std::string& key, const std::string& value, int64_t classes) {
  if (value == "classes") return classes;
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(value, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != value.size() || value.empty()) token_error(t, fmt::format("{}={} is not an integer", key, value));
  if (v < 0 || v > (int64_t(1) << 24)) token_error(t, fmt::format("{}={} is out of range", key, value));
  return v;
}

// Fills a layer's fields from its token's arguments (spec/arguments.h visits them).
struct ArgumentReader {
  const Token& t;
  std::map<std::string, std::string>& args;
  int64_t classes;
  bool bias_given = false;

  void integer(const char* key, int64_t& field, int64_t fallback, unsigned how, const char* missing) {
    if (!args.count(key) && (how & spec_text::kRequired)) token_error(t, missing);
    field = args.count(key) ? parse_int(t, key, args[key], classes) : fallback;
  }
  void real(const char* key, double& field, double fallback, double lo, double hi, unsigned) {
    field = fallback;
    if (args.count(key)) {
      size_t used = 0;
      try {
        field = std::stod(args[key], &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != args[key].size() || args[key].empty()) token_error(t, fmt::format("{}={} is not a number", key, args[key]));
    }
    if (!(field >= lo && field < hi)) token_error(t, fmt::format("{} must be in [{}, {})", key, lo, hi));
  }
  void flag(const char* key, bool& field, bool fallback, unsigned) {
    field = fallback;
    if (!args.count(key)) return;
    const std::string& v = args[key];
    if (v != "0" && v != "1" && v != "true" && v != "false") token_error(t, fmt::format("{} must be 0 or 1", key));
    field = v == "1" || v == "true";
    if (std::string(key) == "bias") bias_given = true;
  }
  std::string name_arg(const std::string& key) {  // a layer name; "" for the model input
    const std::string& v = args[key];
    if (v == "input") return std::string();
    if (!is_identifier(v)) token_error(t, fmt::format("{}={} is not a layer name", key, v));
    return v;
  }
  // add(a) adds the previous layer's output and a's, add(a,b) a's and b's; mul and concat alike
  // (concat takes up to `most` names).
  void inputs(Layer& L, int most) {
    std::vector<std::string> names;
    for (int k = 0; k < most && args.count(input_key(k)); ++k) names.push_back(name_arg(input_key(k)));
    for (int k = static_cast<int>(names.size()) + 1; k < most; ++k)
      if (args.count(input_key(k))) token_error(t, fmt::format("{}= is given without {}=", input_key(k), input_key(k - 1)));
    if (names.empty()) token_error(t, fmt::format("{} needs the layer(s) it reads, e.g. {}(conv1)", layer_type_name(L.type), layer_type_name(L.type)));
    if (names.size() == 1) names.insert(names.begin(), "<previous>");
    L.inputs = names;
  }
};

struct ParsedLayer {
  Layer layer;
  std::string op;
  bool bias_given = false;
  Token token;
};

ParsedLayer parse_token(const Token& t, int64_t classes) {
  ParsedLayer p{Layer{}, "", false, t};
  std::string body = t.text;
  size_t paren = body.find('(');
  size_t eq = body.find('=');
  if (eq != std::string::npos && eq < paren) {
    p.layer.name = body.substr(0, eq);
    if (!is_identifier(p.layer.name) || p.layer.name == "input") token_error(t, fmt::format("'{}' is not a valid layer name", p.layer.name));
    body = body.substr(eq + 1);
    paren = body.find('(');
  }
  p.op = body.substr(0, paren);
  auto kind = op_names().find(p.op);
  if (kind == op_names().end()) {
    std::string known;
    for (const auto& [name, type] : op_names()) known += (known.empty() ? "" : ", ") + name;
    token_error(t, fmt::format("unknown layer type '{}' (known: {})", p.op, known));
  }
  Layer& L = p.layer;
  L.type = kind->second;
  L.depthwise = p.op == "dwconv";
  KeyCollector def;
  spec_text::visit_arguments(L, def);
  std::map<std::string, std::string> args;
  if (paren != std::string::npos) {
    if (body.back() != ')') token_error(t, "expected ')' at the end");
    std::string inner = body.substr(paren + 1, body.size() - paren - 2);
    size_t position = 0;
    size_t start = 0;
    while (!inner.empty() && start <= inner.size()) {
      size_t comma = inner.find(',', start);
      std::string arg = inner.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      start = comma == std::string::npos ? inner.size() + 1 : comma + 1;
      if (arg.empty()) token_error(t, "empty argument");
      size_t aeq = arg.find('=');
      std::string key, value;
      if (aeq == std::string::npos) {
        if (position >= def.positional.size()) token_error(t, fmt::format("too many arguments for {}", p.op));
        key = def.positional[position++];
        value = arg;
      } else {
        key = arg.substr(0, aeq);
        value = arg.substr(aeq + 1);
        if (key != "from" && !def.keys.count(key)) token_error(t, fmt::format("unknown argument '{}' for {}", key, p.op));
      }
      if (args.count(key)) token_error(t, fmt::format("argument '{}' given twice", key));
      args[key] = value;
    }
  }
  ArgumentReader reader{t, args, classes, false};
  spec_text::visit_arguments(L, reader);
  p.bias_given = reader.bias_given;
  const bool pool = L.type == LayerType::MaxPool || L.type == LayerType::AvgPool;
  if (pool && !args.count("s") && !args.count("sw")) L.stride_w = L.kernel_w;  // as torch: the stride is the kernel along each axis
  for (int64_t* side : {&L.pad_top, &L.pad_left, &L.pad_bottom, &L.pad_right})
    if (*side == L.padding) *side = -1;  // one canonical form: a side that equals p is not stated
  if (L.kernel_w == L.kernel) L.kernel_w = -1;  // nor a width that equals the height
  if (L.stride_w == L.stride) L.stride_w = -1;
  if (L.padding_w == L.padding) L.padding_w = -1;
  if (L.kernel < 1 || L.kernel_width() < 1 || L.stride < 1 || L.stride_width() < 1 || L.dilation < 1 || (L.type == LayerType::Conv2d && (L.groups < 1 || (!L.depthwise && L.out < 1))) ||
      (L.type == LayerType::Linear && L.out < 1))
    token_error(t, "sizes must be at least 1");
  if (args.count("from")) {
    if (merges_inputs(L.type)) token_error(t, fmt::format("{} takes its inputs as arguments, not from=", p.op));
    L.inputs = {reader.name_arg("from")};
  }
  return p;
}

}  // namespace

ModelSpec parse_spec(const std::string& text, const std::vector<int64_t>& input, int64_t classes) {
  std::vector<Token> tokens = tokenize(text);
  // A preset is the whole spec: its name, with its arguments if any (mobilenet_v2(width=0.5)).
  if (tokens.size() == 1)
    if (std::string preset = preset_text(tokens[0].text); !preset.empty()) tokens = tokenize(preset);
  if (tokens.empty()) throw UserError("model spec is empty: give a preset (" + fmt::format("{}", fmt::join(preset_names(), ", ")) + ") or layers");
  std::vector<ParsedLayer> parsed;
  for (const Token& t : tokens) parsed.push_back(parse_token(t, classes));

  // Names: explicit ones as given, the rest op + running count (conv1, bn1, ...).
  std::map<std::string, int> counters;
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < parsed.size(); ++i) {
    Layer& L = parsed[i].layer;
    if (L.name.empty()) L.name = parsed[i].op + std::to_string(++counters[parsed[i].op]);
    else ++counters[parsed[i].op];
    if (index.count(L.name)) token_error(parsed[i].token, fmt::format("layer name '{}' is used twice", L.name));
    index[L.name] = i;
  }
  ModelSpec spec;
  spec.input = input;
  spec.classes = classes;
  for (size_t i = 0; i < parsed.size(); ++i) {
    Layer& L = parsed[i].layer;
    std::string previous = i == 0 ? "" : parsed[i - 1].layer.name;
    if (L.inputs.empty()) L.inputs = {previous};
    for (std::string& in : L.inputs) {
      if (in == "<previous>") in = previous;
      if (in.empty()) continue;
      auto it = index.find(in);
      if (it == index.end()) token_error(parsed[i].token, fmt::format("no layer named '{}'", in));
      if (it->second >= i) token_error(parsed[i].token, fmt::format("'{}' comes later; a layer can only read earlier layers", in));
    }
    // A bias right before batchnorm is cancelled by its mean subtraction: leave it out unless asked.
    if ((L.type == LayerType::Conv2d || L.type == LayerType::Linear) && !parsed[i].bias_given && i + 1 < parsed.size()) {
      const Layer& next = parsed[i + 1].layer;
      bool next_reads_this = next.inputs.empty() || (next.inputs.size() == 1 && next.inputs[0] == L.name);
      if (next.type == LayerType::BatchNorm && next_reads_this) L.bias = false;
    }
    spec.layers.push_back(L);
  }
  analyze(spec);
  return spec;
}

int ModelSpec::index_of(const std::string& name) const {
  for (size_t i = 0; i < layers.size(); ++i)
    if (layers[i].name == name) return static_cast<int>(i);
  return -1;
}

const Layer& ModelSpec::layer(const std::string& name) const {
  int i = index_of(name);
  if (i < 0) throw UserError(fmt::format("the model has no layer named '{}'", name));
  return layers[i];
}

}  // namespace shrink
