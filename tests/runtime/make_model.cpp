// shrink-make-model: writes a valid .shrink file with random weights for any ModelSpec (no torch,
// no training), for tests, the fuzzer's seed corpus and load measurements.
//   shrink-make-model OUT SPEC INPUT CLASSES [--int8] [--sparsity X] [--storage dense|sparse|auto]
//                     [--normalization] [--seed N]
//   e.g. shrink-make-model teacher.shrink usps_teacher 1,16,16 10
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

#include "tests/runtime/model_maker.h"

int main(int argc, char** argv) {
  try {
    if (argc < 5) {
      std::fprintf(stderr, "usage: shrink-make-model OUT SPEC INPUT(C,H,W or F) CLASSES [--int8] [--sparsity X] [--storage S] [--normalization] [--seed N]\n");
      return 2;
    }
    std::string out = argv[1], spec = argv[2], input_text = argv[3];
    std::vector<int64_t> input;
    for (size_t at = 0; at <= input_text.size();) {
      size_t comma = input_text.find(',', at);
      if (comma == std::string::npos) comma = input_text.size();
      input.push_back(std::stoll(input_text.substr(at, comma - at)));
      at = comma + 1;
    }
    int64_t classes = std::stoll(argv[4]);
    shrink::test::MakeOptions o;
    for (int i = 5; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--int8") o.int8 = true;
      else if (a == "--normalization") o.normalization = true;
      else if (a == "--sparsity") o.sparsity = std::stod(value());
      else if (a == "--storage") o.storage = value();
      else if (a == "--seed") o.seed = std::stoull(value());
      else throw std::runtime_error("unknown option " + a);
    }
    auto bytes = shrink::test::make_model(spec, input, classes, o);
    std::ofstream file(out, std::ios::binary | std::ios::trunc);
    file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!file.flush()) throw std::runtime_error("cannot write " + out);
    std::printf("%s: %zu bytes\n", out.c_str(), bytes.size());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return 0;
}
