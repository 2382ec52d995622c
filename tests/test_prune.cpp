#include "tests/helpers.h"
#include "common/error.h"
#include "prune/masks.h"
#include "prune/prune.h"
#include "prune/surgery.h"
#include "train/checkpoint.h"

using namespace shrink;
using shrink::test::quiet;
using shrink::test::TempDir;

namespace {



nlohmann::json prune(const std::string& out, const std::string& checkpoint, std::vector<std::string> extra, RunOptions options = quiet(),
                     int64_t epochs = 1) {
  Keys keys;
  add_train_options(keys);
  add_prune_options(keys);
  auto args = shrink::test::synthetic_job_args(out, epochs);
  args.push_back("--prune.checkpoint=" + checkpoint);
  args.insert(args.end(), extra.begin(), extra.end());
  auto config = Config::load(keys, "", args);
  return run_prune_job(read_job_config(config), read_prune_config(config), options);
}

// A net of `spec` from seed `seed`, its batchnorm statistics and scales away from their initial
// values (so that masked channels and kept ones differ), in eval mode.
SpecNet randomized(const std::string& spec, const std::vector<int64_t>& input, uint64_t seed, int64_t classes = 4) {
  torch::manual_seed(seed);
  SpecNet net(parse_spec(spec, input, classes));
  torch::NoGradGuard no_grad;
  for (auto& b : net->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.5, 0.5);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2);
  }
  auto params = net->named_parameters();
  for (const auto& layer : net->spec().layers)
    if (layer.type == LayerType::BatchNorm) {
      params[layer.name + ".weight"].uniform_(0.5, 1.5);
      params[layer.name + ".bias"].uniform_(-0.5, 0.5);
    }
  net->eval();
  return net;
}

// Removes the planned filters and checks the smaller model computes what the masked original does.
SpecNet removed_matches_masked(SpecNet& net, const FilterPlan& plan, torch::Tensor x) {
  torch::NoGradGuard no_grad;
  SpecNet smaller = remove_filters(net, plan);
  smaller->eval();
  CATCH_CHECK(total_cost(smaller->spec()).params < total_cost(net->spec()).params);
  int64_t params = 0;
  for (const auto& p : smaller->parameters()) params += p.numel();
  CATCH_CHECK(params == total_cost(smaller->spec()).params);
  auto before = net->forward(x);
  mask_filters(net, plan);
  auto expected = net->forward(x), got = smaller->forward(x);
  CATCH_CHECK_FALSE(torch::allclose(before, expected, 1e-3, 1e-3));  // the removed filters mattered
  CATCH_CHECK(got.sizes() == expected.sizes());
  CATCH_CHECK(torch::allclose(got, expected, 1e-4, 1e-5));
  return smaller;
}

int64_t channels_in(const ModelSpec& spec, const std::string& layer) { return analyze(spec)[spec.index_of(layer)].in_shape[0]; }

SpecNet two_linear() {
  SpecNet net(parse_spec("a=linear(4,bias=0) b=linear(classes,bias=0)", {2}, 2));
  torch::NoGradGuard no_grad;
  auto p = net->named_parameters();
  p["a.weight"].copy_(torch::arange(1, 9, torch::kFloat32).view({4, 2}));          // 1..8
  p["b.weight"].copy_(torch::arange(1, 9, torch::kFloat32).view({2, 4}) * 0.01);   // 0.01..0.08
  return net;
}

}  // namespace

CATCH_TEST_CASE("global and layer-wise magnitude thresholds", "[prune][masks]") {
  SpecNet net = two_linear();
  PruneTargets t;
  t.layers = {"a", "b"};
  t.sparsity = 0.5;
  t.global = true;
  auto global = magnitude_masks(net, t);
  CATCH_CHECK(global["a"].sum().item<float>() == 8);  // the 8 smallest of all 16 are all of b
  CATCH_CHECK(global["b"].sum().item<float>() == 0);
  t.global = false;
  auto layerwise = magnitude_masks(net, t);
  CATCH_CHECK(torch::equal(layerwise["a"].flatten(), torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kFloat32)));
  CATCH_CHECK(layerwise["b"].sum().item<float>() == 4);
  t.global = true;
  t.layer_sparsity["b"] = 0.25;  // an override is pruned on its own; a is the global pool alone
  auto mixed = magnitude_masks(net, t);
  CATCH_CHECK(mixed["a"].sum().item<float>() == 4);
  CATCH_CHECK(mixed["b"].sum().item<float>() == 6);
}

CATCH_TEST_CASE("LAMP scores rank across layers without regard to a layer's scale", "[prune][masks]") {
  SpecNet net = two_linear();  // b's weights are a's / 100: a global magnitude threshold empties b first
  PruneTargets t;
  t.layers = {"a", "b"};
  t.sparsity = 0.5;
  t.lamp = true;
  auto lamp = magnitude_masks(net, t);
  // a = 1..8 and b = (1..8)/100 score the same: each layer loses the same share, its smallest.
  auto half = torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kFloat32);
  CATCH_CHECK(torch::equal(lamp["a"].flatten(), half));
  CATCH_CHECK(torch::equal(lamp["b"].flatten(), half));
  {
    torch::NoGradGuard no_grad;
    net->named_parameters()["b.weight"].mul_(1e4);  // scaling a layer changes no score
  }
  auto scaled = magnitude_masks(net, t);
  CATCH_CHECK(torch::equal(scaled["a"], lamp["a"]));
  CATCH_CHECK(torch::equal(scaled["b"], lamp["b"]));
  {
    torch::NoGradGuard no_grad;  // b: one weight, 0.5, smaller than all of a's
    net->named_parameters()["b.weight"].copy_(torch::tensor({0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.5f}).view({2, 4}));
  }
  t.sparsity = 14.0 / 16;  // two weights stay: each layer's largest scores 1
  auto two = magnitude_masks(net, t);
  CATCH_CHECK(two["b"].flatten()[7].item<float>() == 1);
  CATCH_CHECK(torch::equal(two["a"].flatten(), torch::tensor({0, 0, 0, 0, 0, 0, 0, 1}, torch::kFloat32)));
  t.lamp = false;  // by magnitude, b's 0.5 goes with the zeros and a's 1..6
  CATCH_CHECK(magnitude_masks(net, t)["b"].sum().item<float>() == 0);
}

CATCH_TEST_CASE("LAMP: scores follow the weights' positions, sum over the larger weights only, and an empty layer", "[prune][masks]") {
  SpecNet net = two_linear();
  auto set = [&](const char* layer, std::vector<float> values) {
    torch::NoGradGuard no_grad;
    auto w = net->named_parameters()[std::string(layer) + ".weight"];
    w.copy_(torch::tensor(values).view_as(w));
  };
  PruneTargets t;
  t.layers = {"a", "b"};
  t.lamp = true;
  // a: 1..8 shuffled, its k-th smallest scoring k^2 / (k^2 + ... + 8^2); b: eight equal weights,
  // scoring 1/8, 1/7, ..., 1/2, 1 by position. The ten lowest are a's 1..6 and b's first four. By
  // w^2 over the layer's whole sum of squares instead, each layer would keep three.
  set("a", {8, 1, 7, 2, 6, 3, 5, 4});
  set("b", {2, 2, 2, 2, 2, 2, 2, 2});
  t.sparsity = 10.0 / 16;
  auto m = magnitude_masks(net, t);
  CATCH_CHECK(torch::equal(m["a"].flatten(), torch::tensor({1, 0, 1, 0, 0, 0, 0, 0}, torch::kFloat32)));
  CATCH_CHECK(torch::equal(m["b"].flatten(), torch::tensor({0, 0, 0, 0, 1, 1, 1, 1}, torch::kFloat32)));
  CATCH_CHECK(m["a"].scalar_type() == torch::kFloat32);
  set("b", {0, 0, 0, 0, 0, 0, 0, 0});  // an all-zero layer scores 0 (not 0/0), so its zeros go first
  t.sparsity = 0.5;
  m = magnitude_masks(net, t);
  CATCH_CHECK(m["b"].sum().item<float>() == 0);
  CATCH_CHECK(m["a"].sum().item<float>() == 8);
}

CATCH_TEST_CASE("masked weights stay exactly zero through SGD with momentum and weight decay", "[prune][masks]") {
  torch::manual_seed(1);
  SpecNet net(parse_spec("conv(4) relu gap linear(classes)", {1, 6, 6}, 3));
  torch::optim::SGD opt(net->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4));
  auto x = torch::randn({8, 1, 6, 6});
  auto y = torch::randint(0, 3, {8});
  auto step = [&](MaskSet* masks) {
    opt.zero_grad();
    torch::nn::functional::cross_entropy(net->forward(x), y).backward();
    if (masks) masks->apply_to_gradients(net);
    opt.step();
    if (masks) masks->apply_to_weights(net);
  };
  for (int i = 0; i < 3; ++i) step(nullptr);  // momentum buffers now hold non-zero values everywhere
  PruneTargets t;
  t.layers = weight_layers(net->spec());
  t.sparsity = 0.6;
  MaskSet masks;
  masks.prepare_for(net->spec());
  masks.set_all(magnitude_masks(net, t));
  masks.apply_to_weights(net);
  int64_t zeros = weight_sparsity(net).zeros;
  CATCH_CHECK(zeros == std::llround(0.6 * weight_sparsity(net).total));
  for (int i = 0; i < 5; ++i) step(&masks);
  CATCH_CHECK(weight_sparsity(net).zeros == zeros);
  auto params = net->named_parameters();
  for (const auto& [name, m] : masks.masks()) CATCH_CHECK((params[name + ".weight"] * (1 - m)).abs().sum().item<float>() == 0);
}

CATCH_TEST_CASE("cubic sparsity schedule", "[prune][schedule]") {
  CATCH_CHECK(cubic_sparsity(0, 1, 5, 0.1, 0.9) == Approx(0.1));
  CATCH_CHECK(cubic_sparsity(1, 1, 5, 0.1, 0.9) == Approx(0.1));
  CATCH_CHECK(cubic_sparsity(3, 1, 5, 0.1, 0.9) == Approx(0.9 - 0.8 * 0.125));
  CATCH_CHECK(cubic_sparsity(4, 1, 5, 0.0, 0.8) == Approx(0.8 - 0.8 / 64));
  CATCH_CHECK(cubic_sparsity(5, 1, 5, 0.1, 0.9) == Approx(0.9));
  CATCH_CHECK(cubic_sparsity(9, 1, 5, 0.1, 0.9) == Approx(0.9));
}

CATCH_TEST_CASE("filter removal with a residual add computes what the masked original does", "[prune][surgery]") {
  SpecNet net = randomized("stem=conv(8) bn r0=relu conv(8) bn relu c2=conv(8) bn add(r0) relu conv(6) bn relu gap linear(classes)", {3, 8, 8}, 2);
  FilterPruning o;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("stem") == plan.keep.at("c2"));  // tied by the add
  CATCH_CHECK(plan.keep.at("stem").size() == 4);
  CATCH_CHECK(plan.keep.at("conv4").size() == 3);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
  CATCH_CHECK(total_cost(smaller->spec()).params < total_cost(net->spec()).params / 2);
  o.excluded = {"conv2"};
  auto partial = plan_filter_pruning(net, o);
  CATCH_CHECK_FALSE(partial.keep.count("conv2"));
  CATCH_CHECK(partial.keep.count("stem"));
}

CATCH_TEST_CASE("filter removal through a concat: its reader keeps both branches' kept channels", "[prune][surgery]") {
  SpecNet net = randomized("a=conv(4) ra=relu b=conv(6,from=input) bn rb=relu cat=concat(ra,rb) conv(8) bn relu gap linear(classes)", {3, 8, 8}, 3);
  FilterPruning o;
  o.layer_ratio["b"] = 1.0 / 3;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("a").size() == 2);
  CATCH_CHECK(plan.keep.at("b").size() == 4);
  CATCH_CHECK(plan.keep.at("conv3").size() == 4);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
  const ModelSpec& s = smaller->spec();
  CATCH_CHECK(s.layer("a").out == 2);
  CATCH_CHECK(s.layer("b").out == 4);
  CATCH_CHECK(channels_in(s, "conv3") == 2 + 4);
  CATCH_CHECK(smaller->named_parameters()["conv3.weight"].size(1) == 2 + 4);
  CATCH_CHECK(analyze(s)[s.index_of("cat")].out_shape == std::vector<int64_t>{6, 8, 8});
  // Channels an add ties to a concat's are kept whole, and with them the concat's parts.
  SpecNet tied(parse_spec("a=conv(4) b=conv(4,from=input) cat=concat(a,b) c=conv(8,from=input) add(cat) gap linear(classes)", {3, 8, 8}, 4));
  auto none = plan_filter_pruning(tied, o);
  CATCH_CHECK(none.keep.empty());
}

CATCH_TEST_CASE("filter removal through squeeze-excite: the mul ties the excited channels to the expand conv", "[prune][surgery]") {
  SpecNet net = randomized("conv(8) bn x=relu gap(keep=1) conv(4,k=1,bias=1) relu conv(8,k=1,bias=1) hs=hardsigmoid mul(x,hs) "
                           "conv(8) bn relu gap linear(classes)",
                           {3, 8, 8}, 4);
  FilterPruning o;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("conv1") == plan.keep.at("conv3"));  // tied by mul(x, hs)
  CATCH_CHECK(plan.keep.at("conv1").size() == 4);
  CATCH_CHECK(plan.keep.at("conv2").size() == 2);  // the squeeze is a space of its own
  CATCH_CHECK(plan.keep.at("conv4").size() == 4);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
  const ModelSpec& s = smaller->spec();
  auto info = analyze(s);
  CATCH_CHECK(info[s.index_of("x")].out_shape == std::vector<int64_t>{4, 8, 8});
  CATCH_CHECK(s.layer("conv3").out == info[s.index_of("x")].out_shape[0]);  // the excite conv's out is x's pruned channels
  CATCH_CHECK(channels_in(s, "conv2") == 4);
  CATCH_CHECK(channels_in(s, "conv3") == 2);
  CATCH_CHECK(channels_in(s, "conv4") == 4);
  CATCH_CHECK(info[s.index_of("mul1")].out_shape == std::vector<int64_t>{4, 8, 8});
}

CATCH_TEST_CASE("filter removal through a squeeze-excite of linear layers: the gate's features are cut with the channels they scale", "[prune][surgery]") {
  SpecNet net = randomized("conv(8) bn x=relu gap linear(4) relu linear(8) sigmoid unflatten mul(x) conv(8) bn relu gap linear(classes)", {3, 8, 8}, 7);
  FilterPruning o;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("conv1") == plan.keep.at("linear2"));  // tied through the mul and the unflatten
  CATCH_CHECK(plan.keep.at("conv1").size() == 4);
  CATCH_CHECK(plan.keep.at("linear1").size() == 2);  // the squeeze's features are a space of their own
  CATCH_CHECK(plan.keep.at("conv2").size() == 4);
  CATCH_CHECK_FALSE(plan.keep.count("linear3"));  // the classes
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
  const ModelSpec& s = smaller->spec();
  CATCH_CHECK(analyze(s)[s.index_of("unflatten1")].out_shape == std::vector<int64_t>{4, 1, 1});
  CATCH_CHECK(channels_in(s, "linear1") == 4);
  CATCH_CHECK(channels_in(s, "linear2") == 2);
  CATCH_CHECK(s.layer("linear2").out == 4);
}

CATCH_TEST_CASE("filter removal cuts hidden linear features: an MLP head shrinks row by row, the classes stay", "[prune][surgery]") {
  SpecNet net = randomized("conv(8) bn relu maxpool(k=2,s=2) flatten linear(32) relu dropout linear(16) relu linear(classes)", {3, 8, 8}, 9);
  FilterPruning o;
  o.layer_ratio["linear2"] = 0.75;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("conv1").size() == 4);
  CATCH_CHECK(plan.keep.at("linear1").size() == 16);
  CATCH_CHECK(plan.keep.at("linear2").size() == 4);
  CATCH_CHECK_FALSE(plan.keep.count("linear3"));
  // Ranked globally, one threshold would empty linear1 (rows of 128 inputs have far smaller
  // weights than the conv's filters of 27): linear features keep their share per layer.
  FilterPruning global;
  global.global = true;
  auto ranked = plan_filter_pruning(net, global);
  CATCH_CHECK(ranked.keep.at("linear1").size() == 16);
  CATCH_CHECK(ranked.keep.at("linear2").size() == 8);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
  const ModelSpec& s = smaller->spec();
  CATCH_CHECK(analyze(s)[s.index_of("linear1")].in_shape == std::vector<int64_t>{4 * 4 * 4});  // 4 channels of 4x4 flattened
  CATCH_CHECK(s.layer("linear1").out == 16);
  CATCH_CHECK(channels_in(s, "linear2") == 16);
  CATCH_CHECK(channels_in(s, "linear3") == 4);
  CATCH_CHECK(analyze(s).back().out_shape == std::vector<int64_t>{4});
  // The one-line errors name what may be given a ratio.
  o.layer_ratio = {{"relu1", 0.5}};
  CATCH_CHECK_THROWS_WITH(plan_filter_pruning(net, o), Catch::Contains("'relu1' is not a conv or linear layer"));
}

CATCH_TEST_CASE("global filter removal by LAMP score: blind to a layer's scale, linear features ranked with conv filters", "[prune][surgery]") {
  const char* spec = "conv(8) bn relu conv(16) bn relu maxpool(k=2,s=2) flatten linear(32) relu linear(classes)";
  SpecNet net = randomized(spec, {3, 8, 8}, 10);
  FilterPruning lamp;
  lamp.global = lamp.lamp = true;
  auto plan = plan_filter_pruning(net, lamp);
  for (const char* layer : {"conv1", "conv2", "linear1"}) CATCH_CHECK(plan.keep.count(layer));
  CATCH_CHECK_FALSE(plan.keep.count("linear2"));
  size_t kept = 0;
  for (const auto& [layer, channels] : plan.keep) kept += channels.size();
  CATCH_CHECK(kept == 28);  // half of the 8 + 16 + 32 filters and features, by one threshold
  // A conv before a batchnorm can have weights of any scale: LAMP's plan stays the same when
  // conv2's are 100 times smaller, where one magnitude threshold keeps all of conv1 and cuts
  // conv2 to what is left of the half.
  FilterPruning magnitude;
  magnitude.global = true;
  SpecNet scaled = randomized(spec, {3, 8, 8}, 10);
  {
    torch::NoGradGuard no_grad;
    scaled->named_parameters()["conv2.weight"].mul_(0.01);
  }
  CATCH_CHECK(plan_filter_pruning(scaled, lamp).keep == plan.keep);
  auto by_magnitude = plan_filter_pruning(scaled, magnitude);
  CATCH_CHECK(by_magnitude.keep.at("conv1").size() == 8);
  CATCH_CHECK(by_magnitude.keep.at("conv2").size() == 4);
  removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
}

CATCH_TEST_CASE("filter removal through prelu: per-channel slopes are cut with their channels, one shared slope stays", "[prune][surgery]") {
  SpecNet net = randomized("conv(8) bn prelu(per_channel=1) conv(8) bn prelu conv(8) bn relu gap linear(classes)", {3, 8, 8}, 8);
  FilterPruning o;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("conv1").size() == 4);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
  auto params = smaller->named_parameters();
  CATCH_CHECK(params["prelu1.weight"].size(0) == 4);
  CATCH_CHECK(params["prelu2.weight"].size(0) == 1);
}

CATCH_TEST_CASE("filter removal through slices and a channel shuffle: the channels they move are kept whole", "[prune][surgery]") {
  SpecNet net = randomized(test::kShuffleUnit, {3, 10, 10}, 6);
  FilterPruning o;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(!plan.keep.count("conv1"));  // sliced
  CATCH_CHECK(!plan.keep.count("conv3"));  // joined to a slice, then shuffled
  CATCH_CHECK(plan.keep.at("conv2").size() == 4);  // inside the branch: its own space, through the depthwise conv
  CATCH_CHECK(plan.keep.at("conv4").size() == 8);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({5, 3, 10, 10}));
  const ModelSpec& s = smaller->spec();
  CATCH_CHECK(channels_in(s, "conv3") == 4);
  CATCH_CHECK(analyze(s)[s.index_of("shuffle1")].out_shape == std::vector<int64_t>{16, 10, 10});
}

CATCH_TEST_CASE("filter removal on the mobilenet_v2(width=0.5) preset computes what the masked original does", "[prune][surgery]") {
  SpecNet net = randomized("mobilenet_v2(width=0.5)", {3, 32, 32}, 5, 10);
  FilterPruning o;
  o.ratio = 0.25;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK(plan.keep.at("b2_project") == plan.keep.at("b3_project"));  // tied by b3_add
  CATCH_CHECK(plan.keep.at("b4_project") == plan.keep.at("b6_project"));  // b5_add and b6_add
  CATCH_CHECK(plan.keep.at("b4_project").size() == 12);
  SpecNet smaller = removed_matches_masked(net, plan, torch::randn({2, 3, 32, 32}));
  const ModelSpec& s = smaller->spec();
  CATCH_CHECK(total_cost(s).params < total_cost(net->spec()).params * 4 / 5);
  CATCH_CHECK(s.layer("b3_expand").out == 72);                                            // 96 * 3/4
  CATCH_CHECK(smaller->named_parameters()["b3_dw.weight"].size(0) == 72);                 // follows its expand
  CATCH_CHECK(channels_in(s, "b3_project") == 72);
  CATCH_CHECK(s.layer("head").out == 960);                                                // 1280 * 3/4
  CATCH_CHECK(smaller->named_parameters()["fc.weight"].size(1) == 960);
}

CATCH_TEST_CASE("one-shot pruning job: exact sparsity, masks in checkpoints, survives resume", "[prune][job]") {
  TempDir dir;
  std::string start = shrink::test::train_synthetic(dir, "base", 1);
  auto summary = prune(dir / "p", start, {"--prune.schedule=oneshot", "--prune.sparsity=0.75", "--prune.exclude=conv1"}, quiet(), 2);
  SpecNet pruned = load_checkpoint(dir / "p/checkpoints/last.pt").model;
  auto params = pruned->named_parameters();
  CATCH_CHECK((params["conv1.weight"] == 0).sum().item<int64_t>() == 0);  // excluded stays dense
  int64_t pool = params["conv2.weight"].numel() + params["linear1.weight"].numel();
  int64_t zeros = (params["conv2.weight"] == 0).sum().item<int64_t>() + (params["linear1.weight"] == 0).sum().item<int64_t>();
  CATCH_CHECK(zeros == std::llround(0.75 * pool));
  CATCH_CHECK(summary["rounds"].size() == 1);
  CATCH_CHECK(summary["nonzero_params"].get<int64_t>() < summary["params"].get<int64_t>());
  MaskSet masks;
  masks.prepare_for(pruned->spec());
  CATCH_CHECK(load_extra_state(dir / "p/checkpoints/last.pt", "masks", masks));
  CATCH_CHECK(masks.masks()["conv2"].sum().item<float>() < masks.masks()["conv2"].numel());
  // Interrupted after one of two epochs, then resumed: the masks come back from the checkpoint.
  auto killed = quiet();
  killed.stop_after_epochs = 1;
  prune(dir / "q", start, {"--prune.schedule=oneshot", "--prune.sparsity=0.75", "--prune.exclude=conv1"}, killed, 2);
  auto resume = quiet();
  resume.resume = true;
  auto resumed = prune(dir / "q", start, {"--prune.schedule=oneshot", "--prune.sparsity=0.75", "--prune.exclude=conv1"}, resume, 2);
  CATCH_CHECK(resumed["sparsity"] == summary["sparsity"]);
  auto report = prune_report(dir / "q/checkpoints/last.pt");
  CATCH_CHECK(report.find("total") != std::string::npos);
  CATCH_CHECK(report.find("conv2") != std::string::npos);
}

CATCH_TEST_CASE("iterative pruning rewinds to the saved initial weights", "[prune][rewind]") {
  TempDir dir;
  std::string start = shrink::test::train_synthetic(dir, "base", 1, {"--train.keep_epochs=0"});
  CATCH_CHECK_THROWS_WITH(prune(dir / "q", start, {"--prune.schedule=iterative", "--prune.rounds=2", "--prune.rewind=epoch:7"}),
                          Catch::Contains("epoch-7.pt does not exist") && Catch::Contains("train.keep_epochs"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "q"));  // refused before anything is written
  auto summary = prune(dir / "p", start, {"--prune.schedule=iterative", "--prune.rounds=2", "--prune.sparsity=0.5", "--prune.rewind=init"});
  CATCH_CHECK(summary["rounds"].size() == 2);
  CATCH_CHECK(summary["sparsity"].get<double>() == Approx(0.5).margin(0.01));
  auto init = load_checkpoint(dir / "base/checkpoints/epoch-0.pt").model->named_parameters();
  auto round2 = load_checkpoint(dir / "p/round-2/start.pt").model->named_parameters();
  for (const char* name : {"conv2.weight", "linear1.weight"}) {
    auto kept = round2[name] != 0;
    CATCH_CHECK(torch::equal(round2[name].masked_select(kept), init[name].masked_select(kept)));
  }
}

CATCH_TEST_CASE("gradual pruning reaches its target and bad layer names are errors", "[prune][errors]") {
  TempDir dir;
  std::string start = shrink::test::train_synthetic(dir, "base", 1);
  auto gradual = prune(dir / "g", start, {"--prune.schedule=gradual", "--prune.sparsity=0.6", "--prune.end_epoch=1.5"}, quiet(), 2);
  CATCH_CHECK(gradual["sparsity"].get<double>() == Approx(0.6).margin(0.005));
  // Updates every epoch fall on 0 and 1 only, not on end_epoch 1.5: the schedule updates there too
  // (it ended at 57% of 60%).
  auto coarse = prune(dir / "h", start, {"--prune.schedule=gradual", "--prune.sparsity=0.6", "--prune.end_epoch=1.5", "--prune.update_every=1"}, quiet(), 2);
  CATCH_CHECK(coarse["sparsity"].get<double>() == Approx(0.6).margin(0.005));
  CATCH_CHECK_THROWS_WITH(prune(dir / "i", start, {"--prune.schedule=gradual", "--prune.end_epoch=2"}, quiet(), 2),
                          Catch::Contains("must come before training ends at epoch 2"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "i"));
  CATCH_CHECK_THROWS_WITH(prune(dir / "a", start, {"--prune.exclude=nope*"}), Catch::Contains("prune.exclude: 'nope*' matches no layer"));
  CATCH_CHECK_THROWS_WITH(prune(dir / "b", start, {"--prune.layers=bn1"}), Catch::Contains("only conv and linear weights are pruned"));
  CATCH_CHECK_THROWS_WITH(prune(dir / "c", start, {"--prune.layers=re:conv[0-9"}), Catch::Contains("not a valid regular expression"));
  CATCH_CHECK_THROWS_WITH(prune(dir / "d", start, {"--prune.overrides=conv1"}), Catch::Contains("is not pattern:value"));
  CATCH_CHECK_THROWS_WITH(prune(dir / "e", start, {"--prune.method=structured"}), Catch::Contains("prune.schedule"));
  CATCH_CHECK_THROWS_WITH(prune(dir / "f", start, {"--prune.score=lamp", "--prune.scope=layer"}), Catch::Contains("prune.score = lamp: lamp ranks weights or filters across layers"));
  // prune.score = auto (the default): LAMP for filters ranked globally, magnitude otherwise.
  auto score_of = [&](std::vector<std::string> args) {
    Keys keys;
    add_train_options(keys);
    add_prune_options(keys);
    args.push_back("--prune.checkpoint=" + start);
    return read_prune_config(Config::load(keys, "", args)).score;
  };
  CATCH_CHECK(score_of({"--prune.method=structured", "--prune.schedule=oneshot"}) == "lamp");
  CATCH_CHECK(score_of({"--prune.method=structured", "--prune.schedule=oneshot", "--prune.scope=layer"}) == "magnitude");
  CATCH_CHECK(score_of({}) == "magnitude");
  CATCH_CHECK(score_of({"--prune.method=structured", "--prune.schedule=oneshot", "--prune.score=magnitude"}) == "magnitude");
  CATCH_CHECK(match_layers(parse_spec("usps_student", {1, 16, 16}, 10), "re:conv[12],linear*", "x") ==
              std::vector<std::string>{"conv1", "conv2", "linear1"});
  CATCH_CHECK_THROWS_WITH(match_layers(parse_spec("usps_student", {1, 16, 16}, 10), "re:^conv", "x"),
                          Catch::Contains("'re:^conv' matches no layer of the model (a re: pattern must match the whole name"));
}

CATCH_TEST_CASE("a quantized checkpoint is refused: prune the float one, then quantize", "[prune][quantized]") {
  TempDir dir;
  std::string start = shrink::test::train_synthetic(dir, "base", 1);
  std::string quantized = shrink::test::quantize_synthetic(dir, "q", start);
  CATCH_CHECK_THROWS_WITH(prune(dir / "p", quantized, {"--prune.schedule=oneshot"}),
                          Catch::Contains("prune.checkpoint " + quantized + ": a quantized checkpoint cannot be pruned") &&
                              Catch::Contains("prune the float checkpoint it came from, then quantize the pruned one"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "p"));  // refused before any work
  CATCH_CHECK_THROWS_WITH(sensitivity_table(quantized, DataConfig{}, {0.5}), Catch::Contains("a quantized checkpoint cannot be pruned"));
  // The report only reads weights: a quantized checkpoint's float weights are the ones it had.
  CATCH_CHECK(prune_report(quantized) == prune_report(start));
}

CATCH_TEST_CASE("filter removal keeps channels whole where sigmoid would turn a masked zero into 0.5", "[prune][surgery]") {
  SpecNet net = randomized("c1=conv(8) bn sigmoid c2=conv(8) bn hardsigmoid c3=conv(8) bn relu gap linear(classes)", {3, 8, 8}, 6);
  FilterPruning o;
  auto plan = plan_filter_pruning(net, o);
  CATCH_CHECK_FALSE(plan.keep.count("c1"));
  CATCH_CHECK_FALSE(plan.keep.count("c2"));
  CATCH_CHECK(plan.keep.at("c3").size() == 4);
  removed_matches_masked(net, plan, torch::randn({5, 3, 8, 8}));
}
