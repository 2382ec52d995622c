#include <cmath>
#include <random>

#include "datasets/formats.h"

namespace shrink {
namespace {

// One prototype per class: a few Gaussian blobs of either sign per channel.
std::vector<std::vector<float>> prototypes(const SyntheticOptions& o) {
  std::mt19937_64 rng(o.seed * 7919 + 17);
  std::uniform_real_distribution<double> unit(0, 1);
  const int64_t C = o.shape[0], H = o.shape[1], W = o.shape[2];
  std::vector<std::vector<float>> protos(o.classes, std::vector<float>(C * H * W, 0.f));
  for (auto& p : protos)
    for (int64_t c = 0; c < C; ++c)
      for (int blob = 0; blob < 4; ++blob) {
        double cy = unit(rng) * H, cx = unit(rng) * W, sigma = 1.0 + unit(rng) * 0.15 * std::max(H, W);
        double amp = (unit(rng) < 0.7 ? 1 : -1) * (0.5 + unit(rng));
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x)
            p[(c * H + y) * W + x] += static_cast<float>(amp * std::exp(-((y - cy) * (y - cy) + (x - cx) * (x - cx)) / (2 * sigma * sigma)));
      }
  return protos;
}

}  // namespace

std::shared_ptr<MemorySource> make_synthetic(const SyntheticOptions& o, bool test_split) {
  const int64_t C = o.shape[0], H = o.shape[1], W = o.shape[2], n = test_split ? o.test : o.train;
  auto protos = prototypes(o);
  std::mt19937_64 rng(o.seed * 104729 + (test_split ? 2 : 1));
  std::uniform_int_distribution<int64_t> label(0, o.classes - 1), shift(-2, 2);
  std::uniform_real_distribution<float> gain(0.6f, 1.4f), mix(0.f, 0.5f);
  std::normal_distribution<float> noise(0.f, 0.35f);
  auto x = torch::zeros({n, C, H, W}, torch::kFloat32);
  auto y = torch::empty({n}, torch::kInt64);
  float* px = x.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    int64_t k = label(rng), other = label(rng);
    y[i] = k;
    float g = gain(rng), m = mix(rng);
    int64_t dy = shift(rng), dx = shift(rng), ody = shift(rng), odx = shift(rng);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = 0; r < H; ++r)
        for (int64_t col = 0; col < W; ++col) {
          auto at = [&](const std::vector<float>& p, int64_t rr, int64_t cc) {
            return (rr < 0 || rr >= H || cc < 0 || cc >= W) ? 0.f : p[(c * H + rr) * W + cc];
          };
          px[((i * C + c) * H + r) * W + col] =
              g * at(protos[k], r - dy, col - dx) + m * at(protos[other], r - ody, col - odx) + noise(rng);
        }
  }
  return std::make_shared<MemorySource>(x, y, test_split ? "synthetic test" : "synthetic train");
}

}  // namespace shrink
