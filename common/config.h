// Job configuration: INI file + command-line overrides with the same key names
// (--optim.lr=0.01 overrides [optim] lr). Every key is declared once, in a Keys table, with its
// type, default, meaning and the values it accepts (a Rule); unknown keys and bad values are
// UserErrors naming the key and where it was set, raised before any work starts. No torch.
#pragma once
#include <boost/program_options.hpp>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/rule.h"

namespace shrink {

namespace po = boost::program_options;

// The keys a job accepts. A key cannot be declared without the Rule its values must pass.
class Keys {
 public:
  explicit Keys(const std::string& caption = "keys") : options_(caption, 120) {}
  Keys(const Keys&) = delete;
  Keys& operator=(const Keys&) = delete;

  // The default's type is the key's type.
  Keys& add(const std::string& name, int64_t fallback, Rule rule, const std::string& help);
  Keys& add(const std::string& name, int fallback, Rule rule, const std::string& help) { return add(name, int64_t(fallback), rule, help); }
  Keys& add(const std::string& name, double fallback, Rule rule, const std::string& help);
  Keys& add(const std::string& name, const std::string& fallback, Rule rule, const std::string& help);
  Keys& add(const std::string& name, const char* fallback, Rule rule, const std::string& help) { return add(name, std::string(fallback), rule, help); }
  Keys& add(const std::string& name, bool fallback, const std::string& help);

  const po::options_description& options() const { return options_; }
  const std::map<std::string, Rule>& rules() const { return rules_; }
  bool has(const std::string& name) const { return rules_.count(name) > 0; }
  // Adds the keys of `other` this table does not declare yet (the union of several jobs' keys).
  void add_missing(const Keys& other);

 private:
  void declare(const std::string& name, po::value_semantic* value, const Rule& rule, const std::string& help, const std::string& fallback);
  po::options_description options_;
  std::map<std::string, Rule> rules_;
};

class Config {
 public:
  // `args` are the --key=value words of the command line; `file` may be empty.
  static Config load(const Keys& keys, const std::string& file, const std::vector<std::string>& args);
  // The same with the INI text given directly (e.g. a config saved in a checkpoint).
  static Config layered(const Keys& keys, const std::string& text, const std::string& origin, const std::vector<std::string>& args);
  // Parses a resolved config saved earlier (in a run directory or checkpoint).
  static Config from_text(const Keys& keys, const std::string& text, const std::string& origin);

  template <class T>
  T get(const std::string& key) const {
    return vm_.at(key).as<T>();
  }
  bool has(const std::string& key) const { return vm_.count(key) > 0; }
  // Sets a declared key after loading, parsed and checked like any other value (a bad value is
  // a UserError naming the key and `origin`); e.g. the pipeline handing a stage its input.
  void set(const std::string& key, const std::string& value, const std::string& origin);
  // Where a key got its value: "FILE:LINE", "command line" or "default".
  std::string where(const std::string& key) const;
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  // The resolved config as INI text, one [section] per key prefix, every key present.
  std::string to_ini() const;

 private:
  static Config parse_text(const Keys& keys, const std::string& text, const std::string& origin);
  void check_rules() const;  // every value against its key's Rule
  po::variables_map vm_;
  void adopt(const Keys& keys);  // a Config outlives the Keys it was read with
  std::vector<std::string> names_;  // declared keys in order (for to_ini)
  std::map<std::string, Rule> rules_;
  std::map<std::string, boost::shared_ptr<const po::value_semantic>> semantics_;  // how set() parses a value
  std::map<std::string, std::string> origin_;
};

// Comma-separated numbers of a key whose Rule already accepted them.
std::vector<double> config_numbers(const Config& c, const std::string& key);

}  // namespace shrink
