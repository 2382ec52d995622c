// ONNX export (export/onnx_writer.cpp): fp32 files of every layer kind at opsets 11, 13 and 17 and
// int8 QDQ files, checked by onnx.checker (python3-onnx), read back by shrink import, and run by
// ONNX Runtime (tools/ort/ort.js, npm's onnxruntime-node): the int8 simulation, shrink-run and
// ONNX Runtime agree, and ONNX Runtime runs every int8 conv and linear as an integer kernel.
#include "tests/helpers.h"
#include "export/export.h"
#include "jobs/import.h"
#include "quantize/qnet.h"
#include "train/checkpoint.h"

using namespace shrink;
using shrink::test::relative_error;
using shrink::test::TempDir;

namespace {

struct Net {
  std::string spec;
  std::vector<int64_t> input;
};

// Every layer kind: the USPS presets; hardswish, sigmoid and hardsigmoid after convs, adds and
// pools; squeeze-excite (mul), concat, dilation, ceil mode; a batchnorm no conv folds, an average
// pool without the padding, flatten, dropout and a linear chain; depthwise and grouped convs;
// asymmetric pads; a feature-vector input.
const std::vector<Net> kNets = {
    {"usps_student", {1, 16, 16}},
    {"usps_teacher", {1, 16, 16}},
    {"conv(16) bn hardswish maxpool(2) conv(16) bn h=hardswish conv(16) bn add(h) hardswish avgpool(2) hardswish gap linear(classes)", {1, 12, 12}},
    {"conv(16) bn sigmoid maxpool(2) conv(16) bn s=sigmoid conv(16) bn add(s) sigmoid avgpool(2) sigmoid gap linear(classes)", {1, 12, 12}},
    {"conv(16) bn x=relu gap(keep=1) conv(8,k=1,bias=1) relu conv(16,k=1,bias=1) hs=hardsigmoid m=mul(x,hs) "
     "a=conv(8) bn ra=relu b=conv(8,from=m) bn h=hardswish cat=concat(ra,h) conv(16,d=2) bn relu6 "
     "maxpool(3,s=2,p=1,ceil=1) hardsigmoid gap linear(classes)",
     {3, 12, 12}},
    {"conv(8,k=3,s=2,p=0) relu bn avgpool(3,s=1,p=1,include_pad=0) flatten dropout linear(32) relu linear(classes)", {2, 11, 11}},
    // inverted residuals: expand, depthwise (strided and not), project, residual add; a grouped conv
    {"conv(16) bn relu6 conv(32,k=1) bn relu6 dwconv(s=2) bn relu6 conv(16,k=1) o=bn conv(32,k=1) bn relu6 dwconv bn relu6 "
     "conv(16,k=1) bn add(o) conv(32,g=4) bn relu gap linear(classes)",
     {1, 12, 12}},
    {"conv(8,pt=0,pl=1,pb=2,pr=1) bn relu conv(8,k=1) bn relu gap linear(classes)", {1, 9, 9}},  // asymmetric pads
    {"linear(16) bn relu dropout linear(classes)", {12}},                                        // a feature vector
    // ceil mode: a last window that would start in the padding (torch drops it; onnx's shape
    // inference did not: ONNX Runtime refused the file), then one that ceil mode adds
    {"conv(8) relu maxpool(2,s=2,p=1,ceil=1) conv(8) relu maxpool(2,s=2,ceil=1) flatten linear(classes)", {2, 9, 9}},
    {test::kShuffleUnit, {3, 10, 10}},  // slice, concat and channel shuffle
    {test::kNonSquareKernels, {2, 11, 9}},
    {test::kUnequalStridesAndPools, {2, 14, 12}},
    {test::kSqueezeExciteLinear, {2, 8, 8}},
    {"conv(8) bn leaky_relu maxpool(2) l=leaky_relu(0.2) conv(8) bn add(l) leaky_relu(0.3) gap linear(classes)", {1, 12, 12}},
    {"conv(8) bn tanh maxpool(2) e=elu(0.5) conv(8) bn add(e) elu tanh gap linear(classes)", {1, 12, 12}},
    {"conv(8) bn mish maxpool(2) s=softplus conv(8) bn add(s) mish gap linear(classes)", {1, 12, 12}},
    {"conv(8) bn prelu maxpool(2) p=prelu(per_channel=1) conv(8) bn add(p) gap linear(8) prelu(per_channel=1) linear(classes)", {1, 12, 12}},
    {"conv(8) bn gelu maxpool(2) g=gelu conv(8) bn add(g) gelu gap linear(8) gelu linear(classes)", {1, 12, 12}},
    {"conv(8) bn x=relu m=gmp(keep=1) a=gap(keep=1,from=x) concat(m,a) conv(8,k=1) bn relu gmp linear(classes)", {2, 9, 9}},  // global max pools
};

}  // namespace

CATCH_TEST_CASE("ONNX export: fp32 files of every layer kind pass onnx.checker, compute in ONNX Runtime what shrink-run computes, and import back",
                "[onnx][export]") {
  TempDir dir;
  std::vector<std::string> files;
  int k = 0;
  for (const Net& net : kNets) {
    for (int64_t opset : {11, 13, 17}) {
      CATCH_INFO(net.spec << " opset " << opset);
      const std::string name = "m" + std::to_string(k++);
      torch::manual_seed(k);
      const std::vector<float> mean(net.input[0], 0.25f), stdev(net.input[0], 0.5f);
      auto ckpt = test::random_checkpoint(dir, name + ".pt", net.spec, net.input, 7,
                                          {{"mean", mean}, {"std", stdev}, {"class_names", {"a", "b", "c", "d", "e", "f", "g"}}});
      ExportOptions o;
      o.opset = opset;
      export_model(ckpt, dir / (name + ".onnx"), o);
      export_model(ckpt, dir / (name + ".shrink"), {});
      files.push_back(dir / (name + ".onnx"));
      std::vector<int64_t> shape{20};
      shape.insert(shape.end(), net.input.begin(), net.input.end());
      auto x = torch::rand(shape) * 2;  // raw inputs: the graph normalizes them as shrink-run does
      auto expect = test::run_runtime(dir / (name + ".shrink"), x);
      CATCH_CHECK(relative_error(test::run_ort(dir / (name + ".onnx"), x), expect) < 1e-4);
      // Read back: the same model, normalization and class names, so the same logits exactly.
      ImportRequest r;
      r.file = dir / (name + ".onnx");
      r.out = dir / (name + ".re.pt");
      import_model(r);
      auto meta = read_checkpoint_meta(r.out);
      CATCH_CHECK(meta["mean"].get<std::vector<float>>() == mean);
      CATCH_CHECK(meta["class_names"].size() == 7);
      export_model(r.out, dir / (name + ".re.shrink"), {});
      CATCH_CHECK(torch::equal(test::run_runtime(dir / (name + ".re.shrink"), x), expect));
      // A fresh head: the file's class names were its own classes', not the new ones'.
      r.classes = 3;
      import_model(r);
      CATCH_CHECK(read_checkpoint_meta(r.out)["class_names"].empty());
      if (opset != 13) continue;
      // The .shrink file imports too (its batchnorm folded): exported again, it computes the same exactly.
      ImportRequest from_file;
      from_file.file = dir / (name + ".shrink");
      from_file.out = dir / (name + ".file.pt");
      CATCH_CHECK(import_model(from_file).find("shrink model file") != std::string::npos);
      auto file_meta = read_checkpoint_meta(from_file.out);
      CATCH_CHECK(file_meta["mean"].get<std::vector<float>>() == mean);
      CATCH_CHECK(file_meta["std"].get<std::vector<float>>() == stdev);
      CATCH_CHECK(file_meta["class_names"].size() == 7);
      export_model(from_file.out, dir / (name + ".file.shrink"), {});
      CATCH_CHECK(torch::equal(test::run_runtime(dir / (name + ".file.shrink"), x), expect));
    }
  }
  CATCH_CHECK(test::check_onnx_files(files) == "ok " + std::to_string(files.size()) + "\n");
  // Without the normalization in the graph, ONNX users feed normalized input.
  auto ckpt = test::random_checkpoint(dir, "n.pt", "usps_student", {1, 16, 16}, 10, {{"mean", {0.5}}, {"std", {0.25}}});
  ExportOptions o;
  o.normalization = false;
  export_model(ckpt, dir / "n.onnx", o);
  export_model(ckpt, dir / "n.shrink", {});
  auto x = torch::rand({8, 1, 16, 16});
  CATCH_CHECK(relative_error(test::run_ort(dir / "n.onnx", (x - 0.5) / 0.25), test::run_runtime(dir / "n.shrink", x)) < 1e-4);
}

CATCH_TEST_CASE("import of .shrink files: an int8 file, a damaged one and a wrong --input are one clear line each", "[onnx][import]") {
  TempDir dir;
  auto ckpt = test::random_checkpoint(dir, "s.pt", "usps_student", {1, 16, 16}, 10, {{"image_input", true}});
  export_model(ckpt, dir / "s.shrink", {});
  ImportRequest r;
  r.file = dir / "s.shrink";
  r.out = dir / "s.re.pt";
  import_model(r);
  CATCH_CHECK(read_checkpoint_meta(r.out)["image_input"] == true);  // the file's, with no --image-input
  export_model(test::random_checkpoint(dir, "f.pt", "usps_student", {1, 16, 16}, 10), dir / "f.shrink", {});
  ImportRequest flagged;
  flagged.file = dir / "f.shrink";
  flagged.out = dir / "f.re.pt";
  flagged.image_input = true;
  import_model(flagged);
  CATCH_CHECK(read_checkpoint_meta(flagged.out)["image_input"] == true);  // --image-input on a file without it
  r.input = {1, 12, 12};
  CATCH_CHECK_THROWS_WITH(import_model(r), Catch::Contains("--input 1x12x12") && Catch::Contains("takes examples of shape 1x16x16"));
  r.input.clear();
  ExportOptions int8;
  int8.precision = "int8";
  export_model(test::quantize_synthetic(dir, "q", ckpt), dir / "q.shrink", int8);
  r.file = dir / "q.shrink";
  CATCH_CHECK_THROWS_WITH(import_model(r), Catch::Contains("an int8 model file holds no float weights to import"));
  std::filesystem::copy_file(dir / "s.shrink", dir / "cut.shrink");
  std::filesystem::resize_file(dir / "cut.shrink", 1000);
  r.file = dir / "cut.shrink";
  CATCH_CHECK_THROWS_WITH(import_model(r), Catch::Contains("cut.shrink") && Catch::Contains("truncated"));
}

CATCH_TEST_CASE("ONNX export: int8 QDQ files: the simulation, shrink-run and ONNX Runtime agree, every conv and linear an integer kernel",
                "[onnx][export][int8]") {
  for (const Net& net : kNets) {
    CATCH_INFO(net.spec);
    TempDir dir;
    torch::manual_seed(3);
    auto ckpt = test::random_checkpoint(dir, "fp.pt", net.spec, net.input, 7);
    std::vector<int64_t> shape{64};
    shape.insert(shape.end(), net.input.begin(), net.input.end());
    auto spec = parse_spec(net.spec, net.input, 7);
    QuantNet q = test::calibrated_int8(dir, spec, ckpt, test::unfoldable_batchnorm_float(spec), torch::randn(shape));
    shape[0] = 400;
    test::check_three_way(dir, q, torch::randn(shape));
  }
}

CATCH_TEST_CASE("ONNX export: every layer's output exposed keeps the integer kernels, and the per-layer report finds no departure", "[onnx][export][int8]") {
  TempDir dir;
  torch::manual_seed(4);
  const Net& net = kNets[4];  // squeeze-excite, concat, relu6, hardswish, hardsigmoid
  auto ckpt = test::random_checkpoint(dir, "fp.pt", net.spec, net.input, 7);
  auto spec = parse_spec(net.spec, net.input, 7);
  QuantNet q = test::calibrated_int8(dir, spec, ckpt, QuantSettings{}, torch::randn({64, 3, 12, 12}));
  auto x = torch::randn({50, 3, 12, 12});
  CATCH_CHECK(test::first_departing_layer(dir, q, x) == "no layer departs by half an output step before the logits");
  CATCH_CHECK(test::check_onnx_files({dir / "q.exposed.onnx"}) == "ok 1\n");
  std::set<std::string> exposed;
  for (const auto& f : std::filesystem::directory_iterator(dir / "q.layers")) exposed.insert(f.path().filename().string());
  CATCH_CHECK(exposed.count("x.exposed.f32"));       // the point after a fused clamp (conv1 bn x=relu)
  CATCH_CHECK(exposed.count("h.exposed.f32"));       // a hardswish's output on its own point
  CATCH_CHECK(!exposed.count("conv1.exposed.f32"));  // inside conv1's unit: exposing it would stop the fusion
  ExportOptions o;
  o.expose_layers = true;
  export_model(dir / "q.pt", dir / "e.onnx", o);
  test::run_ort(dir / "e.onnx", x, dir / "e.optimized.onnx");
  auto ops = test::onnx_op_counts(dir / "e.optimized.onnx");
  CATCH_CHECK(ops.count("Conv") == 0);
}

CATCH_TEST_CASE("ONNX export: trained and quantized USPS-shaped student and teacher agree three ways", "[onnx][export][int8]") {
  for (const char* preset : {"usps_student", "usps_teacher"}) {
    CATCH_INFO(preset);
    TempDir dir;
    auto fp = test::train_synthetic(dir, "train", 2, {std::string("--model.spec=") + preset});
    QuantNet q = test::calibrated_int8(dir, load_checkpoint(fp).model->spec(), fp, QuantSettings{}, torch::rand({64, 1, 16, 16}));
    test::check_three_way(dir, q, torch::rand({400, 1, 16, 16}));
  }
}

CATCH_TEST_CASE("ONNX export: options that mean nothing for ONNX, opsets and QDQ import are clear errors", "[onnx][export][errors]") {
  TempDir dir;
  auto ckpt = test::random_checkpoint(dir, "m.pt", "conv(4) bn relu gap linear(classes)", {1, 8, 8}, 3);
  auto one_line = [](const test::CliResult& r) { return r.code == 2 && std::count(r.out.begin(), r.out.end(), '\n') == 1; };
  auto r = test::run_cli("export --checkpoint " + ckpt + " --out " + dir / "m.onnx" + " --storage sparse");
  CATCH_CHECK(one_line(r));
  CATCH_CHECK(r.out.find("--storage") != std::string::npos);
  r = test::run_cli("export --checkpoint " + ckpt + " --out " + dir / "m.shrink" + " --opset 13");
  CATCH_CHECK((one_line(r) && r.out.find("--opset") != std::string::npos));
  r = test::run_cli("export --checkpoint " + ckpt + " --out " + dir / "m.onnx" + " --opset 18");
  CATCH_CHECK((r.code == 2 && r.out.find("--opset") != std::string::npos));
  CATCH_CHECK(!std::filesystem::exists(dir / "m.onnx"));
  QuantNet q = test::calibrated_int8(dir, parse_spec("conv(4) bn relu gap linear(classes)", {1, 8, 8}, 3), ckpt, QuantSettings{}, torch::randn({16, 1, 8, 8}));
  r = test::run_cli("export --checkpoint " + dir / "q.pt" + " --out " + dir / "q.onnx" + " --opset 11");
  CATCH_CHECK((one_line(r) && r.out.find("opset 13") != std::string::npos));
  CATCH_CHECK(!std::filesystem::exists(dir / "q.onnx"));
  r = test::run_cli("export --checkpoint " + dir / "q.pt" + " --out " + dir / "q.onnx");
  CATCH_CHECK(r.code == 0);
  r = test::run_cli("import " + dir / "q.onnx" + " --out " + dir / "back.pt");
  CATCH_CHECK((one_line(r) && r.out.find("QDQ") != std::string::npos));
  CATCH_CHECK(!std::filesystem::exists(dir / "back.pt"));
}
