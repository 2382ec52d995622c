// LibTorch (C++) inference, the runtime's peer in bench/runtime: a shrink checkpoint run eagerly
// (SpecNet, eval mode) or a TorchScript file. Writes logits for an input file, or with --bench
// prints batch-1 latency percentiles and batch-N throughput as one JSON line.
// usage: libtorch_infer (--checkpoint C | --torchscript F) --input X.f32 [--logits OUT] [--bench] [--batch N] [--threads N]
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <iostream>
#include <map>

#include "common/error.h"
#include "train/checkpoint.h"
#include "train/config.h"

int main(int argc, char** argv) {
  std::map<std::string, std::string> opt;
  bool bench = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--bench") bench = true;
    else if (i + 1 < argc) opt[a.substr(2)] = argv[++i];
  }
  try {
    torch::set_num_threads(shrink::resolve_threads(opt.count("threads") ? std::stoll(opt["threads"]) : 0));
    torch::InferenceMode inference;
    std::function<torch::Tensor(const torch::Tensor&)> run;
    std::vector<int64_t> input;
    shrink::SpecNet eager{nullptr};
    torch::jit::Module script;
    if (opt.count("checkpoint")) {
      eager = shrink::load_checkpoint(opt["checkpoint"]).model;
      eager->eval();
      input = eager->spec().input;
      run = [&](const torch::Tensor& x) { return eager->forward(x); };
    } else {
      script = torch::jit::load(opt.at("torchscript"));
      script.eval();
      input = {1, 16, 16};
      run = [&](const torch::Tensor& x) { return script.forward({x}).toTensor(); };
    }
    int64_t per = 1;
    for (int64_t d : input) per *= d;
    std::ifstream in(opt.at("input"), std::ios::binary | std::ios::ate);
    int64_t n = static_cast<int64_t>(in.tellg()) / 4 / per;
    in.seekg(0);
    std::vector<int64_t> shape{n};
    shape.insert(shape.end(), input.begin(), input.end());
    auto x = torch::empty(shape);
    in.read(reinterpret_cast<char*>(x.data_ptr()), n * per * 4);
    if (!bench) {
      std::ofstream out(opt.at("logits"), std::ios::binary);
      for (int64_t s = 0; s < n; s += 256) {
        auto y = run(x.narrow(0, s, std::min<int64_t>(256, n - s))).contiguous();
        out.write(reinterpret_cast<const char*>(y.data_ptr<float>()), y.numel() * 4);
      }
      return 0;
    }
    using clock = std::chrono::steady_clock;
    std::vector<double> ms;
    run(x.narrow(0, 0, 1));
    auto until = clock::now() + std::chrono::seconds(2);
    for (int i = 0; i < 20000 && (i < 30 || clock::now() < until); ++i) {
      auto t0 = clock::now();
      run(x.narrow(0, i % n, 1));
      ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
    }
    std::sort(ms.begin(), ms.end());
    int64_t batch = opt.count("batch") ? std::stoll(opt["batch"]) : 256;
    auto big = x.narrow(0, 0, std::min(batch, n)).repeat({(batch + n - 1) / n, 1, 1, 1}).narrow(0, 0, batch).contiguous();
    run(big);
    int64_t runs = 0;
    auto t0 = clock::now();
    while (runs < 3 || clock::now() - t0 < std::chrono::seconds(2)) run(big), ++runs;
    double seconds = std::chrono::duration<double>(clock::now() - t0).count();
    std::printf("{\"p50_ms\": %.6f, \"p99_ms\": %.6f, \"throughput\": %.1f, \"batch\": %ld}\n", ms[ms.size() / 2],
                ms[std::min(ms.size() - 1, ms.size() * 99 / 100)], runs * batch / seconds, static_cast<long>(batch));
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
