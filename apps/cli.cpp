#include "apps/cli.h"

#include <sstream>

#include "common/error.h"

namespace shrink {

std::optional<std::string> Args::get(const std::string& flag) const {
  auto it = values.find(flag);
  if (it == values.end()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> Args::all(const std::string& flag) const {
  auto it = values.find(flag);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

int64_t Args::integer(const std::string& flag, int64_t fallback) const {
  auto v = get(flag);
  int64_t out = fallback;
  if (v) Rule::parse_integer(*v, &out);
  return out;
}

double Args::real(const std::string& flag, double fallback) const {
  auto v = get(flag);
  double out = fallback;
  if (v) Rule::parse_real(*v, &out);
  return out;
}

std::string usage_line(const CommandLine& c) {
  std::string s = c.program + (c.name.empty() ? "" : " " + c.name);
  if (!c.positional.empty()) s += " " + c.positional;
  for (const Flag& f : c.flags)
    s += std::string(f.required ? " " : " [") + "--" + f.name + (f.value.empty() ? "" : " " + f.value) + (f.required ? "" : "]") + (f.repeats ? "..." : "");
  if (c.takes_keys) s += " [--section.key=value ...]";
  return s;
}

namespace {

size_t word_count(const std::string& text) {
  std::istringstream in(text);
  size_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

}  // namespace

Args parse_command_line(const CommandLine& c, const std::vector<std::string>& words) {
  Args a;
  for (const auto& w : words)
    if (w == "--help" || w == "-h") {
      a.help = true;
      return a;
    }
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    if (w.rfind("--", 0) != 0 || w.size() == 2) {
      a.positional.push_back(w);
      continue;
    }
    std::string name = w.substr(2), value;
    size_t eq = name.find('=');
    bool has_value = eq != std::string::npos;
    if (has_value) value = name.substr(eq + 1), name = name.substr(0, eq);
    const Flag* flag = nullptr;
    for (const Flag& f : c.flags)
      if (f.name == name) flag = &f;
    // A value is the next word unless that is an option: `--data.cache --out x` is a missing value,
    // not a cache folder named --out.
    const bool value_follows = i + 1 < words.size() && words[i + 1].rfind("--", 0) != 0;
    if (!flag) {
      if (c.takes_keys && name.find('.') != std::string::npos) {  // checked by Config against the job's keys
        if (!has_value && !value_follows) throw UserError("--" + name + " needs a value (--" + name + " VALUE or --" + name + "=VALUE)");
        a.keys.push_back(w);
        if (!has_value) a.keys.push_back(words[++i]);
        continue;
      }
      throw UserError((c.name.empty() ? c.program : c.name) + ": unknown option --" + name + " (see --help)");
    }
    if (flag->value.empty()) {
      if (has_value) throw UserError("--" + name + " takes no value");
    } else if (!has_value) {
      if (!value_follows) throw UserError("--" + name + " needs a value (" + flag->value + ": " + flag->rule.describe() + ")");
      value = words[++i];
    }
    if (a.values.count(name) && !flag->repeats) throw UserError("--" + name + " is given twice");
    // --flag=value is one value; a `many` flag given as --flag takes every word up to the next option.
    for (bool first = true; first || (flag->many && !has_value && i + 1 < words.size() && words[i + 1].rfind("--", 0) != 0); first = false) {
      if (!first) value = words[++i];
      if (!flag->value.empty()) {
        std::string problem = flag->rule.problem(value);
        if (!problem.empty()) throw UserError("--" + name + " '" + value + "': " + problem);
      }
      a.values[name].push_back(value);
    }
  }
  for (const Flag& f : c.flags)
    if (f.required && !a.has(f.name)) throw UserError("--" + f.name + " " + f.value + " is required (usage: " + usage_line(c) + ")");
  size_t wanted = word_count(c.positional);
  if (a.positional.size() > wanted) throw UserError((c.name.empty() ? c.program : c.name) + ": unexpected argument '" + a.positional[wanted] + "' (see --help)");
  if (a.positional.size() < wanted) {
    for (const Flag& f : c.flags)  // `--input a b MODEL` gave MODEL to --input
      if (f.many && a.all(f.name).size() > 1)
        throw UserError(c.positional + " is missing: it goes before --" + f.name + ", which takes every word after it (usage: " + usage_line(c) + ")");
    throw UserError("usage: " + usage_line(c));
  }
  return a;
}

std::string help_text(const CommandLine& c) {
  std::string s = "usage: " + usage_line(c) + "\n\n" + c.summary + "\n";
  if (!c.flags.empty()) s += "\noptions:\n";
  for (const Flag& f : c.flags) {
    std::string left = "  --" + f.name + (f.value.empty() ? "" : " " + f.value);
    if (left.size() < 24) left += std::string(24 - left.size(), ' ');
    s += left + " " + f.help + (f.value.empty() ? "" : " [" + f.rule.describe() + "]") + (f.repeats ? " (repeatable)" : "") + "\n";
  }
  if (!c.notes.empty()) s += "\n" + c.notes;
  return s;
}

}  // namespace shrink
