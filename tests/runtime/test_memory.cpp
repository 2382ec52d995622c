// Memory under load: plans per batch size are bounded, packed weights shared, activations per
// call; RSS stays flat however many batch sizes are asked for.
#include <cstdio>
#include <random>

#include "runtime/model_file.h"
#include "shrink/runtime.hpp"
#include "tests/runtime/helpers.h"

using namespace shrink;
using namespace shrink::test;

CATCH_TEST_CASE("RSS stays flat over 1,000 predicts with random batch sizes 1..512", "[rt_memory]") {
  for (bool int8 : {false, true}) {
    CATCH_INFO((int8 ? "int8" : "fp32"));
    auto bytes = make_model("usps_student", {1, 16, 16}, 10, {int8, 0, true, "dense", 21});
    auto m = rt::Model::from_memory(bytes.data(), bytes.size());
    auto x = random_inputs(512, 256, 3);
    std::mt19937 rng(int8 ? 2 : 1);
    std::uniform_int_distribution<int64_t> batch(1, 512);
    // Warm-up: the allocator's pools, oneDNN's primitive cache and kernels reach their working size.
    for (int i = 0; i < 300; ++i) m.predict(x.data(), batch(rng));
    int64_t warm = proc_status_kib("VmRSS");
    int64_t peak = warm;
    const int runs = int8 ? 300 : 1000;
    for (int i = 0; i < runs; ++i) {
      auto y = m.predict(x.data(), batch(rng));
      CATCH_REQUIRE(y.size() % 10 == 0);
      if (i % 50 == 49) peak = std::max(peak, proc_status_kib("VmRSS"));
    }
    int64_t end = proc_status_kib("VmRSS");
    std::printf("rss %s: after warm-up %.1f MiB, after %d random-batch predicts %.1f MiB (max seen %.1f MiB, growth %+.1f MiB)\n",
                int8 ? "int8" : "fp32", warm / 1024.0, runs, end / 1024.0, peak / 1024.0, (end - warm) / 1024.0);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    std::printf("(a sanitizer build: its allocator's quarantine and shadow memory dominate RSS, so no bound is checked)\n");
#else
    // One plan per batch size kept forever (the old cache) grew by hundreds of MiB here.
    CATCH_CHECK(end - warm < 48 * 1024);
    CATCH_CHECK(peak - warm < 64 * 1024);
#endif
  }
}

CATCH_TEST_CASE("release_pages drops only the mapping's pages, never a sparse tensor's expanded copy", "[rt_memory]") {
  RtTempDir dir;
  write_bytes(dir / "sparse.shrink", make_model("usps_student", {1, 16, 16}, 10, {false, 0.7, false, "sparse", 2}));
  rt::ModelFile file = rt::read_model_file(dir / "sparse.shrink");
  CATCH_REQUIRE(file.mapped);
  int expanded = 0;
  for (const auto& [name, t] : file.tensors) {
    if (!t.expanded) continue;
    ++expanded;
    std::vector<uint8_t> before(t.bytes.data(), t.bytes.data() + t.bytes.size());
    rt::release_pages(file, t.bytes.data(), t.bytes.size());  // what packing a weight does
    CATCH_CHECK(std::vector<uint8_t>(t.bytes.data(), t.bytes.data() + t.bytes.size()) == before);
  }
  CATCH_CHECK(expanded > 0);
}
