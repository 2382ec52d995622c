// Every option of every command and every config key refuses bad values (not a number, out of
// range on either side, NaN, empty, unknown choice) with one line naming the option, before any
// work starts; every command has --help. The bad values come from each option's own Rule, so a
// new option is covered the moment it is declared.
#include <filesystem>
#include <map>
#include <sstream>

#include "apps/commands.h"
#include "jobs/jobs.h"
#include "common/error.h"
#include "tests/helpers.h"

using namespace shrink;
using shrink::test::TempDir;

namespace {

std::vector<std::string> words_of(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// The UserError message that `shrink WORDS` raises ("" if it raised none).
std::string error_of(const std::vector<std::string>& words) {
  try {
    run_shrink(words);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

}  // namespace

CATCH_TEST_CASE("every flag and config key of every command refuses bad values, naming it", "[cli][options]") {
  TempDir dir;
  shrink::test::write_text(dir / "empty.ini", "");
  std::map<std::string, int> tried;
  for (const Command& c : shrink_commands()) {
    const std::string& name = c.line.name;
    for (const Flag& f : c.line.flags) {
      std::vector<std::string> bad = f.rule.bad_examples();
      if (f.value.empty()) bad = {"yes"};  // a switch takes no value
      for (const auto& value : bad) {
        auto words = words_of(name);
        words.push_back("--" + f.name + "=" + value);
        std::string msg = error_of(words);
        CATCH_INFO(name << " --" << f.name << "=" << value << " -> " << msg);
        CATCH_CHECK(msg.find("--" + f.name) != std::string::npos);
        CATCH_CHECK(msg.find('\n') == std::string::npos);
        ++tried[name];
      }
    }
    if (!c.keys) continue;
    Keys keys;
    c.keys(keys);
    const bool takes_config = c.line.flags[0].name == "config";
    bool has_out = false;
    for (const Flag& f : c.line.flags) has_out |= f.name == "out";
    for (const auto& [key, rule] : keys.rules()) {
      for (const auto& value : rule.bad_examples()) {
        std::string msg;
        if (takes_config) {  // the whole command: nothing may start before the key is checked
          auto words = words_of(name);
          for (std::string w : {std::string("--config"), dir / "empty.ini", "--" + key + "=" + value}) words.push_back(w);
          if (has_out) words.push_back("--out=" + dir / "never");
          msg = error_of(words);
          CATCH_CHECK_FALSE(std::filesystem::exists(dir / "never"));
        } else {  // keys layered over a checkpoint's saved config
          try {
            Config::layered(keys, "", "saved config", {"--" + key + "=" + value});
          } catch (const UserError& e) {
            msg = e.what();
          }
        }
        CATCH_INFO(name << " --" << key << "=" << value << " -> " << msg);
        CATCH_CHECK(msg.find(key) != std::string::npos);
        CATCH_CHECK(msg.find('\n') == std::string::npos);
        ++tried[name];
      }
    }
  }
  int total = 0;
  for (const auto& [name, n] : tried) {
    std::printf("bad values tried: %-18s %4d\n", name.c_str(), n);
    total += n;
  }
  std::printf("bad values tried: %-18s %4d\n", "all commands", total);
  CATCH_CHECK(tried.size() >= 9);
}

CATCH_TEST_CASE("the binaries turn a bad value into exit code 2 and one line, and every command has --help", "[cli][options]") {
  for (const Command& c : shrink_commands()) {
    auto help = shrink::test::run_cli(c.line.name + " --help");
    CATCH_INFO(c.line.name << " --help -> " << help.out);
    CATCH_CHECK(help.code == 0);
    for (const Flag& f : c.line.flags) CATCH_CHECK(help.out.find("--" + f.name) != std::string::npos);
    if (c.keys) {
      Keys keys;
      c.keys(keys);
      for (const auto& [key, rule] : keys.rules()) CATCH_CHECK(help.out.find(key) != std::string::npos);
    }
    for (const Flag& f : c.line.flags) {
      if (f.value.empty() || f.rule.bad_examples().empty()) continue;
      auto r = shrink::test::run_cli(c.line.name + " " + quoted("--" + f.name + "=" + f.rule.bad_examples()[0]));
      CATCH_INFO(c.line.name << " --" << f.name << " -> " << r.out);
      CATCH_CHECK(r.code == 2);
      CATCH_CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
      CATCH_CHECK(r.out.find("--" + f.name) != std::string::npos);
    }
  }
  for (std::string group : {"data", "model"}) {  // a command group without its subcommand
    auto r = shrink::test::run_cli(group);
    CATCH_CHECK(r.code == 2);
    CATCH_CHECK(r.out.find("subcommand") != std::string::npos);
    auto h = shrink::test::run_cli(group + " --help");
    CATCH_CHECK(h.code == 0);
    CATCH_CHECK(h.out.find("shrink " + group + " info") != std::string::npos);
  }
}


CATCH_TEST_CASE("every job of the job table is a command with its keys, and every job stage of the pipeline is a job", "[cli][options]") {
  for (const JobKind& kind : job_kinds()) {
    auto c = std::find_if(shrink_commands().begin(), shrink_commands().end(), [&](const Command& c) { return c.line.name == kind.name; });
    CATCH_INFO(kind.name);
    CATCH_REQUIRE(c != shrink_commands().end());
    CATCH_CHECK(c->line.summary == kind.summary);
    CATCH_CHECK(c->line.flags[0].name == "config");
    Keys from_command, from_table;
    c->keys(from_command);
    kind.add_options(from_table);
    CATCH_CHECK(from_command.rules().size() == from_table.rules().size());
    if (!kind.start_key.empty()) CATCH_CHECK(from_table.has(kind.start_key));
  }
  CATCH_CHECK_THROWS_WITH(job_kind("bogus"), Catch::Contains("jobs: train, distill, prune, quantize"));
  // The pipeline's --help shows how to set a stage's keys.
  auto help = shrink::test::run_cli("pipeline --help");
  CATCH_CHECK(help.code == 0);
  CATCH_CHECK(help.out.find("--STAGE:section.key=value") != std::string::npos);
}
