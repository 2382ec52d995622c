#include "common/config.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "common/error.h"

namespace shrink {
namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// Finds "section.key" -> line number in INI text, and checks the syntax line by line
// (Boost's own message for a bad line does not say which line).
std::map<std::string, int> scan_ini(const std::string& text, const std::string& origin) {
  std::map<std::string, int> lines;
  std::istringstream in(text);
  std::string line, section;
  for (int n = 1; std::getline(in, line); ++n) {
    std::string t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t[0] == '[') {
      if (t.back() != ']') throw UserError(fmt::format("{}:{}: expected a section like [train], got '{}'", origin, n, t));
      section = trim(t.substr(1, t.size() - 2));
      continue;
    }
    size_t eq = t.find('=');
    if (eq == std::string::npos) throw UserError(fmt::format("{}:{}: expected 'key = value', got '{}'", origin, n, t));
    std::string key = trim(t.substr(0, eq));
    lines[section.empty() ? key : section + "." + key] = n;
  }
  return lines;
}

std::string option_name(const po::error_with_option_name& e) {
  std::string name = e.get_option_name();
  while (!name.empty() && name[0] == '-') name.erase(0, 1);
  return name.substr(0, name.find('='));
}

std::string value_string(const boost::any& v) {
  if (v.empty()) return "";
  if (auto p = boost::any_cast<std::string>(&v)) return *p;
  if (auto p = boost::any_cast<int64_t>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<double>(&v)) return fmt::format("{}", *p);
  if (auto p = boost::any_cast<bool>(&v)) return *p ? "true" : "false";
  if (auto p = boost::any_cast<int>(&v)) return std::to_string(*p);
  return "?";
}

}  // namespace

Config Config::load(const Keys& keys, const std::string& file, const std::vector<std::string>& args) {
  std::string text;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!std::filesystem::is_regular_file(file) || !in) throw UserError(fmt::format("config file {}: no such file", file));
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
    if (text.rfind("\xEF\xBB\xBF", 0) == 0) text.erase(0, 3);  // a UTF-8 byte-order mark, as some editors write
  }
  return layered(keys, text, file, args);
}

Config Config::layered(const Keys& keys, const std::string& text, const std::string& origin,
                       const std::vector<std::string>& args) {
  Config c;
  c.adopt(keys);
  // Command line first: po::store keeps the first value it sees, so the command line wins.
  try {
    auto style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
    auto parsed = po::command_line_parser(args).options(keys.options()).style(style).run();
    for (const auto& o : parsed.options) {
      if (o.string_key.empty()) throw UserError(fmt::format("unexpected argument '{}'", o.original_tokens.empty() ? "" : o.original_tokens[0]));
      c.origin_[o.string_key] = "command line";
    }
    po::store(parsed, c.vm_);
  } catch (const po::unknown_option& e) {
    throw UserError(fmt::format("command line: unknown key '{}' (see --help for the keys)", option_name(e)));
  } catch (const po::invalid_option_value& e) {  // Boost's message says the value is invalid, not what is valid
    const auto rule = keys.rules().find(option_name(e));
    throw UserError(fmt::format("command line: {}{}", e.what(), rule == keys.rules().end() ? "" : " (expected " + rule->second.describe() + ")"));
  } catch (const po::error& e) {
    throw UserError(fmt::format("command line: {}", e.what()));
  }
  Config base = parse_text(keys, text, origin);
  for (const auto& [key, value] : base.vm_) {
    auto it = c.vm_.find(key);
    if (it != c.vm_.end() && !it->second.defaulted()) continue;
    if (it != c.vm_.end()) c.vm_.erase(it);
    c.vm_.insert({key, value});
    if (!value.defaulted()) c.origin_[key] = base.where(key);
  }
  po::notify(c.vm_);
  c.check_rules();
  return c;
}

Config Config::from_text(const Keys& keys, const std::string& text, const std::string& origin) {
  Config c = parse_text(keys, text, origin);
  c.check_rules();
  return c;
}

Config Config::parse_text(const Keys& keys, const std::string& text, const std::string& origin) {
  Config c;
  c.adopt(keys);
  auto lines = scan_ini(text, origin);
  auto where = [&](const std::string& key) { return lines.count(key) ? fmt::format("{}:{}", origin, lines[key]) : origin; };
  try {
    std::istringstream in(text);
    po::store(po::parse_config_file(in, keys.options(), false), c.vm_);
  } catch (const po::unknown_option& e) {
    throw UserError(fmt::format("{}: unknown key '{}' (see --help for the keys)", where(option_name(e)), option_name(e)));
  } catch (const po::error_with_option_name& e) {
    throw UserError(fmt::format("{}: {}", where(option_name(e)), e.what()));
  } catch (const po::error& e) {
    throw UserError(fmt::format("{}: {}", origin, e.what()));
  }
  for (const auto& [key, line] : lines) c.origin_[key] = fmt::format("{}:{}", origin, line);
  po::notify(c.vm_);
  return c;
}

std::string Config::where(const std::string& key) const {
  auto it = origin_.find(key);
  return it == origin_.end() ? "default" : it->second;
}

void Config::fail(const std::string& key, const std::string& message) const {
  std::string value = has(key) ? value_string(vm_.at(key).value()) : "";
  throw UserError(fmt::format("{}: {} = {}: {}", where(key), key, value, message));
}

std::string Config::to_ini() const {
  std::string out, section;
  for (const std::string& name : names_) {
    size_t dot = name.find('.');
    if (dot == std::string::npos || !vm_.count(name)) continue;
    std::string sec = name.substr(0, dot);
    if (sec != section) {
      out += (out.empty() ? "" : "\n") + fmt::format("[{}]\n", sec);
      section = sec;
    }
    out += fmt::format("{} = {}\n", name.substr(dot + 1), value_string(vm_.at(name).value()));
  }
  return out;
}


void Keys::declare(const std::string& name, po::value_semantic* value, const Rule& rule, const std::string& help, const std::string& fallback) {
  std::unique_ptr<po::value_semantic> owned(value);  // until options_ takes it
  // A default its own rule refuses is a bug in the declaration, caught by any test that builds the keys.
  if (!rule.problem(fallback).empty()) throw std::logic_error(fmt::format("key {}: default '{}' breaks its rule", name, fallback));
  if (rules_.count(name)) throw std::logic_error(fmt::format("key {} declared twice", name));
  rules_.emplace(name, rule);
  std::string text = help + " [" + rule.describe() + "]";
  options_.add_options()(name.c_str(), owned.release(), text.c_str());
}

Keys& Keys::add(const std::string& name, int64_t fallback, Rule rule, const std::string& help) {
  if (rule.kind() != Rule::Kind::Integer) throw std::logic_error("key " + name + ": an integer key needs an integer rule");
  declare(name, po::value<int64_t>()->default_value(fallback), rule, help, std::to_string(fallback));
  return *this;
}

Keys& Keys::add(const std::string& name, double fallback, Rule rule, const std::string& help) {
  if (rule.kind() != Rule::Kind::Real) throw std::logic_error("key " + name + ": a real key needs a real rule");
  std::string shown = fmt::format("{}", fallback);  // "0.05", where Boost would print 0.050000000000000003
  declare(name, po::value<double>()->default_value(fallback, shown), rule, help, shown);
  return *this;
}

Keys& Keys::add(const std::string& name, const std::string& fallback, Rule rule, const std::string& help) {
  if (rule.kind() == Rule::Kind::Integer || rule.kind() == Rule::Kind::Real || rule.kind() == Rule::Kind::Flag)
    throw std::logic_error("key " + name + ": a text key needs a text, choice or list rule");
  declare(name, po::value<std::string>()->default_value(fallback), rule, help, fallback);
  return *this;
}

Keys& Keys::add(const std::string& name, bool fallback, const std::string& help) {
  declare(name, po::value<bool>()->default_value(fallback, fallback ? "true" : "false"), Rule::flag(), help, fallback ? "true" : "false");
  return *this;
}

void Keys::add_missing(const Keys& other) {
  for (const auto& opt : other.options_.options()) {
    if (has(opt->long_name())) continue;
    rules_.emplace(opt->long_name(), other.rules_.at(opt->long_name()));
    options_.add(opt);
  }
}

void Config::adopt(const Keys& keys) {
  names_.clear();
  semantics_.clear();
  for (const auto& opt : keys.options().options()) {
    names_.push_back(opt->long_name());
    semantics_[opt->long_name()] = opt->semantic();
  }
  rules_ = keys.rules();
}

void Config::set(const std::string& key, const std::string& value, const std::string& origin) {
  auto semantic = semantics_.find(key);
  if (semantic == semantics_.end()) throw UserError(fmt::format("{}: unknown key '{}' (see --help for the keys)", origin, key));
  boost::any parsed;
  std::string problem;
  try {
    semantic->second->parse(parsed, {value}, true);
    problem = rules_.at(key).problem(value_string(parsed));
  } catch (const po::error&) {
    problem = rules_.at(key).problem(value);
    if (problem.empty()) problem = "not a valid value";
  }
  if (!problem.empty()) throw UserError(fmt::format("{}: {} = {}: {}", origin, key, value, problem));
  vm_.erase(key);
  vm_.insert({key, po::variable_value(parsed, false)});
  origin_[key] = origin;
}

void Config::check_rules() const {
  for (const auto& [key, rule] : rules_) {
    auto it = vm_.find(key);
    if (it == vm_.end()) continue;
    std::string problem = rule.problem(value_string(it->second.value()));
    if (!problem.empty()) fail(key, problem);
  }
}

std::vector<double> config_numbers(const Config& c, const std::string& key) {
  std::vector<double> out;
  std::stringstream in(c.get<std::string>(key));
  for (std::string part; std::getline(in, part, ',');) out.push_back(std::stod(part));
  return out;
}

}  // namespace shrink
