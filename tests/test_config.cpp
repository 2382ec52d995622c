#include "tests/helpers.h"
#include "common/error.h"
#include "jobs/jobs.h"
#include "jobs/pipeline.h"
#include "prune/prune.h"
#include "quantize/quantize.h"
#include "spec/spec.h"
#include "train/config.h"

using namespace shrink;
using shrink::test::TempDir;

namespace {
const Keys& train_keys() {
  static Keys keys;
  if (keys.rules().empty()) add_train_options(keys);
  return keys;
}
std::string load_error(const std::string& ini, const std::vector<std::string>& args = {}) {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", ini);
  const Keys& keys = train_keys();
  try {
    read_job_config(Config::load(keys, dir / "job.ini", args));
  } catch (const UserError& e) {
    std::string msg = e.what();
    auto pos = msg.find(dir.path.string());
    if (pos != std::string::npos) msg.replace(pos, dir.path.string().size(), "DIR");
    return msg;
  }
  return "";
}
}  // namespace

CATCH_TEST_CASE("INI values, defaults and command-line overrides", "[config]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", "# a job\n[optim]\nlr = 0.1\nname = adamw\n\n[train]\nepochs = 3\n");
  const Keys& keys = train_keys();
  auto c = Config::load(keys, dir / "job.ini", {"--train.epochs=7", "--data.source", "synthetic"});
  JobConfig j = read_job_config(c);
  CATCH_CHECK(j.optim.lr == 0.1);
  CATCH_CHECK(j.optim.name == "adamw");
  CATCH_CHECK(j.train.epochs == 7);  // the command line wins
  CATCH_CHECK(j.data.source == "synthetic");
  CATCH_CHECK(j.train.batch_size == 128);  // default
  CATCH_CHECK(c.where("optim.lr") == dir / "job.ini" + ":3");
  CATCH_CHECK(c.where("train.epochs") == "command line");
  CATCH_CHECK(c.where("train.batch_size") == "default");
  // The resolved config parses back to the same values.
  auto again = read_job_config(Config::from_text(keys, j.resolved_ini, "resolved"));
  CATCH_CHECK(again.resolved_ini == j.resolved_ini);
  CATCH_CHECK(again.train.epochs == 7);
  CATCH_CHECK(j.resolved_ini.find("[optim]\n") != std::string::npos);
  // A UTF-8 byte-order mark, as some Windows editors write, is not part of the first line.
  shrink::test::write_text(dir / "bom.ini", "\xEF\xBB\xBF[train]\nepochs = 4\n");
  CATCH_CHECK(read_job_config(Config::load(keys, dir / "bom.ini", {})).train.epochs == 4);
}

CATCH_TEST_CASE("config errors name the key, file and line", "[config]") {
  CATCH_CHECK(load_error("[optim]\nlrr = 0.1\n") == "DIR/job.ini:2: unknown key 'optim.lrr' (see --help for the keys)");
  CATCH_CHECK(load_error("[optim]\n\nlr = fast\n").find("DIR/job.ini:3: ") == 0);
  CATCH_CHECK(load_error("[optim]\n\nlr = fast\n").find("optim.lr") != std::string::npos);
  CATCH_CHECK(load_error("[optim]\nlr = -1\n") == "DIR/job.ini:2: optim.lr = -1: must be a number in (0, 1000000]");
  CATCH_CHECK(load_error("[data]\nsource = csv\n").find("data.source = csv: expected one of hdf5, idx, cifar10, folder, synthetic") != std::string::npos);
  CATCH_CHECK(load_error("[train]\nepochs\n") == "DIR/job.ini:2: expected 'key = value', got 'epochs'");
  CATCH_CHECK(load_error("", {"--optim.nope=1"}) == "command line: unknown key 'optim.nope' (see --help for the keys)");
  CATCH_CHECK(load_error("", {"--train.epochs=0"}) == "command line: train.epochs = 0: must be an integer in [1, 100000]");
  CATCH_CHECK(load_error("[data]\nshape = 1,x,16\n").find("data.shape") != std::string::npos);
  CATCH_CHECK(load_error("[data]\nmean = 0.5,abc\n").find("data.mean") != std::string::npos);
  const Keys& keys = train_keys();
  CATCH_CHECK_THROWS_WITH(Config::load(keys, "/nonexistent/job.ini", {}), "config file /nonexistent/job.ini: no such file");
}

namespace {

// The job kind a shipped config is for, by its sections (a prune or quantize config has a
// [distill] section too, for its teacher).
std::string job_of(const std::string& text) {
  for (const std::string section : {"pipeline", "prune", "quantize", "student"})
    if (text.rfind("[" + section + "]", 0) == 0 || text.find("\n[" + section + "]") != std::string::npos) return section == "student" ? "distill" : section;
  return "train";
}

// Loads a job config with its kind's keys: every key known, every value passes its rule, the keys
// agree with each other. A job that makes its own model: its spec parses for the data's shape
// (prune and quantize take theirs from a checkpoint of an earlier run, absent on a clean clone).
void check_job_config(const std::string& path, const std::string& job) {
  CATCH_INFO(path << " as " << job);
  Keys keys;
  job_kind(job).add_options(keys);
  Config c = Config::load(keys, path, {});
  if (job == "prune") read_prune_config(c);
  if (job == "quantize") read_quantize_config(c);
  if (!job_kind(job).start_key.empty()) return;
  JobConfig j = read_job_config(c);
  std::string spec = job == "distill" ? c.get<std::string>("student.spec") : j.model;
  if (!spec.empty() && !j.data.shape.empty()) CATCH_CHECK_NOTHROW(parse_spec(spec, j.data.shape, j.data.classes));
}

}  // namespace

CATCH_TEST_CASE("every config under configs/ loads: known keys, valid values, specs that parse, stages that exist", "[config][shipped]") {
  namespace fs = std::filesystem;
  const fs::path root = SHRINK_SOURCE_DIR;
  int pipelines = 0, jobs = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root / "configs")) {
    if (entry.path().extension() != ".ini") continue;
    const std::string path = entry.path().string(), job = job_of(shrink::test::read_text(path));
    if (job != "pipeline") {
      CATCH_CHECK_NOTHROW(check_job_config(path, job));
      ++jobs;
      continue;
    }
    Keys keys("pipeline keys");
    add_pipeline_options(keys);
    Config c = Config::load(keys, path, {});
    for (const std::string stage : {"teacher", "distill", "prune", "quantize"}) {
      const std::string config = c.get<std::string>(stage + ".config");
      CATCH_INFO(path << ": " << stage << ".config = " << config);
      CATCH_CHECK((config.empty() || fs::exists(root / config)));
    }
    ++pipelines;
  }
  CATCH_CHECK(pipelines >= 3);
  CATCH_CHECK(jobs >= 15);
}
