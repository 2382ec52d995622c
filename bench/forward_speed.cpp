// Forward-pass speed of shrink checkpoints in LibTorch (eval mode, no grad, channels-last as
// trained), interleaved over rounds so drift in machine speed hits every model alike.
// usage: forward_speed [--batch N] [--threads N] [--rounds N] CHECKPOINT...
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iostream>

#include "common/error.h"
#include "train/checkpoint.h"
#include "train/config.h"

int main(int argc, char** argv) {
  int64_t batch = 256, threads = 0, rounds = 7;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--batch" || a == "--threads" || a == "--rounds") && i + 1 < argc) {
      int64_t v = std::stoll(argv[++i]);
      (a == "--batch" ? batch : a == "--threads" ? threads : rounds) = v;
    } else {
      paths.push_back(a);
    }
  }
  try {
    torch::set_num_threads(shrink::resolve_threads(threads));
    torch::NoGradGuard no_grad;
    std::vector<shrink::SpecNet> models;
    for (const auto& p : paths) {
      models.push_back(shrink::load_checkpoint(p).model);
      models.back()->eval();
      for (auto& w : models.back()->parameters())
        if (w.dim() == 4) w.set_data(w.data().contiguous(torch::MemoryFormat::ChannelsLast));
    }
    std::vector<std::vector<double>> ms(models.size());
    for (int64_t r = 0; r < rounds + 1; ++r)
      for (size_t m = 0; m < models.size(); ++m) {
        std::vector<int64_t> shape{batch};
        auto in = models[m]->spec().input;
        shape.insert(shape.end(), in.begin(), in.end());
        auto x = torch::randn(shape).contiguous(torch::MemoryFormat::ChannelsLast);
        auto t0 = std::chrono::steady_clock::now();
        for (int k = 0; k < 5; ++k) models[m]->forward(x);
        double t = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 5;
        if (r > 0) ms[m].push_back(t);  // round 0 warms up
      }
    for (size_t m = 0; m < models.size(); ++m) {
      std::sort(ms[m].begin(), ms[m].end());
      double median = ms[m][ms[m].size() / 2];
      std::sort(ms[0].begin(), ms[0].end());
      std::cout << fmt::format("{:<60} {:>12} MACs {:>9.2f} ms/batch of {} {:>7.2f}x\n", paths[m], shrink::total_cost(models[m]->spec()).macs, median,
                               batch, ms[0][ms[0].size() / 2] / median);
    }
  } catch (const shrink::UserError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
