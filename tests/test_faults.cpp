// Faults: `shrink pipeline` killed with SIGKILL at seeded moments in every stage and rerun;
// checkpoint and model-file writes that run out of space; cut last lines of the append-only files.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include "tests/helpers.h"
#include "tests/pipeline_helpers.h"
#include "common/file_io.h"
#include "jobs/compare.h"
#include "quantize/quantize.h"
#include "shrink/runtime.hpp"
#include "train/checkpoint.h"
#include "train/run_log.h"

extern char** environ;

using namespace shrink;
using shrink::test::read_text;
using shrink::test::TempDir;
using shrink::test::write_text;

namespace {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

bool ends_with(const std::string& s, const std::string& tail) { return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0; }

std::string replace_all(std::string s, const std::string& what, const std::string& with) {
  for (size_t at = s.find(what); at != std::string::npos; at = s.find(what, at + with.size())) s.replace(at, what.size(), with);
  return s;
}

// The shrink binary the harness kills: this build's, or SHRINK_FAULTS_BIN (to check that the
// harness catches a bug planted in another build).
std::string shrink_bin() {
  const char* other = std::getenv("SHRINK_FAULTS_BIN");
  return other && *other ? other : SHRINK_BIN;
}

// `shrink pipeline --config FILE` in a child process, its stdout and stderr read line by line.
class PipelineProcess {
 public:
  explicit PipelineProcess(const std::string& config) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    std::vector<std::string> args{shrink_bin(), "pipeline", "--config", config};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
    int err = posix_spawn(&pid_, args[0].c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    fd_ = fds[0];
    if (err != 0) throw std::runtime_error("cannot start " + args[0]);
  }
  ~PipelineProcess() {
    if (pid_ > 0) ::kill(pid_, SIGKILL), wait();
    if (fd_ >= 0) ::close(fd_);
  }
  // Waits up to `ms` for output and appends the complete lines to `lines`; false once it has ended.
  bool read(int ms, std::vector<std::string>& lines) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, ms) <= 0) return true;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0) return errno == EINTR || errno == EAGAIN;
    if (n == 0) {
      if (!partial_.empty()) lines.push_back(partial_), partial_.clear();
      return false;
    }
    partial_.append(buf, static_cast<size_t>(n));
    for (size_t at; (at = partial_.find('\n')) != std::string::npos; partial_.erase(0, at + 1)) lines.push_back(partial_.substr(0, at));
    return true;
  }
  void kill9() { ::kill(pid_, SIGKILL); }
  int wait() {
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string partial_;
};

// A line the pipeline printed, keyed so that the same moment of another run (in another folder,
// resumed, with other timings) has the same key: the stage it belongs to and its first words.
struct Printed {
  std::string stage, key;
  double t = 0;  // seconds since the process started
};

std::string stage_of_line(const std::string& line) {
  if (line.rfind("stage ", 0) != 0) return "";
  auto colon = line.find(':');
  return colon == std::string::npos ? "" : line.substr(6, colon - 6);
}

std::string key_of(const std::string& stage, const std::string& line) {
  if (!stage_of_line(line).empty()) return "stage " + stage_of_line(line);
  if (line.find(" step ") != std::string::npos) return "";  // a timed progress line
  std::istringstream in(line);
  std::string key = stage + "|", word;
  for (int k = 0; k < 4 && in >> word; ++k) key += word + " ";
  return key;
}

// Follows a run's output: the stage it is in and how far it got, as an index into the
// reference run's lines (the highest index of a line seen; -1 before any).
struct Follower {
  const std::map<std::string, size_t>* index;
  std::string root, stage;
  long progress = -1;
  std::vector<std::string> lines;
  void take(const std::vector<std::string>& fresh) {
    for (const auto& raw : fresh) {
      std::string line = replace_all(raw, root, "ROOT");
      lines.push_back(line);
      if (!stage_of_line(line).empty()) stage = stage_of_line(line);
      auto it = index->find(key_of(stage, line));
      if (it != index->end()) progress = std::max(progress, static_cast<long>(it->second));
    }
  }
  std::string output() const {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
  }
};

// A kill point: once the run prints reference line `line` (or any later one), wait `delay`
// seconds and kill it; or, with on_tmp, kill it as soon as a temporary file (a write in flight)
// shows in the run folder, or at the second reference line after `line` if none did.
struct Target {
  size_t line = 0;
  double delay = 0;
  bool on_tmp = false;
};

// Whether a temporary file written since `since` is in the run folder (one a kill left behind
// earlier does not count).
bool has_new_tmp_file(const std::string& root, fs::file_time_type since) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    if (!ends_with(it->path().string(), ".tmp")) continue;
    std::error_code gone;
    auto written = fs::last_write_time(it->path(), gone);
    if (!gone && written >= since) return true;
  }
  return false;
}

// Everything a killed run left must be absent or whole: checkpoints load, model files pass the
// runtime's validation, JSON files parse, metrics.jsonl has whole records (only its last line
// may be cut) and no epoch twice, and a stage marked done has its outputs. Returns how many
// checkpoint and model files were checked.
int check_whole(const std::string& root, int& tmp_files, int& cut_lines) {
  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (!entry.is_regular_file()) continue;
    const std::string p = entry.path().string(), name = entry.path().filename().string();
    CATCH_INFO(p);
    if (ends_with(p, ".tmp")) {
      ++tmp_files;
    } else if (ends_with(p, ".pt")) {
      CATCH_CHECK_NOTHROW(load_checkpoint(p));
      ++checked;
    } else if (ends_with(p, ".shrink")) {
      CATCH_CHECK_NOTHROW(rt::Model::load(p, 1));
      ++checked;
    } else if (ends_with(p, ".json")) {
      CATCH_CHECK(nlohmann::json::parse(read_text(p), nullptr, false).is_object());
    } else if (name == "metrics.jsonl") {
      std::string text = read_text(p);
      std::istringstream in(text);
      std::set<int64_t> epochs;
      size_t read = 0;
      for (std::string line; std::getline(in, line);) {
        read += line.size() + 1;
        bool last_cut = read > text.size();  // the last line, with no newline after it
        auto record = nlohmann::json::parse(line, nullptr, false);
        if (last_cut && (record.is_discarded() || !record.is_object())) {
          ++cut_lines;
          continue;
        }
        CATCH_CHECK(record.is_object());
        if (record.is_object()) CATCH_CHECK(epochs.insert(record.value("epoch", int64_t(-1))).second);  // no epoch twice
      }
    }
  }
  for (const char* s : {"teacher", "distill", "prune", "quantize"})
    if (fs::exists(root + "/" + s + "/summary.json")) CATCH_CHECK(fs::exists(root + "/" + s + "/checkpoints/last.pt"));
  if (fs::exists(root + "/export/summary.json")) CATCH_CHECK(fs::exists(root + "/export/student.shrink"));
  if (fs::exists(root + "/compare/compare.json")) CATCH_CHECK(fs::exists(root + "/compare/report.html"));
  return checked;
}

// A JSON value with what may differ between equal runs taken out: timings, and the run folder
// in paths.
nlohmann::json comparable(const nlohmann::json& v, const std::string& root) {
  if (v.is_string()) return replace_all(v.get<std::string>(), root, "ROOT");
  if (v.is_array()) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : v) out.push_back(comparable(e, root));
    return out;
  }
  if (!v.is_object()) return v;
  nlohmann::json out = nlohmann::json::object();
  for (const auto& [k, e] : v.items())
    if (k != "seconds" && k != "samples_per_s" && k != "train_seconds" && k != "train_samples_per_s" &&
        k != "made_from")  // hashes of checkpoints, which hold their paths and timings
      out[k] = comparable(e, root);
  return out;
}

// The metrics records of every stage's run folder, keyed by folder, without timings.
std::map<std::string, nlohmann::json> metrics_of(const std::string& root) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& entry : fs::recursive_directory_iterator(root)) {
    if (entry.path().filename() != "metrics.jsonl") continue;
    nlohmann::json records = nlohmann::json::array();
    std::ifstream in(entry.path());
    for (std::string line; std::getline(in, line);) records.push_back(comparable(nlohmann::json::parse(line), root));
    out[fs::relative(entry.path(), root).string()] = records;
  }
  return out;
}

std::map<std::string, nlohmann::json> summaries_of(const std::string& root) {
  std::map<std::string, nlohmann::json> out;
  for (const auto& entry : fs::recursive_directory_iterator(root))
    if (entry.path().filename() == "summary.json")
      out[fs::relative(entry.path(), root).string()] = comparable(nlohmann::json::parse(read_text(entry.path().string())), root);
  return out;
}

std::vector<nlohmann::json> curves_of(const nlohmann::json& compare) {
  std::vector<nlohmann::json> out;
  for (const auto& m : compare["models"]) out.push_back(m.value("training_curve", nlohmann::json()));
  return out;
}

// The results a finished run must share with the uninterrupted one.
struct Results {
  std::vector<double> table;
  std::vector<nlohmann::json> curves;
  std::map<std::string, nlohmann::json> summaries, metrics;
};

Results results_of(const std::string& root) {
  auto compare = nlohmann::json::parse(read_text(root + "/compare/compare.json"));
  return {shrink::test::measured(compare), curves_of(compare), summaries_of(root), metrics_of(root)};
}

void check_same(const Results& got, const Results& want) {
  CATCH_CHECK(got.table == want.table);
  CATCH_CHECK(got.curves == want.curves);
  CATCH_CHECK(got.metrics.size() == want.metrics.size());
  for (const auto& [file, records] : want.metrics) {
    CATCH_INFO(file);
    CATCH_CHECK(got.metrics.count(file));
    if (got.metrics.count(file)) CATCH_CHECK(got.metrics.at(file).dump() == records.dump());  // every epoch once, the same numbers
  }
  CATCH_CHECK(got.summaries.size() == want.summaries.size());
  for (const auto& [file, summary] : want.summaries) {
    CATCH_INFO(file);
    CATCH_CHECK(got.summaries.count(file));
    if (got.summaries.count(file)) CATCH_CHECK(got.summaries.at(file).dump() == summary.dump());
  }
}

const std::vector<std::string> kStageNames = {"teacher", "distill", "prune", "quantize", "export", "compare"};

}  // namespace

CATCH_TEST_CASE("faults: shrink pipeline killed with SIGKILL at seeded moments in every stage resumes to the uninterrupted results",
                "[faults][pipeline]") {
  const auto t0 = Clock::now();
  TempDir dir;
  // Iterative pruning in two rounds, so that a kill can land between rounds too.
  const std::map<std::string, std::string> overrides = {{"prune", "--prune.schedule=iterative --prune.rounds=2"}};

  // The uninterrupted run: its results, and when each line was printed.
  const std::string ref_root = dir / "ref";
  std::vector<Printed> ref;
  std::map<std::string, size_t> index;  // key -> first reference line with it
  {
    PipelineProcess p(shrink::test::write_pipeline(dir, "ref", overrides));
    auto start = Clock::now();
    std::string stage;
    std::vector<std::string> lines;
    for (bool open = true; open;) {
      lines.clear();
      open = p.read(50, lines);
      for (const auto& raw : lines) {
        std::string line = replace_all(raw, ref_root, "ROOT");
        if (!stage_of_line(line).empty()) stage = stage_of_line(line);
        ref.push_back({stage, key_of(stage, line), seconds_since(start)});
        if (!ref.back().key.empty()) index.emplace(ref.back().key, ref.size() - 1);
      }
    }
    int status = p.wait();
    CATCH_REQUIRE(WIFEXITED(status));
    CATCH_REQUIRE(WEXITSTATUS(status) == 0);
  }
  const double ref_seconds = seconds_since(t0);
  const Results want = results_of(ref_root);
  CATCH_REQUIRE(want.table.size() == 3 * 5 + 1);

  // Kill points, seeded: in each stage, at a random line of the reference run plus a random
  // share of the time until its next line (so every part of the stage can be hit); and one per
  // writing stage at the moment a temporary file shows (a write in flight).
  const uint32_t seed = 20240610;
  std::mt19937 rng(seed);
  const std::map<std::string, int> per_stage = {{"teacher", 4}, {"distill", 5}, {"prune", 5}, {"quantize", 4}, {"export", 3}, {"compare", 3}};
  std::vector<Target> targets;
  for (const auto& stage : kStageNames) {
    std::vector<size_t> candidates;
    for (size_t i = 0; i + 1 < ref.size(); ++i)
      if (ref[i].stage == stage && !ref[i].key.empty() && index.at(ref[i].key) == i && (stage != "compare" || ref[i].key == "stage compare"))
        candidates.push_back(i);
    CATCH_REQUIRE(!candidates.empty());
    for (int k = 0; k < per_stage.at(stage); ++k) {
      size_t line = candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)];
      double gap = ref[line + 1].t - ref[line].t;
      targets.push_back({line, std::uniform_real_distribution<double>(0, 0.9)(rng) * gap, false});
    }
    if (stage != "compare") targets.push_back({candidates[std::uniform_int_distribution<size_t>(0, candidates.size() - 1)(rng)], 0, true});
  }
  // Spread over a few chains: each chain is one run folder killed at its points in order (each
  // rerun resumes what the previous kill left, until killed again), then run to the end.
  std::sort(targets.begin(), targets.end(), [](const Target& a, const Target& b) { return std::tie(a.line, a.delay) < std::tie(b.line, b.delay); });
  const size_t chains = 4;
  std::map<std::string, int> killed_in;
  int kills = 0, checked_files = 0, tmp_files = 0, cut_lines = 0, reruns = 0, writes_hit = 0;
  for (size_t c = 0; c < chains; ++c) {
    const std::string name = fmt::format("chain{}", c), root = dir / name;
    const std::string config = shrink::test::write_pipeline(dir, name, overrides);
    std::vector<Target> chain;
    for (size_t i = c; i < targets.size(); i += chains) chain.push_back(targets[i]);
    chain.push_back({ref.size(), 0, false});  // the last run: to the end
    for (const auto& target : chain) {
      const bool last = target.line >= ref.size();
      CATCH_INFO(fmt::format("{} run {}: target line {} (+{:.3f}s{})", name, reruns, target.line, target.delay, target.on_tmp ? ", on a temporary file" : ""));
      PipelineProcess p(config);
      ++reruns;
      Follower f{&index, root, "", -1, {}};
      std::vector<std::string> fresh;
      auto run_start = Clock::now();
      auto files_since = fs::file_time_type::clock::now();
      std::optional<Clock::time_point> kill_at;
      bool ended = false;
      while (!ended) {
        CATCH_REQUIRE(seconds_since(run_start) < 300);
        fresh.clear();
        bool armed = !last && f.progress >= static_cast<long>(target.line);
        ended = !p.read(armed ? 1 : 20, fresh);
        f.take(fresh);
        armed = !last && f.progress >= static_cast<long>(target.line);
        if (ended || !armed) continue;
        if (target.on_tmp) {
          bool in_flight = has_new_tmp_file(root, files_since);
          if (in_flight || f.progress >= static_cast<long>(target.line + 2)) kill_at = Clock::now(), writes_hit += in_flight;
        } else if (!kill_at) {
          kill_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(target.delay));
        }
        if (kill_at && Clock::now() >= *kill_at) break;
      }
      if (!ended) p.kill9();
      int status = p.wait();
      for (fresh.clear(); p.read(1000, fresh);) f.take(fresh), fresh.clear();  // what it printed before it died
      f.take(fresh);
      CATCH_INFO(f.output());
      if (WIFSIGNALED(status)) {
        ++kills;
        ++killed_in[f.stage];
        checked_files += check_whole(root, tmp_files, cut_lines);
        continue;
      }
      // It ended before the kill point came (or was meant to): it must have finished, with the
      // uninterrupted run's results; the chain is over.
      CATCH_REQUIRE(WIFEXITED(status));
      CATCH_REQUIRE(WEXITSTATUS(status) == 0);
      int tmp_after = 0;
      check_whole(root, tmp_after, cut_lines);
      CATCH_CHECK(tmp_after == 0);  // a finished rerun wrote again every file a kill left half-written
      check_same(results_of(root), want);
      break;
    }
  }
  std::string where;
  for (const auto& s : kStageNames) where += fmt::format("{}{} {}", where.empty() ? "" : ", ", s, killed_in[s]);
  fmt::print("faults: {} kill points survived ({}) in {} runs of {} chains, {} of them with a write in flight; {} checkpoint and "
             "model files checked whole after the kills, {} temporary files and {} cut metrics lines seen; seed {}; uninterrupted run "
             "{:.1f}s, harness {:.1f}s\n",
             kills, where, reruns, chains, writes_hit, checked_files, tmp_files, cut_lines, seed, ref_seconds, seconds_since(t0));
  CATCH_CHECK(kills >= 20);
  for (const auto& s : kStageNames) {
    CATCH_INFO(s);
    CATCH_CHECK(killed_in[s] >= 1);
  }
}

namespace {

const char* kJob =
    "[data]\nsource = synthetic\nshape = 1,16,16\nsynthetic_train = 400\nsynthetic_test = 100\n"
    "[model]\nspec = conv(32) bn relu maxpool(2) conv(64) bn relu gap linear(classes)\n[train]\nepochs = 1\nthreads = 1\n";

// Runs `shrink ARGS` with stdout dropped and stderr kept, under a file-size limit of `limit_kb`
// KiB (0: none) with SIGXFSZ ignored, so that a write past the limit fails with EFBIG.
shrink::test::CliResult run_limited(const std::string& args, int64_t limit_kb) {
  std::string limit = limit_kb > 0 ? fmt::format("ulimit -f {}; ", limit_kb) : "";
  return shrink::test::run_cmd(fmt::format("bash -c 'trap \"\" XFSZ; {}exec {} {} >/dev/null'", limit, SHRINK_BIN, args));
}

int lines_in(const std::string& text) {
  int n = 0;
  for (char c : text) n += c == '\n';
  return n + (!text.empty() && text.back() != '\n');
}

std::vector<std::string> files_in(const std::string& folder) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(folder)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// A tmpfs mounted for the test (root only), unmounted at the end.
struct SmallFs {
  std::string path;
  bool mounted = false;
  explicit SmallFs(const std::string& p) : path(p) {
    fs::create_directories(path);
    mounted = geteuid() == 0 && ::mount("tmpfs", path.c_str(), "tmpfs", 0, "size=8m") == 0;
  }
  ~SmallFs() {
    if (mounted) ::umount2(path.c_str(), MNT_DETACH);
  }
  // Fills it so that `free_bytes` (about) are left.
  void leave_free(uint64_t free_bytes) {
    fs::remove(path + "/filler");
    struct statvfs s;
    ::statvfs(path.c_str(), &s);
    uint64_t avail = static_cast<uint64_t>(s.f_bavail) * s.f_frsize;
    if (avail > free_bytes) write_text(path + "/filler", std::string(avail - free_bytes, 'x'));
  }
};

// A training run of one epoch, continued to two under `limit` (which makes its next checkpoint
// write fail): exit code 2, one line naming the checkpoint and the reason, the previous
// checkpoints byte-identical, no temporary file left. Then an export over an existing model file.
void check_full_disk(const std::string& folder, const std::function<shrink::test::CliResult(const std::string&)>& limited,
                     const std::function<void(uint64_t)>& before_limited, const std::string& reason) {
  write_text(folder + "/job.ini", kJob);
  const std::string run = folder + "/run", ckpt = run + "/checkpoints";
  auto first = run_limited("train --config " + folder + "/job.ini --out " + run, 0);
  CATCH_INFO(first.out);
  CATCH_REQUIRE(first.code == 0);
  const std::string last = read_text(ckpt + "/last.pt"), best = read_text(ckpt + "/best.pt");
  const auto before = files_in(ckpt);
  before_limited(std::min(last.size(), best.size()) / 2);
  auto r = limited("train --resume --out " + run + " --train.epochs=2");
  CATCH_INFO(r.out);
  CATCH_CHECK(r.code == 2);
  CATCH_CHECK(lines_in(r.out) == 1);
  CATCH_CHECK(r.out.rfind("error: cannot write " + ckpt + "/", 0) == 0);
  CATCH_CHECK(r.out.find(".pt: " + reason) != std::string::npos);
  CATCH_CHECK(read_text(ckpt + "/last.pt") == last);
  CATCH_CHECK(read_text(ckpt + "/best.pt") == best);
  CATCH_CHECK(files_in(ckpt) == before);  // no temporary file left behind
  fmt::print("faults: checkpoint write past the limit: exit {}: {}", r.code, r.out);

  before_limited(0);  // room again for the first export
  const std::string model = folder + "/m.shrink";
  auto e = run_limited("export --checkpoint " + ckpt + "/last.pt --out " + model + " --storage dense", 0);
  CATCH_INFO(e.out);
  CATCH_REQUIRE(e.code == 0);
  const std::string exported = read_text(model);
  before_limited(exported.size() / 2);
  auto f = limited("export --checkpoint " + ckpt + "/last.pt --out " + model + " --storage sparse");
  CATCH_INFO(f.out);
  CATCH_CHECK(f.code == 2);
  CATCH_CHECK(lines_in(f.out) == 1);
  CATCH_CHECK(f.out.rfind("error: cannot write " + model + ": " + reason, 0) == 0);
  CATCH_CHECK(read_text(model) == exported);
  CATCH_CHECK(!fs::exists(model + ".tmp"));
  fmt::print("faults: model file write past the limit: exit {}: {}", f.code, f.out);
}

}  // namespace

CATCH_TEST_CASE("faults: a checkpoint or model file that does not fit fails with one line, exit 2, and keeps the previous file",
                "[faults][cli]") {
  TempDir dir;
  CATCH_SECTION("a file-size limit (ulimit -f, SIGXFSZ ignored)") {
    int64_t limit_kb = 0;
    check_full_disk(
        dir.path.string(), [&](const std::string& args) { return run_limited(args, limit_kb); },
        [&](uint64_t bytes) {
          limit_kb = static_cast<int64_t>(bytes / 1024);
          // The limit stops the checkpoint, not the small files written before it.
          if (limit_kb > 0) CATCH_REQUIRE(bytes > 4 * read_text(dir / "run/config.ini").size());
        },
        "file too large");
  }
  CATCH_SECTION("a full file system (a small tmpfs; root only)") {
    SmallFs small(dir / "small");
    if (!small.mounted) {
      CATCH_WARN("skipped: cannot mount a tmpfs here (needs root)");
      return;
    }
    check_full_disk(
        small.path, [&](const std::string& args) { return run_limited(args, 0); },
        [&](uint64_t bytes) { small.leave_free(bytes ? bytes : 4 << 20); }, "no space left on device");
  }
}

CATCH_TEST_CASE("faults: a cut last line of metrics.jsonl or log.txt is skipped by its readers and not extended", "[faults]") {
  TempDir dir;
  const std::string last = shrink::test::train_synthetic(dir, "run", 1);
  const std::string metrics = dir / "run/metrics.jsonl", log = dir / "run/log.txt";
  // As if killed while writing epoch 2's record and log line.
  std::ofstream(metrics, std::ios::app) << R"({"epoch":2,"lr":0.04,"train_lo)";
  std::ofstream(log, std::ios::app) << "epoch 2/2: train lo";
  // compare's training curve skips the cut line.
  CompareOptions o;
  o.teacher = last;
  o.data = data_config_of_models({last}, {});
  o.bench_seconds = 0.01;
  o.batch = 16;
  auto r = compare_models(o);
  CATCH_CHECK(r["models"][0]["training_curve"].size() == 1);
  // Resumed to 2 epochs: every epoch once, whole lines only; the cut log line ended.
  Keys keys;
  add_train_options(keys);
  RunOptions resume = shrink::test::quiet();
  resume.resume = true;
  run_train_job(read_job_config(Config::load(keys, "", shrink::test::synthetic_job_args(dir / "run", 2))), resume);
  std::string text = read_text(metrics);
  CATCH_CHECK(text.back() == '\n');
  std::istringstream in(text);
  std::vector<int64_t> epochs;
  for (std::string line; std::getline(in, line);) epochs.push_back(nlohmann::json::parse(line).at("epoch").get<int64_t>());
  CATCH_CHECK(epochs == std::vector<int64_t>{1, 2});
  CATCH_CHECK(read_text(log).find("epoch 2/2: train lo\nresuming ") != std::string::npos);
  // An append after a cut line starts on a line of its own.
  fs::create_directories(dir / "m");
  write_text(dir / "m/metrics.jsonl", R"({"epoch":1,"lr")");
  RunLog(dir / "m", true).metrics({{"epoch", 1}});
  CATCH_CHECK(read_text(dir / "m/metrics.jsonl") == "{\"epoch\":1,\"lr\"\n{\"epoch\":1}\n");
}

CATCH_TEST_CASE("faults: a teacher-output cache that does not fit fails with one line and leaves no cache behind", "[faults][distill]") {
  TempDir dir;
  write_text(dir / "job.ini", kJob);
  auto teacher = run_limited("train --config " + dir / "job.ini --out " + dir / "teacher", 0);
  CATCH_REQUIRE(teacher.code == 0);
  // 400 + 100 examples x 10 logits in float32 need about 20 KB: a limit of 8 KB stops the cache
  // before any checkpoint of the student is written.
  const std::string distill = "distill --config " + dir / "job.ini --out " + dir / "student --teacher.path=" + dir / "teacher/checkpoints/last.pt" +
                              " --student.spec=mlp_300_100 --distill.cache_dir=" + dir / "cache";
  write_text(dir / "job.ini", std::string(kJob).replace(std::string(kJob).find("[model]"), 7, "[student]"));
  auto r = run_limited(distill, 8);
  CATCH_INFO(r.out);
  CATCH_CHECK(r.code == 2);
  CATCH_CHECK(lines_in(r.out) == 1);
  CATCH_CHECK(r.out.rfind("error: cannot write " + dir / "cache/teacher-", 0) == 0);
  CATCH_CHECK(r.out.find("file too large") != std::string::npos);
  CATCH_CHECK(files_in(dir / "cache").empty());
  auto again = run_limited(distill, 0);  // with room, the same job runs and writes a cache it can read back
  CATCH_INFO(again.out);
  CATCH_CHECK(again.code == 0);
  CATCH_CHECK(files_in(dir / "cache").size() == 1);
  fs::remove_all(dir / "student");
  CATCH_CHECK(run_limited(distill, 0).code == 0);
}

CATCH_TEST_CASE("faults: processes writing one file at once (workers filling a shared cache) each leave it whole", "[faults]") {
  TempDir dir;
  const std::string path = dir / "shared.bin";
  // Two processes, each rewriting the file with its own bytes, many times over; a third reads it.
  std::vector<pid_t> writers;
  for (char fill : {'a', 'b'}) {
    const pid_t pid = fork();
    CATCH_REQUIRE(pid >= 0);
    if (pid == 0) {
      const std::string content(1 << 20, fill);
      int code = 0;
      for (int k = 0; k < 40 && code == 0; ++k) {
        try {
          write_file_atomic(path, content);
        } catch (const std::exception& e) {
          std::fprintf(stderr, "writer %c: %s\n", fill, e.what());
          code = 1;
        }
      }
      _exit(code);
    }
    writers.push_back(pid);
  }
  int whole = 0, running = 2;
  for (bool last = false; !last;) {
    last = running == 0;  // one more read after both have ended
    const std::string read = read_text(path);
    if (!read.empty()) {  // (not written yet)
      CATCH_REQUIRE(read.size() == (1u << 20));
      CATCH_REQUIRE(read.find_first_not_of(read[0]) == std::string::npos);  // one writer's bytes, never a mix
      ++whole;
    }
    for (pid_t& pid : writers) {
      int status = 0;
      if (pid == 0 || waitpid(pid, &status, WNOHANG) != pid) continue;
      CATCH_CHECK(WIFEXITED(status));
      CATCH_CHECK(WEXITSTATUS(status) == 0);  // no writer failed (a rename of a file the other had renamed away)
      pid = 0, --running;
    }
  }
  CATCH_CHECK(whole > 0);
  CATCH_CHECK_FALSE(fs::exists(path + ".tmp"));
  CATCH_CHECK_FALSE(fs::exists(path + ".lock"));
}
