// The accuracy-budget search: its rules on synthetic cases whose right answer is known, and the
// pipeline with a budget on a tiny dataset (the choice never reads the test set).
#include <fmt/format.h>

#include <cmath>
#include <map>

#include "common/error.h"
#include "jobs/budget.h"
#include "jobs/pipeline.h"
#include "tests/helpers.h"
#include "tests/pipeline_helpers.h"

using namespace shrink;
using shrink::test::TempDir;

namespace {

// Accuracy as a function of the kept share: flat down to 10% kept, then a point lost per 1% less.
double cliff(double kept) { return 0.95 - std::max(0.0, 0.10 - kept); }

PruneSearch run_search(double budget_points, PruneSearch::Settings settings, std::vector<std::pair<double, double>>* tried = nullptr) {
  PruneSearch search(0.95, budget_points, settings);
  while (auto kept = search.next()) {
    search.record(*kept, cliff(*kept));
    if (tried) tried->push_back({*kept, cliff(*kept)});
  }
  return search;
}

// A budget pipeline on the tiny synthetic data whose search starts from the teacher itself,
// trained well enough to prune (8 epochs of AdamW); returns its pipeline.json.
nlohmann::json run_budget(const TempDir& dir, const std::string& name, const std::string& keys, std::map<std::string, std::string> overrides = {}) {
  overrides["teacher"] = "--train.epochs=8 --optim.name=adamw --optim.lr=0.01";
  PipelineRun run;
  run.quiet = true;
  run.config = shrink::test::write_pipeline(dir, name, overrides, keys);
  run_pipeline(run);
  return nlohmann::json::parse(shrink::test::read_text(dir / (name + "/pipeline.json")));
}

}  // namespace

CATCH_TEST_CASE("budget: the pruning rounds stop at the last round within the budget and close in on the limit", "[budget]") {
  // Budget 0.5 points: everything down to 9.5% kept is within it.
  std::vector<std::pair<double, double>> tried;
  PruneSearch six = run_search(0.5, {0.5, 0.05, 6}, &tried);
  CATCH_CHECK(six.rounds() == 6);
  CATCH_CHECK(tried[0].first == 0.5);  // the first step removes half
  for (const auto& [kept, acc] : tried) {
    CATCH_CHECK(within_budget(0.95, 0.5, acc) == (kept >= 0.095));
    if (within_budget(0.95, 0.5, acc)) CATCH_CHECK(six.accepted_kept() <= kept);  // the answer is the prunest round within
  }
  CATCH_CHECK(six.accepted_kept() >= 0.095);
  CATCH_CHECK(six.accepted_kept() < 0.11);
  // With more rounds and a finer step it closes in on the limit (9.5% kept) from the safe side.
  PruneSearch fine = run_search(0.5, {0.5, 0.01, 20});
  CATCH_CHECK(fine.accepted_kept() >= 0.095);
  CATCH_CHECK(fine.accepted_kept() < 0.0975);
  CATCH_CHECK(fine.rounds() < 20);  // stopped by the step, not the round limit
  // A flat curve: every round accepted, up to the round limit.
  PruneSearch flat = run_search(5.0, {0.5, 0.05, 4});
  CATCH_CHECK(flat.accepted_round() == 4);
  CATCH_CHECK(std::abs(flat.accepted_kept() - 0.0625) < 1e-12);
  // A zero budget on a curve that loses at once: nothing is accepted, the start model stays.
  PruneSearch none(0.95, 0.0, {0.5, 0.05, 6});
  while (auto kept = none.next()) none.record(*kept, 0.90);
  CATCH_CHECK(none.accepted_round() == 0);
  CATCH_CHECK(none.accepted_kept() == 1.0);
  CATCH_CHECK(none.rounds() == 4);  // steps 0.5, 0.25, 0.125, 0.0625, then below 0.05
}

CATCH_TEST_CASE("budget: the fewest, costliest layers are kept in float, only as many as the budget needs", "[budget]") {
  // int8 everywhere: 92%; each layer regains this much alone in float, most costly first.
  const std::vector<double> gain = {0.02, 0.005, 0.001, 0.0};
  auto estimate = [&](size_t k) {
    double a = 0.92;
    for (size_t i = 0; i < k; ++i) a += gain[i];
    return a;
  };
  CATCH_CHECK(choose_float_layers(4, estimate, 0.95, 3.0) == std::optional<size_t>(0));  // int8 is within 3 points
  CATCH_CHECK(choose_float_layers(4, estimate, 0.95, 1.0) == std::optional<size_t>(1));
  CATCH_CHECK(choose_float_layers(4, estimate, 0.95, 0.5) == std::optional<size_t>(2));
  CATCH_CHECK(choose_float_layers(4, estimate, 0.95, 0.1) == std::nullopt);  // 94.6% at best
}

CATCH_TEST_CASE("budget: the smallest or fastest candidate within the budget is chosen, and with none the most accurate", "[budget]") {
  auto cand = [](const std::string& name, double acc, int64_t bytes, double ms, bool within) {
    BudgetCandidate c;
    c.name = name, c.val_accuracy = acc, c.file_bytes = bytes, c.latency_ms = ms, c.within = within;
    return c;
  };
  std::vector<BudgetCandidate> all = {cand("dense", 0.95, 4000, 0.30, true), cand("sparse", 0.945, 1200, 0.31, true),
                                      cand("thin", 0.944, 2500, 0.10, true), cand("too-far", 0.90, 500, 0.05, false)};
  bool met = false;
  CATCH_CHECK(all[choose_candidate(all, "size", &met)].name == "sparse");
  CATCH_CHECK(met);
  CATCH_CHECK(all[choose_candidate(all, "latency", &met)].name == "thin");
  all.push_back(cand("as-small-more-accurate", 0.948, 1200, 0.4, true));
  CATCH_CHECK(all[choose_candidate(all, "size", &met)].name == "as-small-more-accurate");
  for (auto& c : all) c.within = false;
  CATCH_CHECK(all[choose_candidate(all, "size", &met)].name == "dense");
  CATCH_CHECK_FALSE(met);
  // Candidates go to pipeline.json and back unchanged.
  BudgetCandidate mixed = cand("mixed-1", 0.93, 777, 0.2, true);
  mixed.precision = "mixed", mixed.float_layers = {"conv1"}, mixed.kept = 0.25, mixed.sparsity = 0.75;
  CATCH_CHECK(BudgetCandidate::from_json(mixed.to_json()).to_json() == mixed.to_json());
}

CATCH_TEST_CASE("budget: the pipeline searches on validation only: another test set changes no decision", "[budget][pipeline]") {
  // The search starts from the teacher itself (no distillation: quicker, and a tiny student
  // distils poorly on this data); it prunes and quantizes within 5 points of it.
  const std::string keys = "budget = 5.0\nmax_rounds = 3\nstages = teacher,prune,quantize,export,compare\n";
  const std::map<std::string, std::string> teacher = {{"teacher", "--train.epochs=8 --optim.name=adamw --optim.lr=0.01"}};
  auto run_with_test_examples = [&](const TempDir& dir, int test_examples) {
    std::string data = shrink::test::kPipelineData;
    data.replace(data.find("synthetic_test = 300"), 20, fmt::format("synthetic_test = {}", test_examples));
    PipelineRun run;
    run.quiet = true;
    run.config = shrink::test::write_pipeline(dir, "budget", teacher, keys, data);
    auto result = run_pipeline(run);
    return std::make_pair(result, nlohmann::json::parse(shrink::test::read_text(dir / "budget/pipeline.json")));
  };
  TempDir a, b;
  auto [result, search] = run_with_test_examples(a, 300);
  auto [result_b, search_b] = run_with_test_examples(b, 120);
  CATCH_CHECK(result["models"][0]["test_accuracy"] != result_b["models"][0]["test_accuracy"]);  // the test sets differ
  // What the search saw and chose: the same (latency is timing, and the paths differ by folder).
  auto decisions = [](const nlohmann::json& s) {
    nlohmann::json d = {{"chosen", s["chosen"]}, {"met", s["budget_met"]}, {"reference", s["teacher_val_accuracy"]}, {"candidates", nlohmann::json::array()}};
    for (const auto& c : s["candidates"])
      d["candidates"].push_back({c["name"], c["val_accuracy"], c["sparsity"], c["file_bytes"], c["within_budget"], c["precision"], c["float_layers"]});
    return d;
  };
  CATCH_CHECK(decisions(search) == decisions(search_b));
  // The candidates: the distilled student, up to 3 prune rounds, int8 (and mixed ones if needed).
  const auto& cands = search["candidates"];
  CATCH_REQUIRE(cands.size() >= 3);
  CATCH_CHECK(cands[0]["name"] == "start");
  CATCH_CHECK(cands[1]["name"] == "prune-1");
  CATCH_CHECK(cands[1]["sparsity"].get<double>() > 0.45);  // the first round removes half the weights
  CATCH_CHECK(search["validation_examples"] == 120);       // 10% of 1200 held out
  bool has_int8 = false;
  for (const auto& c : cands) has_int8 |= c["precision"] == "int8";
  CATCH_CHECK(has_int8);
  // The chosen one is within the budget on validation and is what was exported (the exported file
  // records its test accuracy, the candidate's not: a few bytes apart).
  for (const auto& c : cands)
    if (c["name"] == search["chosen"]) {
      CATCH_CHECK(c["within_budget"] == search["budget_met"]);
      CATCH_CHECK(std::abs(result["models"].back()["file_bytes"].get<double>() - c["file_bytes"].get<double>()) <= 64);
    }
  // The report draws the frontier.
  const std::string html = shrink::test::read_text(a / "budget/compare/report.html");
  CATCH_CHECK(shrink::test::count(html, "class=\"frontier\"") == 2);
  CATCH_CHECK(shrink::test::count(html, "class=\"chosen\"") == 2);
}

CATCH_TEST_CASE("budget: stages that split validation differently or have nothing to search are refused before any work", "[budget][pipeline]") {
  TempDir dir;
  PipelineRun run;
  run.quiet = true;
  run.config = shrink::test::write_pipeline(dir, "seeds", {{"prune", "--data.seed=3"}}, "budget = 1\n");
  CATCH_CHECK_THROWS_WITH(run_pipeline(run), Catch::Contains("pipeline.budget") && Catch::Contains("one data.seed"));
  run.config = shrink::test::write_pipeline(dir, "nothing", {}, "budget = 1\nstages = teacher,distill,export\n");
  CATCH_CHECK_THROWS_WITH(run_pipeline(run), Catch::Contains("switch on the prune or quantize stage"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "seeds/teacher"));
}

CATCH_TEST_CASE("budget: int8 over the budget tries the model before it in int8 and ranks the layers for float, and the choice stays within", "[budget][pipeline]") {
  // One pruning round, then a quantization-aware training that wrecks the model (a learning rate
  // and a weight decay far too high shrink every weight to nothing; a high learning rate alone
  // cost a single validation example on one machine, within the budget): the pruned model in int8
  // is over the budget, so the model before pruning is tried in int8 and the layers are ranked by
  // what int8 costs each.
  TempDir dir;
  auto search = run_budget(dir, "hurt", "budget = 0.9\nmax_rounds = 1\nstages = teacher,prune,quantize,export,compare\n",
                           {{"quantize", "--optim.lr=0.6 --optim.weight_decay=0.5"}});
  std::map<std::string, nlohmann::json> by_name;
  for (const auto& c : search["candidates"]) by_name[c["name"]] = c;
  CATCH_REQUIRE(by_name.count("prune-1"));
  CATCH_REQUIRE(by_name["prune-1"]["within_budget"] == true);
  CATCH_REQUIRE(by_name.count("int8"));
  CATCH_CHECK(by_name["int8"]["within_budget"] == false);
  CATCH_REQUIRE(by_name.count("int8-start"));  // the model before the accepted round, in int8
  CATCH_CHECK(by_name["int8-start"]["precision"] == "int8");
  CATCH_CHECK(by_name["int8-start"]["sparsity"] == 0.0);
  CATCH_CHECK(shrink::test::count(shrink::test::read_text(dir / "hurt/log.txt"), "layers by what their int8 error costs") == 1);
  for (const auto& [name, c] : by_name) {
    if (c["precision"] == "mixed") CATCH_CHECK_FALSE(c["float_layers"].empty());
    if (name == search["chosen"]) CATCH_CHECK(c["within_budget"] == search["budget_met"]);
  }
  CATCH_CHECK(search["budget_met"] == true);  // prune-1 at least is within
}

CATCH_TEST_CASE("budget: objective = latency prunes filters, not weights, and chooses within the budget", "[budget][pipeline]") {
  TempDir dir;
  auto search = run_budget(dir, "fast", "budget = 5\nobjective = latency\nmax_rounds = 2\nstages = teacher,prune,quantize,export,compare\n");
  CATCH_CHECK(search["objective"] == "latency");
  const auto& cands = search["candidates"];
  CATCH_REQUIRE(cands.size() >= 3);
  CATCH_CHECK(cands[1]["name"] == "prune-1");
  CATCH_CHECK(cands[1]["sparsity"] == 0.0);                                             // no zeros: filters removed
  CATCH_CHECK(cands[1]["file_bytes"].get<double>() < 0.75 * cands[0]["file_bytes"].get<double>());  // half the filters gone
  for (const auto& c : cands) {
    CATCH_CHECK(c["latency_ms"].get<double>() > 0);
    if (c["name"] == search["chosen"]) CATCH_CHECK(c["within_budget"] == search["budget_met"]);
  }
}

CATCH_TEST_CASE("budget: a rerun replays the rounds it finished and redoes a folder another search left", "[budget][pipeline]") {
  TempDir dir;
  const std::string keys = "budget = 5\nmax_rounds = 2\nstages = teacher,prune,export\n";
  auto a = run_budget(dir, "again", keys);
  auto stamp = [&](int r) { return std::filesystem::last_write_time(dir / fmt::format("again/prune/search-{}/summary.json", r)); };
  const auto round1 = stamp(1), round2 = stamp(2);
  // Round 2's folder as if another search (another budget, say) had asked it for something else.
  shrink::test::write_text(dir / "again/prune/search-2.asked.json", "{\"from\": \"elsewhere\"}");
  auto b = run_budget(dir, "again", keys);
  CATCH_CHECK(stamp(1) == round1);  // replayed, not run again
  CATCH_CHECK(stamp(2) != round2);  // redone
  for (auto* j : {&a, &b})
    for (auto& c : (*j)["candidates"]) c.erase("latency_ms");
  CATCH_CHECK(a["candidates"] == b["candidates"]);  // the same decisions (one thread: deterministic)
}
