// Config: INI text + command-line overrides, checked against the keys' rules, errors naming the
// key and where it was set.
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

#include <cstdio>
#include <fstream>

#include "common/config.h"
#include "common/error.h"

using namespace shrink;

namespace {

void declare(Keys& k) {
  k.add("train.epochs", 20, Rule::integer(1, 1000), "epochs")
      .add("optim.lr", 0.05, Rule::real(0, 10, true), "learning rate")
      .add("optim.name", "sgd", Rule::choice({"sgd", "adamw"}), "optimizer")
      .add("data.path", "", Rule::text(true), "data")
      .add("data.mean", "", Rule::numbers(-1, 1, true), "means")
      .add("data.hflip", false, "flips");
}

std::string error_of(const std::string& text, const std::vector<std::string>& args) {
  Keys k;
  declare(k);
  try {
    Config::layered(k, text, "job.ini", args);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

CATCH_TEST_CASE("config: defaults < file < command line, and where each value came from", "[config]") {
  Keys k;
  declare(k);
  Config c = Config::layered(k, "# a job\n[optim]\nlr = 0.1\nname = adamw\n[train]\nepochs = 3\n", "job.ini", {"--train.epochs=7", "--data.hflip", "true"});
  CATCH_CHECK(c.get<double>("optim.lr") == 0.1);
  CATCH_CHECK(c.get<std::string>("optim.name") == "adamw");
  CATCH_CHECK(c.get<int64_t>("train.epochs") == 7);
  CATCH_CHECK(c.get<bool>("data.hflip"));
  CATCH_CHECK(c.where("optim.lr") == "job.ini:3");
  CATCH_CHECK(c.where("train.epochs") == "command line");
  CATCH_CHECK(c.where("data.path") == "default");
  // The resolved config reads back to the same text.
  Config again = Config::from_text(k, c.to_ini(), "resolved");
  CATCH_CHECK(again.to_ini() == c.to_ini());
  CATCH_CHECK(config_numbers(Config::layered(k, "", "x", {"--data.mean=0.5,-0.25"}), "data.mean") == std::vector<double>{0.5, -0.25});
}

CATCH_TEST_CASE("config: a bad value in the file is fine when the command line replaces it", "[config]") {
  CATCH_CHECK(error_of("[train]\nepochs = 0\n", {"--train.epochs=5"}).empty());
  CATCH_CHECK(error_of("[train]\nepochs = 0\n", {}) == "job.ini:2: train.epochs = 0: must be an integer in [1, 1000]");
}

CATCH_TEST_CASE("config: every error is one line naming the key and where", "[config]") {
  CATCH_CHECK(error_of("[optim]\nlrr = 0.1\n", {}) == "job.ini:2: unknown key 'optim.lrr' (see --help for the keys)");
  CATCH_CHECK(error_of("", {"--optim.nope=1"}) == "command line: unknown key 'optim.nope' (see --help for the keys)");
  CATCH_CHECK(error_of("[optim]\nlr = -1\n", {}) == "job.ini:2: optim.lr = -1: must be a number in (0, 10]");
  CATCH_CHECK(error_of("", {"--optim.lr=nan"}) == "command line: optim.lr = nan: must be a number in (0, 10]");
  CATCH_CHECK(error_of("[optim]\nname = sgdd\n", {}) == "job.ini:2: optim.name = sgdd: expected one of sgd, adamw");
  CATCH_CHECK(error_of("[train]\nepochs\n", {}) == "job.ini:2: expected 'key = value', got 'epochs'");
  CATCH_CHECK(error_of("[train\n", {}).find("job.ini:1: expected a section") == 0);
  for (const std::string& e : {error_of("[optim]\n\nlr = fast\n", {}), error_of("", {"--train.epochs=1.5"}), error_of("", {"--data.hflip=maybe"}),
                               error_of("", {"--data.mean=0.5,x"}), error_of("", {"--train.epochs=99999999999999999999"})}) {
    CATCH_INFO(e);
    CATCH_CHECK_FALSE(e.empty());
    CATCH_CHECK(e.find('\n') == std::string::npos);
    CATCH_CHECK((e.find("optim.lr") != std::string::npos || e.find("train.epochs") != std::string::npos || e.find("data.hflip") != std::string::npos ||
                 e.find("data.mean") != std::string::npos));
  }
  Keys k;
  declare(k);
  CATCH_CHECK_THROWS_WITH(Config::load(k, "/nonexistent/job.ini", {}), "config file /nonexistent/job.ini: no such file");
}

CATCH_TEST_CASE("keys: a default its own rule refuses, a twice-declared key or a rule of the wrong type is a bug", "[config]") {
  Keys k;
  CATCH_CHECK_THROWS_AS(k.add("a.b", 0, Rule::integer(1, 5), ""), std::logic_error);
  CATCH_CHECK_THROWS_AS(k.add("a.c", 1.5, Rule::integer(1, 5), ""), std::logic_error);
  k.add("a.d", 2, Rule::integer(1, 5), "");
  CATCH_CHECK_THROWS_AS(k.add("a.d", 2, Rule::integer(1, 5), ""), std::logic_error);
}

CATCH_TEST_CASE("config: a key set after loading is parsed and checked like any other, naming where it came from", "[config]") {
  Keys k;
  declare(k);
  Config c = Config::layered(k, "[train]\nepochs = 3\n", "job.ini", {});
  c.set("train.epochs", "9", "pipeline: the stage");
  c.set("data.path", "d.h5", "pipeline: the data");
  c.set("data.hflip", "true", "pipeline");
  CATCH_CHECK(c.get<int64_t>("train.epochs") == 9);
  CATCH_CHECK(c.get<std::string>("data.path") == "d.h5");
  CATCH_CHECK(c.get<bool>("data.hflip"));
  CATCH_CHECK(c.where("train.epochs") == "pipeline: the stage");
  // The resolved config holds it exactly as if it had come from the command line.
  CATCH_CHECK(c.to_ini() == Config::layered(k, "[train]\nepochs = 3\n", "job.ini", {"--train.epochs=9", "--data.path=d.h5", "--data.hflip=true"}).to_ini());
  auto error_of_set = [&](const std::string& key, const std::string& value) {
    try {
      c.set(key, value, "command line (--distill:" + key + ")");
    } catch (const UserError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CATCH_CHECK(error_of_set("train.epochs", "abc") == "command line (--distill:train.epochs): train.epochs = abc: must be an integer in [1, 1000]");
  CATCH_CHECK(error_of_set("train.epochs", "0") == "command line (--distill:train.epochs): train.epochs = 0: must be an integer in [1, 1000]");
  CATCH_CHECK(error_of_set("optim.name", "adam").find("optim.name = adam: ") != std::string::npos);
  CATCH_CHECK(error_of_set("optim.lrr", "1").find("unknown key 'optim.lrr'") != std::string::npos);
  CATCH_CHECK(c.get<int64_t>("train.epochs") == 9);  // a refused value changes nothing
}

CATCH_TEST_CASE("config: keys of several tables join, each declared once", "[config]") {
  Keys a, b, all;
  a.add("train.epochs", 20, Rule::integer(1, 1000), "epochs").add("model.spec", "x", Rule::text(false), "model");
  b.add("train.epochs", 5, Rule::integer(1, 9), "epochs again").add("student.spec", "y", Rule::text(false), "student");
  all.add_missing(a);
  all.add_missing(b);
  CATCH_CHECK(all.rules().size() == 3);
  Config c = Config::layered(all, "[student]\nspec = z\n", "saved", {});
  CATCH_CHECK(c.get<int64_t>("train.epochs") == 20);  // the first table's declaration
  CATCH_CHECK(c.get<std::string>("student.spec") == "z");
}
