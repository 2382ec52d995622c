// Command-line flags: values checked by their rules, switches, repeats, required flags,
// positional words and config-key overrides; --help written from the same declaration.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include "apps/cli.h"
#include "common/error.h"

using namespace shrink;

namespace {

const CommandLine kCommand{"prog",
                           "run",
                           "MODEL",
                           "runs a model",
                           {{"input", "FILE", Rule::text(false), "inputs", false, true},
                            {"batch", "N", Rule::integer(1, 64), "batch size"},
                            {"scale", "S", Rule::real(0, 1, true), "a scale"},
                            {"student", "B", Rule::text(false), "students", true},
                            {"bench", "", Rule::flag(), "time it"}},
                           true};

std::string error_of(const std::vector<std::string>& words) {
  try {
    parse_command_line(kCommand, words);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

CATCH_TEST_CASE("command line: flags, switches, repeats, positional words and keys", "[cli]") {
  Args a = parse_command_line(kCommand, {"m.shrink", "--input", "x.f32", "--batch=8", "--student", "a", "--student=b", "--bench", "--data.path", "d",
                                         "--train.threads=1"});
  CATCH_CHECK(a.positional == std::vector<std::string>{"m.shrink"});
  CATCH_CHECK(*a.get("input") == "x.f32");
  CATCH_CHECK(a.integer("batch", 256) == 8);
  CATCH_CHECK(a.real("scale", 0.5) == 0.5);
  CATCH_CHECK(a.all("student") == std::vector<std::string>{"a", "b"});
  CATCH_CHECK(a.has("bench"));
  CATCH_CHECK(a.keys == std::vector<std::string>{"--data.path", "d", "--train.threads=1"});
  CATCH_CHECK(parse_command_line(kCommand, {"--batch=abc", "--help"}).help);  // help first, whatever else is there
}

CATCH_TEST_CASE("command line: every mistake is one line naming the flag", "[cli]") {
  CATCH_CHECK(error_of({"m", "--input", "x", "--batch", "0"}) == "--batch '0': must be an integer in [1, 64]");
  CATCH_CHECK(error_of({"m", "--input", "x", "--batch="}) == "--batch '': must be an integer in [1, 64]");
  CATCH_CHECK(error_of({"m", "--input", "x", "--scale", "nan"}) == "--scale 'nan': must be a number in (0, 1]");
  CATCH_CHECK(error_of({"m", "--input", "x", "--batch"}) == "--batch needs a value (N: an integer in [1, 64])");
  CATCH_CHECK(error_of({"m", "--input", "x", "--batch", "2", "--batch", "3"}) == "--batch is given twice");
  CATCH_CHECK(error_of({"m", "--input", "x", "--bench=yes"}) == "--bench takes no value");
  CATCH_CHECK(error_of({"m", "--input", "x", "--frob"}) == "run: unknown option --frob (see --help)");
  CATCH_CHECK(error_of({"m", "--input="}) == "--input '': cannot be empty");
  CATCH_CHECK(error_of({"m"}).find("--input FILE is required") == 0);
  CATCH_CHECK(error_of({"--input", "x"}).find("usage: prog run MODEL --input FILE") == 0);
  CATCH_CHECK(error_of({"m", "n", "--input", "x"}) == "run: unexpected argument 'n' (see --help)");
}

CATCH_TEST_CASE("command line: help names every flag with what it accepts", "[cli]") {
  std::string h = help_text(kCommand);
  for (const char* s : {"usage: prog run MODEL --input FILE [--batch N]", "--scale S", "an integer in [1, 64]", "(repeatable)", "--bench", "[--section.key=value ...]"})
    CATCH_CHECK(h.find(s) != std::string::npos);
}
