// The shrink binary as a user meets it: exit codes and one-line messages.
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#include "tests/helpers.h"
#include "train/run_dir.h"

using shrink::test::run_cli;
using shrink::test::TempDir;

namespace {
int lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }
}  // namespace

CATCH_TEST_CASE("help lists every key with its default", "[cli]") {
  auto r = run_cli("train --help");
  CATCH_CHECK(r.code == 0);
  for (const char* key : {"job.out", "data.path", "train.seed", "train.epochs", "train.batch_size", "train.threads", "optim.lr"})
    CATCH_CHECK(r.out.find(key) != std::string::npos);
  CATCH_CHECK(r.out.find("(=0.05)") != std::string::npos);
  CATCH_CHECK(run_cli("--help").code == 0);
}

CATCH_TEST_CASE("user errors exit 2 with one line naming the problem", "[cli]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", "[data]\nsource = synthetic\n[train]\nepochs = 1\n");
  struct Case {
    std::string args, expect;
  } cases[] = {
      {"train --config " + dir / "missing.ini", "no such file"},
      {"train --config " + dir / "job.ini --optim.lrr=1", "unknown key 'optim.lrr'"},
      {"train --config " + dir / "job.ini --optim.lr=abc", "optim.lr"},
      {"train --config " + dir / "job.ini --data.source=hdf5 --data.path=" + dir / "none.h5", "none.h5: no such file"},
      {"train --config " + dir / "job.ini '--model.spec=conv(8)_bn'", "model.spec"},
      {"eval --checkpoint " + dir / "none.pt", "no such file"},
      {"data info " + dir / "none.h5", "no such file"},
      {"model info 'conv(16) bogus'", "unknown layer type 'bogus'"},
      {"frobnicate", "unknown command"},
      // A key or flag missing its value does not take the next option as it.
      {"train --config " + dir / "job.ini --data.cache --out " + dir / "run", "--data.cache needs a value"},
      {"train --config " + dir / "job.ini --out --overwrite", "--out needs a value"},
      {"train --config " + dir / "job.ini --train.epochs=abc", "(expected an integer"},
      {"train --config " + dir / "job.ini --resume --overwrite --out " + dir / "run", "give one"},
      {"export --checkpoint " + dir / "none.pt", "--out M.shrink is required"},
      {"launch -- eval --checkpoint " + dir / "none.pt", "'eval' does not run data parallel"},
      // Sizes the machine cannot hold are the user's to change, not a bug.
      {"train --config " + dir / "job.ini --data.shape=3,1000000,1000000 --out " + dir / "huge", "out of memory"},
      {"launch -- prune sensitivity --checkpoint " + dir / "none.pt", "'prune sensitivity' does not run data parallel"},
  };
  for (const auto& c : cases) {
    auto r = run_cli(c.args);
    CATCH_INFO(c.args << " -> " << r.out);
    CATCH_CHECK(r.code == 2);
    CATCH_CHECK(lines(r.out) == 1);
    CATCH_CHECK(r.out.rfind("error: ", 0) == 0);
    CATCH_CHECK(r.out.find(c.expect) != std::string::npos);
  }
}

CATCH_TEST_CASE("overwrite deletes only a run: not the current folder, nor one holding other files", "[cli]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini", "[data]\nsource = synthetic\nsynthetic_train = 200\nsynthetic_test = 100\n[model]\nspec = mlp_300_100\n"
                                            "[train]\nepochs = 1\nthreads = 1\n");
  std::filesystem::create_directories(dir / "notes");
  shrink::test::write_text(dir / "notes/thesis.txt", "years of work");
  auto other = run_cli("train --config " + dir / "job.ini --out " + dir / "notes --overwrite");
  CATCH_CHECK(other.code == 2);
  CATCH_CHECK(other.out.find("holds files but no run") != std::string::npos);
  auto here = shrink::test::run_cmd("cd " + dir / "notes && " + SHRINK_BIN + " train --config " + dir / "job.ini --out . --overwrite");
  CATCH_CHECK(here.code == 2);
  CATCH_CHECK(here.out.find("the current folder or one above it") != std::string::npos);
  CATCH_CHECK(shrink::test::read_text(dir / "notes/thesis.txt") == "years of work");
  shrink::test::write_text(dir / "notes/config.ini", "[mine]\n");  // a config.ini alone does not make a run
  CATCH_CHECK(run_cli("train --config " + dir / "job.ini --out " + dir / "notes --overwrite").code == 2);
  auto file = run_cli("train --config " + dir / "job.ini --out " + dir / "notes/thesis.txt --overwrite");
  CATCH_CHECK(file.code == 2);
  CATCH_CHECK(file.out.find("is a file, not a run folder") != std::string::npos);
  CATCH_CHECK(shrink::test::read_text(dir / "notes/thesis.txt") == "years of work");
  // A run is replaced; a prune into a folder holding a run is refused before anything in it changes.
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "run").code == 0);
  CATCH_CHECK(run_cli("train --config " + dir / "job.ini --out " + dir / "run --overwrite").code == 0);
  const std::string config = shrink::test::read_text(dir / "run/config.ini");
  auto prune = run_cli("prune --config " + dir / "job.ini --prune.checkpoint=" + dir / "run/checkpoints/last.pt --out " + dir / "run");
  CATCH_CHECK(prune.code == 2);
  CATCH_CHECK(prune.out.find("already holds a run") != std::string::npos);
  CATCH_CHECK(shrink::test::read_text(dir / "run/config.ini") == config);
  // A folder a run is writing (here this process) is not written by another at the same time.
  shrink::RunOptions resume;
  resume.resume = resume.quiet = true;
  {
    auto writing = shrink::RunDir::open_training(dir / "run", config, resume);
    auto second = run_cli("train --config " + dir / "job.ini --out " + dir / "run --resume");
    CATCH_CHECK(second.code == 2);
    CATCH_CHECK(second.out.find("in use by another shrink process") != std::string::npos);
  }
  CATCH_CHECK(run_cli("train --config " + dir / "job.ini --out " + dir / "run --resume --train.epochs=2").code == 0);
}

CATCH_TEST_CASE("train, eval, data info and model info work end to end", "[cli]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini",
                           "[data]\nsource = synthetic\nsynthetic_train = 600\nsynthetic_test = 200\n[model]\nspec = mlp_300_100\n"
                           "[train]\nepochs = 1\nthreads = 1\n");
  auto r = run_cli("train --config " + dir / "job.ini --out " + dir / "run");
  CATCH_INFO(r.out);
  CATCH_CHECK(r.code == 0);
  CATCH_CHECK(r.out.find("epoch 1/1") != std::string::npos);
  auto e = run_cli("eval --checkpoint " + dir / "run/checkpoints/last.pt");
  CATCH_INFO(e.out);
  CATCH_CHECK(e.code == 0);
  CATCH_CHECK(e.out.find("test accuracy") != std::string::npos);
  CATCH_CHECK(e.out.find("(200 examples)") != std::string::npos);
  // A distilled checkpoint (its saved config has [student] and [teacher]) evaluates and reports too.
  shrink::test::write_text(dir / "distill.ini",
                           "[data]\nsource = synthetic\nsynthetic_train = 600\nsynthetic_test = 200\n[student]\nspec = mlp_300_100\n"
                           "[train]\nepochs = 1\nthreads = 1\n");
  auto d = run_cli("distill --config " + dir / "distill.ini --out " + dir / "distill --teacher.path=" + dir / "run/checkpoints/last.pt");
  CATCH_INFO(d.out);
  CATCH_CHECK(d.code == 0);
  CATCH_CHECK(run_cli("eval --checkpoint " + dir / "distill/checkpoints/last.pt").code == 0);
  auto s = run_cli("prune sensitivity --checkpoint " + dir / "distill/checkpoints/last.pt --sparsities 0.5");
  CATCH_INFO(s.out);
  CATCH_CHECK(s.code == 0);
  CATCH_CHECK(s.out.find("linear3") != std::string::npos);
  auto m = run_cli("model info usps_teacher");
  CATCH_CHECK(m.code == 0);
  CATCH_CHECK(m.out.find("conv5") != std::string::npos);
  auto total = m.out.substr(m.out.find("total"));
  CATCH_CHECK(total.find("1x16x16") != std::string::npos);
  // A spec longer than a file name may be is still a spec.
  std::string long_spec;
  for (int i = 0; i < 40; ++i) long_spec += "conv(8,k=1) bn relu ";
  CATCH_CHECK(run_cli("model info '" + long_spec + "gap linear(classes)'").code == 0);
}

CATCH_TEST_CASE("export and shrink-run: a trained model's predictions and accuracy, and export errors", "[cli][runtime]") {
  TempDir dir;
  shrink::test::write_text(dir / "job.ini",
                           "[data]\nsource = synthetic\nsynthetic_train = 400\nsynthetic_test = 100\n[model]\nspec = usps_student\n"
                           "[train]\nepochs = 1\nthreads = 1\n");
  CATCH_REQUIRE(run_cli("train --config " + dir / "job.ini --out " + dir / "run").code == 0);
  auto e = run_cli("export --checkpoint " + dir / "run/checkpoints/last.pt --out " + dir / "m.shrink");
  CATCH_INFO(e.out);
  CATCH_REQUIRE(e.code == 0);
  CATCH_CHECK(e.out.find("fp32 weights") != std::string::npos);
  // Inputs as raw float32 and labels as raw int32.
  std::string x(3 * 256 * 4, '\0'), y(3 * 4, '\0');
  for (int i = 0; i < 3 * 256; ++i) {
    float v = (i % 17) / 17.0f;
    std::memcpy(&x[4 * i], &v, 4);
  }
  int32_t labels[3] = {1, 2, 3};
  std::memcpy(&y[0], labels, 12);
  shrink::test::write_text(dir / "x.f32", x);
  shrink::test::write_text(dir / "y.i32", y);
  auto run = [&](const std::string& args) { return shrink::test::run_cmd(std::string(SHRINK_RUN_BIN) + " " + args); };
  auto p = run(dir / "m.shrink --input " + dir / "x.f32");
  CATCH_CHECK(p.code == 0);
  CATCH_CHECK(lines(p.out) == 3);
  auto a = run(dir / "m.shrink --input " + dir / "x.f32 --labels " + dir / "y.i32");
  CATCH_CHECK(a.code == 0);
  CATCH_CHECK(a.out.find("accuracy") != std::string::npos);
  // shrink-run's user errors: tests/cli/test_shrink_run.cpp (torch-free, also under the sanitizers).
  auto bad = run_cli("export --checkpoint " + dir / "run/checkpoints/last.pt --out " + dir / "q.shrink --precision int8");
  CATCH_CHECK(bad.code == 2);
  CATCH_CHECK(bad.out.find("needs a quantized checkpoint") != std::string::npos);
}

CATCH_TEST_CASE("an image folder: data info, train, export, and shrink-run names the top classes of PNG and JPEG files", "[cli][runtime][folder]") {
  TempDir dir;
  const std::string root = dir / "images";
  CATCH_REQUIRE(shrink::test::run_cmd("/usr/bin/python3 " + std::string(SHRINK_SOURCE_DIR) + "/tests/make_image_folder.py '" + root + "' 3 12 12").code == 0);
  auto info = run_cli("data info " + root);
  CATCH_INFO(info.out);
  CATCH_CHECK(info.code == 0);
  CATCH_CHECK(info.out.find("3 classes") != std::string::npos);
  CATCH_CHECK(info.out.find("ankle boot") != std::string::npos);
  shrink::test::write_text(dir / "job.ini", "[data]\nsource = folder\nshape = 3,12,12\nnormalize = dataset\ncache = " + dir / "cache" +
                                                "\n[model]\nspec = conv(8) relu gap linear(classes)\n[train]\nepochs = 1\nthreads = 1\n");
  auto t = run_cli("train --config " + dir / "job.ini --data.path=" + root + " --out " + dir / "run");
  CATCH_INFO(t.out);
  CATCH_REQUIRE(t.code == 0);
  CATCH_REQUIRE(run_cli("export --checkpoint " + dir / "run/checkpoints/last.pt --out " + dir / "m.shrink").code == 0);
  auto run = [&](const std::string& args) { return shrink::test::run_cmd(std::string(SHRINK_RUN_BIN) + " " + args); };
  // Two of the test split's 9 images (in order: 3 "ankle boot", 3 "bag", 3 "coat"; the 4th and the 9th).
  const std::string png = root + "/test/bag/img00.PNG", jpeg = root + "/test/coat/img02.JPG";
  auto p = run(dir / "m.shrink --input " + png + " " + jpeg + " --top 2");
  CATCH_INFO(p.out);
  CATCH_CHECK(p.code == 0);
  CATCH_REQUIRE(lines(p.out) == 2);
  // Each line names two classes with their probabilities, the most likely first; it is the class
  // shrink-run predicts for the same image as Pillow decodes and resizes it, given as raw float32.
  std::ifstream in(root + ".expected/test.u8", std::ios::binary);
  std::vector<unsigned char> pixels((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string x(pixels.size() * 4, '\0');
  for (size_t i = 0; i < pixels.size(); ++i) {
    float v = pixels[i] / 255.0f;
    std::memcpy(&x[4 * i], &v, 4);
  }
  shrink::test::write_text(dir / "x.f32", x);
  auto raw = run(dir / "m.shrink --input " + dir / "x.f32");
  CATCH_REQUIRE(lines(raw.out) == 9);
  const std::vector<std::string> names = {"ankle boot", "bag", "coat"};
  std::istringstream raw_lines(raw.out), named(p.out);
  std::vector<int> predicted(9);
  for (int& c : predicted) raw_lines >> c;
  std::string line;
  for (int k : {3, 8}) {
    std::getline(named, line);
    const std::string file = k == 3 ? png : jpeg;
    CATCH_CHECK(line.rfind(file + ": " + names[predicted[k]] + " ", 0) == 0);
    CATCH_CHECK(std::count(line.begin(), line.end(), '%') == 2);
  }
  // A model whose classes are not the data's (here: one renamed) does not fine-tune on it.
  std::filesystem::copy(root, dir / "renamed", std::filesystem::copy_options::recursive);
  std::filesystem::rename(dir / "renamed/train/bag", dir / "renamed/train/bags");
  std::filesystem::rename(dir / "renamed/test/bag", dir / "renamed/test/bags");
  auto other = run_cli("train --config " + dir / "job.ini --data.path=" + dir / "renamed --model.init=" + dir / "run/checkpoints/last.pt --out " + dir / "run2");
  CATCH_CHECK(other.code == 2);
  CATCH_CHECK(other.out.find("calls class 1 'bag', the data 'bags'") != std::string::npos);
  // Nor is it scored, pruned or quantized on it (a score against other labels would look like a
  // bad model), and nothing is written.
  const std::string last = dir / "run/checkpoints/last.pt", renamed = " --data.path=" + dir / "renamed";
  for (const std::string& args : {"eval --checkpoint " + last + renamed, "prune sensitivity --checkpoint " + last + renamed,
                                  "compare --teacher " + last + " --student " + dir / "m.shrink" + renamed,
                                  "prune --config " + dir / "job.ini --prune.checkpoint=" + last + renamed + " --out " + dir / "pruned",
                                  "quantize --config " + dir / "job.ini --quantize.checkpoint=" + last + renamed + " --out " + dir / "int8"}) {
    auto r = run_cli(args);
    CATCH_INFO(args << " -> " << r.out);
    CATCH_CHECK(r.code == 2);
    CATCH_CHECK(r.out.find("calls class 1 'bag', the data 'bags'") != std::string::npos);
  }
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "pruned"));
  CATCH_CHECK_FALSE(std::filesystem::exists(dir / "int8"));
  shrink::test::write_text(dir / "broken.png", "\x89PNG\r\n\x1a\n and no more");
  auto broken = run(dir / "m.shrink --input " + dir / "broken.png");
  CATCH_CHECK(broken.code == 2);
  CATCH_CHECK(broken.out.find("broken.png") != std::string::npos);
  auto mixed = run(dir / "m.shrink --input " + png + " " + dir / "job.ini");
  CATCH_CHECK(mixed.code == 2);
  CATCH_CHECK(mixed.out.find("images or raw examples, not both") != std::string::npos);
}
