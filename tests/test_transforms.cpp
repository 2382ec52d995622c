#include "tests/helpers.h"
#include "datasets/formats.h"
#include "datasets/loader.h"

using namespace shrink;

CATCH_TEST_CASE("random shift moves each example by at most pad pixels with zero fill", "[transforms]") {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(3);
  auto x = torch::rand({64, 2, 6, 6}) + 1;  // strictly positive, so zero fill is visible
  auto out = random_shift(x, 1, gen);
  auto padded = torch::constant_pad_nd(x, {1, 1, 1, 1}, 0);
  int shifted = 0;
  for (int64_t i = 0; i < x.size(0); ++i) {
    bool found = false;
    for (int dy = 0; dy < 3 && !found; ++dy)
      for (int dx = 0; dx < 3 && !found; ++dx)
        if (torch::equal(out[i], padded[i].narrow(1, dy, 6).narrow(2, dx, 6))) {
          found = true;
          shifted += (dy != 1 || dx != 1);
        }
    CATCH_CHECK(found);
  }
  CATCH_CHECK(shifted > 40);  // 8 of 9 offsets move the image
  auto gen2 = at::make_generator<at::CPUGeneratorImpl>(3);
  CATCH_CHECK(torch::equal(random_shift(x, 1, gen2), out));  // same seed, same shifts
}

CATCH_TEST_CASE("random horizontal flip and normalization", "[transforms]") {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(5);
  auto x = torch::rand({100, 1, 3, 4});
  auto out = random_hflip(x, gen);
  int flipped = 0;
  for (int64_t i = 0; i < 100; ++i) {
    bool same = torch::equal(out[i], x[i]), mirrored = torch::equal(out[i], x[i].flip({2}));
    CATCH_CHECK((same || mirrored));
    flipped += mirrored && !same;
  }
  CATCH_CHECK(flipped > 30);
  CATCH_CHECK(flipped < 70);
  auto n = normalize(torch::full({2, 2, 1, 1}, 3.0), {1.0f, 2.0f}, {2.0f, 0.5f});
  CATCH_CHECK(n[0][0][0][0].item<float>() == 1.0f);
  CATCH_CHECK(n[0][1][0][0].item<float>() == 2.0f);
}

CATCH_TEST_CASE("loader: per-epoch shuffles from the seed, full coverage, prefetch changes nothing", "[loader]") {
  auto source = std::make_shared<MemorySource>(torch::arange(103, torch::kFloat32).view({103, 1, 1, 1}), torch::arange(103) % 2, "ramp");
  auto epoch_labels = [&](int prefetch, int64_t epoch, int64_t first = 0) {
    LoaderOptions o;
    o.batch_size = 10;
    o.seed = 42;
    o.prefetch = prefetch;
    Loader loader(source, o);
    loader.start_epoch(epoch, first);
    std::vector<float> seen;
    Batch b;
    while (loader.next(b)) {
      CATCH_CHECK(b.x.size(0) <= 10);
      auto f = b.x.flatten();
      seen.insert(seen.end(), f.data_ptr<float>(), f.data_ptr<float>() + f.numel());
    }
    return seen;
  };
  auto e0 = epoch_labels(0, 0), e0p = epoch_labels(2, 0), e1 = epoch_labels(2, 1);
  CATCH_CHECK(e0 == e0p);
  CATCH_CHECK(e0 != e1);
  CATCH_CHECK(e0.size() == 103);
  auto sorted = e0;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 103; ++i) CATCH_CHECK(sorted[i] == i);
  auto tail = epoch_labels(2, 0, 4);  // resuming at batch 4 sees the rest of the same epoch
  CATCH_CHECK(std::vector<float>(e0.begin() + 40, e0.end()) == tail);
}

CATCH_TEST_CASE("loader surfaces errors from the prefetch thread", "[loader]") {
  struct Broken : Source {
    int64_t size() const override { return 50; }
    std::vector<int64_t> shape() const override { return {1, 1, 1}; }
    void read(const std::vector<int64_t>&, torch::Tensor&, torch::Tensor&) const override { throw std::runtime_error("disk on fire"); }
    std::string describe() const override { return "broken"; }
  };
  LoaderOptions o;
  o.batch_size = 10;
  Loader loader(std::make_shared<Broken>(), o);
  loader.start_epoch(0);
  Batch b;
  CATCH_CHECK_THROWS_WITH(loader.next(b), "disk on fire");
}
