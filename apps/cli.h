// Command-line syntax shared by `shrink` and `shrink-run`: each command declares its flags with
// the Rule their values must pass, so parsing checks every value before any work starts and
// --help is written from the same declaration. No torch, no Boost.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/rule.h"

namespace shrink {

struct Flag {
  std::string name;   // used as --name VALUE or --name=VALUE
  std::string value;  // what the value is called in help ("N", "FILE"); empty: a switch without value
  Rule rule;
  std::string help;
  bool repeats = false;   // may be given more than once
  bool required = false;  // the command cannot run without it
  bool many = false;      // takes every following word up to the next option: --input a.png b.png
};

struct CommandLine {
  std::string program;     // "shrink", "shrink-run"
  std::string name;        // "compare", "prune report" (empty: the program itself)
  std::string positional;  // the words after the name, e.g. "CHECKPOINT" (one per word, all required)
  std::string summary;
  std::vector<Flag> flags;
  bool takes_keys = false;  // also --section.key=value config overrides (checked by the job's Keys)
  std::string notes = "";   // more help, printed after the options
};

struct Args {
  bool help = false;
  std::map<std::string, std::vector<std::string>> values;  // flag -> values in order ("" for a switch)
  std::vector<std::string> keys;                           // --section.key=value words, for Config
  std::vector<std::string> positional;

  bool has(const std::string& flag) const { return values.count(flag) > 0; }
  std::optional<std::string> get(const std::string& flag) const;
  std::vector<std::string> all(const std::string& flag) const;
  // Values already checked by their flag's Rule.
  int64_t integer(const std::string& flag, int64_t fallback) const;
  double real(const std::string& flag, double fallback) const;
};

// Parses the words after the command's name. A bad value, an unknown flag, a missing value or a
// missing positional word is a UserError naming it.
Args parse_command_line(const CommandLine& command, const std::vector<std::string>& words);
// "usage: PROGRAM NAME ...", the summary, and every flag with its value, meaning and rule.
std::string help_text(const CommandLine& command);
std::string usage_line(const CommandLine& command);

}  // namespace shrink
