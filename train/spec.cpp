#include "train/spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "common/error.h"

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

struct OpDef {
  LayerType type;
  std::vector<std::string> positional;  // names of positional arguments, in order
  std::set<std::string> keys;           // every accepted key (from= is always accepted)
};

const std::map<std::string, OpDef>& op_table() {
  static const std::map<std::string, OpDef> table = {
      {"conv", {LayerType::Conv2d, {"out", "k"}, {"out", "k", "s", "p", "g", "bias"}}},
      {"dwconv", {LayerType::Conv2d, {"k"}, {"k", "s", "p", "bias"}}},
      {"linear", {LayerType::Linear, {"out"}, {"out", "bias"}}},
      {"bn", {LayerType::BatchNorm, {}, {}}},
      {"relu", {LayerType::ReLU, {}, {}}},
      {"relu6", {LayerType::ReLU6, {}, {}}},
      {"maxpool", {LayerType::MaxPool, {"k", "s"}, {"k", "s", "p"}}},
      {"avgpool", {LayerType::AvgPool, {"k", "s"}, {"k", "s", "p"}}},
      {"gap", {LayerType::GlobalAvgPool, {}, {}}},
      {"flatten", {LayerType::Flatten, {}, {}}},
      {"dropout", {LayerType::Dropout, {"p"}, {"p"}}},
      {"add", {LayerType::Add, {"a", "b"}, {"a", "b"}}},
  };
  return table;
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
  auto def = op_table().find(p.op);
  if (def == op_table().end()) {
    std::string known;
    for (const auto& [name, d] : op_table()) known += (known.empty() ? "" : ", ") + name;
    token_error(t, fmt::format("unknown layer type '{}' (known: {})", p.op, known));
  }
  Layer& L = p.layer;
  L.type = def->second.type;
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
        if (position >= def->second.positional.size()) token_error(t, fmt::format("too many arguments for {}", p.op));
        key = def->second.positional[position++];
        value = arg;
      } else {
        key = arg.substr(0, aeq);
        value = arg.substr(aeq + 1);
        if (key != "from" && !def->second.keys.count(key)) token_error(t, fmt::format("unknown argument '{}' for {}", key, p.op));
      }
      if (args.count(key)) token_error(t, fmt::format("argument '{}' given twice", key));
      args[key] = value;
    }
  }
  auto integer = [&](const std::string& key, int64_t fallback) {
    return args.count(key) ? parse_int(t, key, args[key], classes) : fallback;
  };
  auto name_arg = [&](const std::string& key) {
    const std::string& v = args[key];
    if (v == "input") return std::string();
    if (!is_identifier(v)) token_error(t, fmt::format("{}={} is not a layer name", key, v));
    return v;
  };
  switch (L.type) {
    case LayerType::Conv2d:
      if (p.op == "dwconv") {
        L.depthwise = true;
        L.kernel = integer("k", 3);
      } else {
        if (!args.count("out")) token_error(t, "conv needs its number of output channels, e.g. conv(16)");
        L.out = integer("out", 0);
        L.kernel = integer("k", 3);
        L.groups = integer("g", 1);
      }
      L.stride = integer("s", 1);
      L.padding = integer("p", L.kernel / 2);
      break;
    case LayerType::Linear:
      if (!args.count("out")) token_error(t, "linear needs its number of outputs, e.g. linear(10)");
      L.out = integer("out", 0);
      break;
    case LayerType::MaxPool:
    case LayerType::AvgPool:
      L.kernel = integer("k", 2);
      L.stride = integer("s", L.kernel);
      L.padding = integer("p", 0);
      break;
    case LayerType::Dropout: {
      if (args.count("p")) {
        try {
          L.dropout = std::stod(args["p"]);
        } catch (const std::exception&) {
          token_error(t, "dropout p is not a number");
        }
      }
      if (!(L.dropout >= 0 && L.dropout < 1)) token_error(t, "dropout p must be in [0, 1)");
      break;
    }
    case LayerType::Add:
      if (!args.count("a")) token_error(t, "add needs the layer to add, e.g. add(conv1)");
      if (args.count("b")) L.inputs = {name_arg("a"), name_arg("b")};
      else L.inputs = {"<previous>", name_arg("a")};
      break;
    default:
      break;
  }
  if (args.count("bias")) {
    const std::string& v = args["bias"];
    if (v != "0" && v != "1" && v != "true" && v != "false") token_error(t, "bias must be 0 or 1");
    L.bias = v == "1" || v == "true";
    p.bias_given = true;
  }
  if (L.kernel < 1 || L.stride < 1 || (L.type == LayerType::Conv2d && (L.groups < 1 || (!L.depthwise && L.out < 1))) ||
      (L.type == LayerType::Linear && L.out < 1))
    token_error(t, "sizes must be at least 1");
  if (args.count("from")) {
    if (L.type == LayerType::Add) token_error(t, "add takes its inputs as arguments, not from=");
    L.inputs = {name_arg("from")};
  }
  return p;
}

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

}  // namespace

std::vector<std::string> preset_names() { return {"usps_teacher", "usps_student", "lenet5", "mlp_300_100", "resnet20"}; }

std::string layer_type_name(LayerType t) {
  switch (t) {
    case LayerType::Conv2d: return "conv";
    case LayerType::Linear: return "linear";
    case LayerType::BatchNorm: return "bn";
    case LayerType::ReLU: return "relu";
    case LayerType::ReLU6: return "relu6";
    case LayerType::MaxPool: return "maxpool";
    case LayerType::AvgPool: return "avgpool";
    case LayerType::GlobalAvgPool: return "gap";
    case LayerType::Flatten: return "flatten";
    case LayerType::Dropout: return "dropout";
    case LayerType::Add: return "add";
  }
  return "?";
}

ModelSpec parse_spec(const std::string& text, const std::vector<int64_t>& input, int64_t classes) {
  std::string preset = preset_text(text);
  const std::string& source = preset.empty() ? text : preset;
  std::vector<Token> tokens = tokenize(source);
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

std::string ModelSpec::to_string() const {
  std::string out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const Layer& L = layers[i];
    std::string previous = i == 0 ? "" : layers[i - 1].name;
    std::vector<std::string> args;
    switch (L.type) {
      case LayerType::Conv2d:
        if (!L.depthwise) args.push_back(std::to_string(L.out));
        args.push_back(fmt::format("k={}", L.kernel));
        args.push_back(fmt::format("s={}", L.stride));
        args.push_back(fmt::format("p={}", L.padding));
        if (!L.depthwise) args.push_back(fmt::format("g={}", L.groups));
        args.push_back(fmt::format("bias={}", L.bias ? 1 : 0));
        break;
      case LayerType::Linear:
        args.push_back(std::to_string(L.out));
        args.push_back(fmt::format("bias={}", L.bias ? 1 : 0));
        break;
      case LayerType::MaxPool:
      case LayerType::AvgPool:
        args.push_back(fmt::format("k={}", L.kernel));
        args.push_back(fmt::format("s={}", L.stride));
        args.push_back(fmt::format("p={}", L.padding));
        break;
      case LayerType::Dropout: args.push_back(fmt::format("p={}", L.dropout)); break;
      case LayerType::Add:
        for (const auto& in : L.inputs) args.push_back(in.empty() ? "input" : in);
        break;
      default: break;
    }
    if (L.type != LayerType::Add && L.inputs[0] != previous) args.push_back("from=" + (L.inputs[0].empty() ? std::string("input") : L.inputs[0]));
    std::string op = L.depthwise ? "dwconv" : layer_type_name(L.type);
    out += (i ? " " : "") + L.name + "=" + op;
    if (!args.empty()) out += "(" + fmt::format("{}", fmt::join(args, ",")) + ")";
  }
  return out;
}

ModelCost total_cost(const ModelSpec& spec) {
  ModelCost c;
  for (const auto& i : analyze(spec)) c.params += i.params, c.macs += i.macs;
  return c;
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
        product({2, L.padding, s[1], s[2], L.kernel});  // every sum below fits
        int64_t oh = (s[1] + 2 * L.padding - L.kernel) / L.stride + 1, ow = (s[2] + 2 * L.padding - L.kernel) / L.stride + 1;
        if (s[1] + 2 * L.padding < L.kernel || s[2] + 2 * L.padding < L.kernel) fail("kernel is larger than the padded input");
        I.out_shape = {out_c, oh, ow};
        I.weight_shape = {out_c, in_c / groups, L.kernel, L.kernel};
        I.params = product({out_c, in_c / groups, L.kernel, L.kernel}) + (L.bias ? out_c : 0);
        I.macs = product({oh, ow, out_c, in_c / groups, L.kernel, L.kernel});
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
        if (L.padding * 2 > L.kernel) fail("padding must be at most half the kernel");
        product({2, L.padding, s[1], s[2], L.kernel});
        if (s[1] + 2 * L.padding < L.kernel || s[2] + 2 * L.padding < L.kernel) fail("kernel is larger than the padded input");
        I.out_shape = {s[0], (s[1] + 2 * L.padding - L.kernel) / L.stride + 1, (s[2] + 2 * L.padding - L.kernel) / L.stride + 1};
        break;
      }
      case LayerType::GlobalAvgPool:
        need_image();
        I.out_shape = {s[0]};
        break;
      case LayerType::Flatten: I.out_shape = {numel}; break;
      case LayerType::Add: {
        const auto& other = shapes.at(L.inputs[1]);
        if (other != s) fail(fmt::format("add of {} and {} ({}): shapes differ", L.inputs[0], L.inputs[1], shape_string(other)));
        I.out_shape = s;
        break;
      }
      default: I.out_shape = s; break;
    }
    shapes[L.name] = I.out_shape;
  }
  if (spec.classes > 0 && info.back().out_shape != std::vector<int64_t>{spec.classes})
    throw UserError(fmt::format("model spec: the output has shape {} but the data has {} classes", shape_string(info.back().out_shape), spec.classes));
  return info;
}

}  // namespace shrink
