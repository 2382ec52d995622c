// Loading: the mapped file read in place, and Model::load validating the whole model once.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>

#include "runtime/model_file.h"
#include "runtime/model_meta.h"
#include "spec/spec.h"
#include "shrink/runtime.hpp"
#include "tests/runtime/helpers.h"

using namespace shrink;
using namespace shrink::test;

namespace {

// The message of the rt::Error that loading `bytes` raises ("" when it loads); anything other
// than rt::Error fails the test.
std::string load_error(const std::vector<uint8_t>& bytes) {
  try {
    rt::Model::from_memory(bytes.data(), bytes.size(), 1, "m.shrink");
  } catch (const rt::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

CATCH_TEST_CASE("models with random weights load from a mapped file and from memory, and predict alike", "[rt_load]") {
  RtTempDir dir;
  struct Case {
    std::string spec;
    std::vector<int64_t> input;
    MakeOptions options;
  } cases[] = {
      {"usps_student", {1, 16, 16}, {}},
      {"usps_student", {1, 16, 16}, {true, 0.7, true, "sparse", 2}},
      {kResidual, {2, 8, 8}, {false, 0, true, "dense", 3}},
      {kResidual, {2, 8, 8}, {true, 0.5, false, "auto", 4}},
      {"conv(8,s=2,bias=1) relu dwconv(k=3) relu conv(16,k=1,g=2) avgpool(3,s=2,p=1) flatten dropout(0.3) linear(20) relu6 linear(classes)", {4, 11, 11}, {}},
      {"lenet5", {1, 28, 28}, {true, 0, true, "dense", 5}},
      {"linear(32) relu linear(classes)", {24}, {}},
      {"conv(8) h=hardswish conv(8) add(h) hardswish avgpool(2) hardswish gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 6}},
      {"conv(8) s=sigmoid conv(8) add(s) sigmoid avgpool(2) sigmoid gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 7}},
      // A relu6 with its producer's own point runs alone on the int8 grid (oneDNN has no int8 clip).
      {"conv(8) bn relu6 dwconv bn relu6 conv(8,k=1) gap linear(classes)", {1, 8, 8}, {true, 0, true, "dense", 8}},
      {"conv(8) bn leaky_relu(0.1) conv(8) l=leaky_relu add(l) gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 10}},
      {"conv(8) bn tanh conv(8) e=elu(0.5) add(e) tanh gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 11}},
      {"conv(8) bn mish conv(8) s=softplus add(s) mish gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 13}},
      {"conv(8) bn prelu conv(8) p=prelu(per_channel=1) add(p) gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 14}},
      {"conv(8) bn gelu conv(8) g=gelu add(g) gelu gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 15}},
      {"conv(8) bn x=relu gap linear(4) relu linear(8) sigmoid unflatten mul(x) gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 12}},
      {"conv(8) x=relu l=slice(0,4) slice(4,8,from=x) conv(4,k=1) r=relu concat(l,r) shuffle(2) gap linear(classes)", {2, 8, 8}, {true, 0, true, "dense", 9}},
  };
  int k = 0;
  for (const auto& c : cases) {
    CATCH_INFO(c.spec << (c.options.int8 ? " int8" : " fp32") << " storage " << c.options.storage);
    auto bytes = make_model(c.spec, c.input, 5, c.options);
    std::string path = dir / ("m" + std::to_string(k++) + ".shrink");
    write_bytes(path, bytes);
    auto mapped = rt::Model::load(path, 1);
    auto memory = rt::Model::from_memory(bytes.data(), bytes.size(), 1);
    CATCH_CHECK(mapped.file_bytes() == bytes.size());
    CATCH_CHECK(mapped.threads() == 1);
    int64_t per = 1;
    for (int64_t d : mapped.input_shape()) per *= d;
    auto x = random_inputs(3, per, 7);
    auto a = mapped.predict(x.data(), 3), b = memory.predict(x.data(), 3);
    CATCH_REQUIRE(a.size() == 15);
    CATCH_CHECK(a == b);
    for (float v : a) CATCH_CHECK(std::isfinite(v));
    // One example at a time gives the same logits as the batch (up to float summation order).
    for (int64_t i = 0; i < 3; ++i) {
      auto one = mapped.predict(x.data() + i * per, 1);
      for (int64_t j = 0; j < 5; ++j) CATCH_CHECK(std::fabs(one[j] - a[i * 5 + j]) <= 1e-4f * (1 + std::fabs(a[i * 5 + j])));
    }
    auto p = mapped.probabilities(x.data(), 3);
    for (int64_t i = 0; i < 3; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < 5; ++j) sum += p[i * 5 + j];
      CATCH_CHECK(std::fabs(sum - 1) < 1e-5);
    }
  }
}

CATCH_TEST_CASE("a small forward runs on one thread, a large batch on all the model's", "[rt_load]") {
  auto bytes = make_model("usps_student", {1, 16, 16}, 10, {true, 0, true, "dense", 9});
  auto m = rt::Model::from_memory(bytes.data(), bytes.size(), 2);
  CATCH_CHECK(m.threads() == 2);
  CATCH_CHECK(m.threads_at(1) == 1);  // 0.6 M MACs: shorter than a parallel region is worth
  CATCH_CHECK(m.threads_at(256) == 2);
  auto one = rt::Model::from_memory(bytes.data(), bytes.size(), 1);
  CATCH_CHECK(one.threads_at(256) == 1);
  // The same logits whichever count a plan runs on.
  auto x = random_inputs(64, 256, 4);
  CATCH_CHECK(m.predict(x.data(), 64) == one.predict(x.data(), 64));
  CATCH_CHECK_THROWS_AS(m.threads_at(0), rt::Error);
  // What decides is the work per step: an inverted-residual net (configs/fashion's MobileNetV2-class
  // student: 7 M MACs, but 18 steps of 0.4 M) ran twice as fast at batch 1 on one thread as on two.
  auto mobile = make_model(
      "stem=conv(24) bn relu6 conv(96,k=1) bn relu6 dwconv(s=2) bn relu6 conv(32,k=1) o1=bn conv(128,k=1) bn relu6 dwconv bn relu6 "
      "conv(32,k=1) bn add(o1) conv(128,k=1) bn relu6 dwconv(s=2) bn relu6 conv(48,k=1) o3=bn conv(192,k=1) bn relu6 dwconv bn relu6 "
      "conv(48,k=1) bn add(o3) head=conv(192,k=1) bn relu6 gap linear(classes)",
      {1, 28, 28}, 10, {true, 0, true, "dense", 3, false});
  auto many_steps = rt::Model::from_memory(mobile.data(), mobile.size(), 2);
  CATCH_CHECK(many_steps.threads_at(1) == 1);
  CATCH_CHECK(many_steps.threads_at(64) == 2);
}

CATCH_TEST_CASE("a batch whose activations outgrow the caches runs in passes with the same logits", "[rt_load]") {
  // 64 x 64 images of 32 channels: about 1 MB of fp32 activations per example, 64 MB for the batch.
  auto bytes = make_model("conv(32) relu conv(32) relu gap linear(classes)", {3, 64, 64}, 10, {false, 0, true, "dense", 5});
  const int64_t batch = 64, per = 3 * 64 * 64;
  auto x = random_inputs(batch, per, 6);
  for (int threads : {1, 2}) {  // passes one after another on one thread; spread over two
    CATCH_INFO("threads " << threads);
    auto m = rt::Model::from_memory(bytes.data(), bytes.size(), threads);
    const int64_t pass = m.batch_per_pass(batch);
    CATCH_CHECK(pass < batch);
    if (threads == 1) CATCH_CHECK((pass & (pass - 1)) == 0);  // a power of two: few plans for any batch
    CATCH_CHECK(m.threads_at(batch) == threads);
    CATCH_CHECK(m.batch_per_pass(1) == 1);
    auto all = m.predict(x.data(), batch);
    CATCH_REQUIRE(all.size() == static_cast<size_t>(batch * 10));
    std::vector<std::vector<float>> kept;
    auto one_pass = m.predict(x.data(), batch, {"relu1"}, kept);  // outputs kept: one pass of 64
    for (int64_t i = 0; i < batch; ++i) {
      auto single = m.predict(x.data() + i * per, 1);
      for (int64_t j = 0; j < 10; ++j) {
        const float want = single[j], tol = 1e-4f * (1 + std::fabs(want));
        CATCH_CHECK(std::fabs(all[i * 10 + j] - want) <= tol);
        CATCH_CHECK(std::fabs(one_pass[i * 10 + j] - want) <= tol);
      }
    }
    CATCH_CHECK_THROWS_AS(m.batch_per_pass(0), rt::Error);
  }
  auto small = make_model("usps_student", {1, 16, 16}, 10);
  CATCH_CHECK(rt::Model::from_memory(small.data(), small.size(), 1).batch_per_pass(16) == 16);  // fits: one pass
}

CATCH_TEST_CASE("a batch spread over the threads, a pass per thread, gives each example's logits", "[rt_load]") {
  // int8: exact sums, so the logits are equal whatever the passes. 3 threads (on any machine) and
  // batches that do not divide evenly: a last pass of fewer examples.
  auto bytes = make_model("usps_teacher", {1, 16, 16}, 10, {true, 0, true, "dense", 17});
  auto three = rt::Model::from_memory(bytes.data(), bytes.size(), 3), one = rt::Model::from_memory(bytes.data(), bytes.size(), 1);
  for (int64_t batch : {3, 4, 37, 256}) {
    CATCH_INFO("batch " << batch);
    CATCH_CHECK(three.threads_at(batch) == 3);
    const int64_t pass = three.batch_per_pass(batch);
    CATCH_CHECK(pass <= (batch + 2) / 3);  // at least one pass per thread, none more than one example larger
    auto x = random_inputs(batch, 256, static_cast<int>(batch));
    const auto spread = three.predict(x.data(), batch);
    CATCH_CHECK(spread == one.predict(x.data(), batch));
    for (int64_t i : {int64_t(0), batch / 2, batch - 1}) {
      auto single = one.predict(x.data() + i * 256, 1);
      CATCH_CHECK(std::equal(single.begin(), single.end(), spread.begin() + i * 10));
    }
    const auto p = three.probabilities(x.data(), batch);
    CATCH_CHECK(std::fabs(std::accumulate(p.end() - 10, p.end(), 0.f) - 1) < 1e-5f);  // the last pass's softmax ran too
  }
  // A small forward's batch of one example per thread is not spread: a pass would be shorter than
  // the parallel region that runs it.
  auto student = make_model("usps_student", {1, 16, 16}, 10, {true, 0, true, "dense", 18});
  CATCH_CHECK(rt::Model::from_memory(student.data(), student.size(), 2).threads_at(2) == 1);
}

namespace {
struct PoolWindow {
  int64_t kh, kw, sh, sw, ph, pw;
};

// Max pooling of N,C,H,W values into the oh x ow grid `want_shape` gives (padding never wins).
std::vector<float> reference_max_pool(const std::vector<float>& in, int64_t n, const std::vector<int64_t>& in_shape,
                                      const std::vector<int64_t>& want_shape, PoolWindow w) {
  const int64_t c = in_shape[0], h = in_shape[1], wd = in_shape[2], oh = want_shape[1], ow = want_shape[2];
  std::vector<float> out;
  for (int64_t i = 0; i < n * c; ++i)
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t x = 0; x < ow; ++x) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t iy = y * w.sh - w.ph; iy < y * w.sh - w.ph + w.kh; ++iy)
          for (int64_t ix = x * w.sw - w.pw; ix < x * w.sw - w.pw + w.kw; ++ix)
            if (iy >= 0 && iy < h && ix >= 0 && ix < wd) m = std::max(m, in[(i * h + iy) * wd + ix]);
        out.push_back(m);
      }
  return out;
}
}  // namespace

CATCH_TEST_CASE("int8 max pools (shrink's own kernel) give each window's max, on one thread and on two", "[rt_load]") {
  // Padded, strided, ceil-mode and non-square windows; an unsigned grid (after relu) and a signed
  // one (straight after a conv); channel counts of whole 16-byte vectors and with a rest (83: the
  // kernel's 64-, 16- and 1-channel paths, u8 and s8).
  struct Case {
    const char* spec;
    PoolWindow window;
  };
  const Case cases[] = {{"conv(20) a=relu p=maxpool(k=3,s=2,p=1) conv(16) relu gap linear(classes)", {3, 3, 2, 2, 1, 1}},
                        {"a=conv(16) p=maxpool(k=2,s=2,ceil=1) relu conv(8) gap linear(classes)", {2, 2, 2, 2, 0, 0}},
                        {"conv(83) a=relu p=maxpool(k=3,kw=1,s=2,sw=1,p=1,pw=0) gap linear(classes)", {3, 1, 2, 1, 1, 0}},
                        {"a=conv(7) p=maxpool(k=1,kw=3,s=1,sw=2,pw=1,ceil=1) relu gap linear(classes)", {1, 3, 1, 2, 0, 1}},
                        {"a=conv(83) p=maxpool(k=3,s=2,p=1) relu gap linear(classes)", {3, 3, 2, 2, 1, 1}}};
  int seed = 10;
  for (const auto& [spec, window] : cases) {
    CATCH_INFO(spec);
    auto bytes = make_model(spec, {3, 9, 9}, 10, {true, 0, true, "dense", static_cast<uint64_t>(++seed)});
    auto x = random_inputs(512, 3 * 9 * 9, seed);
    for (size_t i = 0; i < x.size(); ++i) x[i] *= i % 7 == 0 ? -3.f : 2.f;  // both signs, past the grid's ends
    for (int threads : {1, 2}) {
      auto m = rt::Model::from_memory(bytes.data(), bytes.size(), threads);
      std::vector<std::vector<float>> values;
      m.predict(x.data(), 512, {"a", "p"}, values);
      const auto want = reference_max_pool(values[0], 512, m.output_shape("a"), m.output_shape("p"), window);
      CATCH_REQUIRE(values[1].size() == want.size());
      CATCH_CHECK(std::mismatch(want.begin(), want.end(), values[1].begin()).first == want.end());
    }
  }
  auto bytes = make_model("usps_student", {1, 16, 16}, 10, {true, 0, true, "dense", 13});
  auto m = rt::Model::from_memory(bytes.data(), bytes.size(), 1);
  auto x = random_inputs(1, 256, 5);
  auto steps = m.profile(x.data(), 1, 3);
  CATCH_CHECK(std::count_if(steps.begin(), steps.end(), [](const auto& s) { return s.what == "maxpool1 (max pool)"; }) == 1);
}

namespace {
bool cpu_has(const std::string& flag) {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string word;
  while (cpuinfo >> word)
    if (word == flag) return true;
  return false;
}
}  // namespace

CATCH_TEST_CASE("an int8 1x1 conv and the depthwise conv it feeds run as one primitive at a large batch, with the same bytes out", "[rt_load]") {
  // Two inverted-residual blocks: a stride-2 depthwise after a u8 input, a stride-1 one after an s8 input.
  const char* spec = "conv(16) relu6 conv(64,k=1) relu6 dwconv(k=3,s=2) d1=relu6 conv(24,k=1) conv(96,k=1) relu6 dwconv(k=3) d2=relu6 conv(24,k=1) gap linear(classes)";
  auto bytes = make_model(spec, {3, 28, 28}, 10, {true, 0, true, "dense", 21, false});
  auto m = rt::Model::from_memory(bytes.data(), bytes.size(), 2);
  const int64_t n = 256, per = 3 * 28 * 28;
  auto x = random_inputs(n, per, 21);
  auto steps = m.profile(x.data(), n, 1);
  const auto fused = std::count_if(steps.begin(), steps.end(), [](const auto& s) { return s.what.find("+dwconv") != std::string::npos; });
  // oneDNN 2.6 fuses them on AVX-512 with VNNI (jit_int8_1x1 with the depthwise kernel inside); at
  // batch 1 it would only chain the two kernels (ref_fused_convolution), which the runtime refuses.
  // (Without VNNI the runtime runs int8 layers on floats, unfused: ops/weighted.h.)
  if (cpu_has("avx512_vnni") && !std::getenv("DNNL_MAX_CPU_ISA")) CATCH_CHECK(fused == 2);
  CATCH_CHECK(m.profile(x.data(), 1, 1).size() == steps.size() + static_cast<size_t>(fused));  // one primitive fewer per pair
  std::vector<std::vector<float>> batch, one;
  auto logits = m.predict(x.data(), n, {"d1", "d2"}, batch);
  for (int64_t i = 0; i < n; ++i) {
    auto alone = m.predict(x.data() + i * per, 1, {"d1", "d2"}, one);
    for (size_t k = 0; k < one.size(); ++k) {
      const size_t size = one[k].size();
      CATCH_REQUIRE(std::equal(one[k].begin(), one[k].end(), batch[k].begin() + i * size));
    }
    for (int64_t j = 0; j < 10; ++j) CATCH_REQUIRE(std::fabs(alone[j] - logits[i * 10 + j]) <= 1e-4f * (1 + std::fabs(alone[j])));
  }
}

namespace {

// An int8 conv + ReLU unit as docs/quantization.md defines it, in integers and the float steps the
// runtime takes: the exact int32 sum (NHWC u8/s8 input, k x k, padding k / 2), plus the bias in the
// sum's units, times s_in * s_w[c] / s_out, clamped to [0, 255] and rounded half to even.
std::vector<int> reference_unit(const std::vector<int>& in, int64_t C, int64_t H, int64_t W, ModelParts& parts, const Layer& conv, float s_in, float s_out) {
  const ExportTensor& q = *parts.find(weight_key(conv.name));
  const int64_t O = q.dims[0], k = q.dims[2], p = k / 2;
  const auto* s_w = reinterpret_cast<const float*>(parts.find(weight_scale_key(conv.name))->bytes.data());
  const ExportTensor* bias = conv.bias ? parts.find(bias_key(conv.name)) : nullptr;
  std::vector<int> out(H * W * O);
  for (int64_t y = 0; y < H; ++y)
    for (int64_t x = 0; x < W; ++x)
      for (int64_t o = 0; o < O; ++o) {
        int64_t sum = 0;
        for (int64_t ky = 0; ky < k; ++ky)
          for (int64_t kx = 0; kx < k; ++kx) {
            const int64_t iy = y + ky - p, ix = x + kx - p;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
            for (int64_t c = 0; c < C; ++c) sum += in[(iy * W + ix) * C + c] * static_cast<int8_t>(q.bytes[((o * C + c) * k + ky) * k + kx]);
          }
        const float b = bias ? accumulator_bias(reinterpret_cast<const float*>(bias->bytes.data())[o], s_in, s_w[o]) : 0.f;
        const float v = (static_cast<float>(sum) + b) * (s_in * s_w[o] / s_out);
        out[(y * W + x) * O + o] = static_cast<int>(std::nearbyint(std::clamp(v, 0.f, 255.f)));
      }
  return out;
}

}  // namespace

CATCH_TEST_CASE("int8 convs sum exactly on every CPU: two units' output bytes equal a reference computed here", "[rt_load]") {
  // Without VNNI oneDNN's int8 kernels add u8 x s8 products in pairs into 16 bits (saturating on
  // large inputs, as the second conv's are) and halve the weights of an s8 input (the first
  // conv's): there the runtime runs these layers on floats (runtime/ops/weighted.h). Checked on a
  // VNNI CPU too with DNNL_MAX_CPU_ISA=AVX2 (tests/cli/test_shrink_run.cpp).
  auto parts = model_parts("conv(16) a=relu conv(16) b=relu gap linear(classes)", {3, 8, 8}, 10, {true, 0, false, "dense", 31, false});
  const ModelSpec spec = parse_spec(parts.meta["spec"].get<std::string>(), {3, 8, 8}, 10);
  const auto bytes = encode(parts);
  auto m = rt::Model::from_memory(bytes.data(), bytes.size(), 2);
  const int64_t n = 4, C = 3, H = 8, W = 8;
  auto x = random_inputs(n, C * H * W, 31);
  for (float& v : x) v *= 4;  // the whole s8 input grid, and large values after the first conv
  std::vector<std::vector<float>> values;
  m.predict(x.data(), n, {"a", "b"}, values);
  const float s_in = static_cast<float>(4.0 / 127), s_out = 0.05f;  // the model maker's grids
  int64_t saturating = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int> q_in(H * W * C);  // onto the input's grid as the runtime rounds it
    for (int64_t c = 0; c < C; ++c)
      for (int64_t p = 0; p < H * W; ++p) q_in[p * C + c] = static_cast<int>(std::nearbyint(std::clamp(x[(i * C + c) * H * W + p] / s_in, -128.f, 127.f)));
    const auto a = reference_unit(q_in, C, H, W, parts, spec.layers[0], s_in, s_out);
    const auto b = reference_unit(a, 16, H, W, parts, spec.layers[2], s_out, s_out);
    for (const auto& [got, want] : {std::pair{&values[0], &a}, std::pair{&values[1], &b}})
      for (int64_t c = 0; c < 16; ++c)
        for (int64_t p = 0; p < H * W; ++p) {
          const float v = (*got)[(i * 16 + c) * H * W + p];
          CATCH_REQUIRE(std::lround(v / s_out) == (*want)[p * 16 + c]);
        }
    for (int v : a) saturating += v > 128;  // inputs for which 16-bit pair sums can overflow
  }
  CATCH_CHECK(saturating > 100);  // (135 with this seed)
  // Int8Sums::fast: oneDNN's int8 kernels whatever the CPU (with VNNI the same bytes; without it no
  // conversions to floats, and wrong sums).
  auto fast = rt::Model::from_memory(bytes.data(), bytes.size(), 2, "fast", rt::Int8Sums::fast);
  const bool vnni = cpu_has("avx512_vnni") && !std::getenv("DNNL_MAX_CPU_ISA");
  const auto fast_steps = fast.profile(x.data(), 1, 1).size(), exact_steps = m.profile(x.data(), 1, 1).size();
  CATCH_CHECK((vnni ? fast_steps == exact_steps : fast_steps < exact_steps));
  if (vnni) CATCH_CHECK(fast.predict(x.data(), n) == m.predict(x.data(), n));
}

CATCH_TEST_CASE("the mapped file's dense tensors are read in place, sparse ones expanded once", "[rt_load]") {
  RtTempDir dir;
  auto parts = model_parts("usps_student", {1, 16, 16}, 10, {false, 0.8, false, "dense", 9});
  write_bytes(dir / "dense.shrink", encode(parts, "dense"));
  write_bytes(dir / "sparse.shrink", encode(parts, "sparse"));
  auto dense = rt::read_model_file(dir / "dense.shrink");
  auto sparse = rt::read_model_file(dir / "sparse.shrink");
  CATCH_REQUIRE(dense.backing);
  auto base = static_cast<const uint8_t*>(dense.backing.get());
  for (const auto& [name, t] : dense.tensors) {
    CATCH_INFO(name);
    CATCH_CHECK_FALSE(t.expanded);
    CATCH_CHECK(t.owner == dense.backing);  // a view into the mapping, not a copy
    CATCH_CHECK(t.bytes.data() >= base);
    CATCH_CHECK(t.bytes.data() + t.bytes.size() <= base + dense.file_size);
    CATCH_CHECK(reinterpret_cast<uintptr_t>(t.bytes.data()) % 64 == 0);
    const auto& s = sparse.tensors.at(name);
    CATCH_CHECK(s.expanded);
    CATCH_CHECK(s.owner != sparse.backing);
    CATCH_CHECK(reinterpret_cast<uintptr_t>(s.bytes.data()) % 64 == 0);
    CATCH_CHECK(std::equal(t.bytes.begin(), t.bytes.end(), s.bytes.begin(), s.bytes.end()));
    CATCH_CHECK(s.dims == t.dims);
  }
  // The tensors outlive the ModelFile they came from (each keeps its bytes alive).
  rt::Tensor kept = dense.tensors.at("conv1.weight");
  std::vector<uint8_t> copy(kept.bytes.begin(), kept.bytes.end());
  dense = rt::ModelFile{};
  CATCH_CHECK(std::equal(copy.begin(), copy.end(), kept.bytes.begin()));
  CATCH_CHECK_THROWS_WITH(rt::read_model_file(dir / "none.shrink"), Catch::Contains("cannot open"));
  CATCH_CHECK_THROWS_WITH(rt::read_model_file(dir.path.string()), Catch::Contains("not a regular file"));
  write_bytes(dir / "empty.shrink", {});
  CATCH_CHECK_THROWS_WITH(rt::read_model_file(dir / "empty.shrink"), Catch::Contains("truncated"));
}

CATCH_TEST_CASE("Model::load refuses every inconsistency in a checksummed file with one clear Error", "[rt_validate]") {
  using Edit = std::function<void(ModelParts&)>;
  struct Case {
    const char* what;
    bool int8;
    Edit edit;
    const char* expect;
  };
  auto remove = [](const std::string& name) { return [name](ModelParts& p) { p.tensors.erase(std::remove_if(p.tensors.begin(), p.tensors.end(), [&](auto& t) { return t.name == name; }), p.tensors.end()); }; };
  auto set_scale = [](float v) {
    return [v](ModelParts& p) {
      auto* t = p.find("conv2.weight_scale");
      std::memcpy(t->bytes.data() + 4, &v, 4);
    };
  };
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<Case> cases = {
      {"not a shrink model", false, [](ModelParts& p) { p.meta.erase("format"); }, "does not describe a shrink model"},
      {"format of the wrong type", false, [](ModelParts& p) { p.meta["format"] = 1; }, "does not describe a shrink model"},
      {"no spec", false, [](ModelParts& p) { p.meta.erase("spec"); }, "no \"spec\""},
      {"spec not a string", false, [](ModelParts& p) { p.meta["spec"] = 3; }, "\"spec\" is not a string"},
      {"spec that does not parse", false, [](ModelParts& p) { p.meta["spec"] = "conv(8"; }, "model spec"},
      {"spec whose output is not the classes", false, [](ModelParts& p) { p.meta["classes"] = 7; }, "model spec"},
      {"batchnorm without its scale and shift", false, [](ModelParts& p) { p.meta["spec"] = "conv(8) bn relu gap linear(5)"; }, "tensor bn1.weight is missing"},
      {"input not a list", false, [](ModelParts& p) { p.meta["input"] = "2x8x8"; }, "\"input\""},
      {"input of two dims", false, [](ModelParts& p) { p.meta["input"] = {8, 8}; }, "\"input\""},
      {"input with a zero", false, [](ModelParts& p) { p.meta["input"] = {2, 0, 8}; }, "bad dimension"},
      {"input with a float", false, [](ModelParts& p) { p.meta["input"] = {2, 8.5, 8}; }, "bad dimension"},
      {"input with a huge dimension", false, [](ModelParts& p) { p.meta["input"] = {2, int64_t(1) << 40, 8}; }, "bad dimension"},
      {"classes not a number", false, [](ModelParts& p) { p.meta["classes"] = "five"; }, "\"classes\""},
      {"classes negative", false, [](ModelParts& p) { p.meta["classes"] = -5; }, "\"classes\""},
      {"precision unknown", false, [](ModelParts& p) { p.meta["precision"] = "fp16"; }, "unknown precision fp16"},
      {"precision not a string", false, [](ModelParts& p) { p.meta["precision"] = 8; }, "\"precision\" is not a string"},
      {"normalization not an object", false, [](ModelParts& p) { p.meta["normalization"] = 1; }, "\"normalization\""},
      {"normalization of the wrong length", false, [](ModelParts& p) { p.meta["normalization"]["mean"].push_back(0.5); p.meta["normalization"]["std"].push_back(0.5); }, "normalization does not match the input channels"},
      {"mean without std", false, [](ModelParts& p) { p.meta["normalization"]["std"] = nlohmann::json::array(); }, "normalization does not match"},
      {"std zero", false, [](ModelParts& p) { p.meta["normalization"]["std"][1] = 0; }, "std is zero"},
      {"std not a number", false, [](ModelParts& p) { p.meta["normalization"]["std"][1] = "x"; }, "not a finite number"},
      {"mean null (NaN in JSON)", false, [](ModelParts& p) { p.meta["normalization"]["mean"][0] = nullptr; }, "not a finite number"},
      {"weight missing", false, remove("conv2.weight"), "tensor conv2.weight is missing"},
      {"bias missing", false, remove("conv3.bias"), "tensor conv3.bias is missing"},
      {"extra tensor", false, [](ModelParts& p) { p.tensors.push_back({"junk", format::DType::F32, {1}, {0, 0, 0, 0}}); }, "tensor junk belongs to no layer"},
      {"weight of the wrong dtype", false, [](ModelParts& p) { auto* t = p.find("conv1.weight"); t->dtype = format::DType::S32; }, "conv1.weight has dtype 4"},
      {"weight of the wrong shape", false, [](ModelParts& p) { std::swap(p.find("conv2.weight")->dims[0], p.find("conv2.weight")->dims[1]); p.find("conv2.weight")->dims[1] = 4; p.find("conv2.weight")->dims[0] = 16; }, "conv2.weight has shape 16x4x3x3, the layer needs 8x8x3x3"},
      {"linear weight of the wrong shape", false, [](ModelParts& p) { p.find("linear1.weight")->dims = {8, 5}; }, "linear1.weight has shape 8x5"},
      {"bias of the wrong size", false, [](ModelParts& p) { auto* t = p.find("conv1.bias"); t->dims = {4}; t->bytes.resize(16); }, "conv1.bias has shape 4"},
      {"int8 weight in a float layer", false, [](ModelParts& p) { auto* t = p.find("conv1.weight"); t->dtype = format::DType::S8; t->bytes.resize(t->bytes.size() / 4); }, "conv1.weight has dtype 2, expected 1"},
      {"weight scale zero", true, set_scale(0), "weight scale 1 of conv2 is not a positive number"},
      {"weight scale negative", true, set_scale(-0.5f), "is not a positive number"},
      {"weight scale infinite", true, set_scale(inf), "is not a positive number"},
      {"weight scale NaN", true, set_scale(nan), "is not a positive number"},
      {"weight scale missing", true, remove("conv1.weight_scale"), "tensor conv1.weight_scale is missing"},
      {"float weight in an int8 layer", true, [](ModelParts& p) { auto* t = p.find("conv1.weight"); t->dtype = format::DType::F32; t->bytes.resize(t->bytes.size() * 4); }, "conv1.weight has dtype 1, expected 2"},
      {"no quantization section", true, [](ModelParts& p) { p.meta.erase("quantization"); }, "needs \"quantization\""},
      {"activations not an object", true, [](ModelParts& p) { p.meta["quantization"]["activations"] = 1; }, "\"activations\""},
      {"int8_layers not a list", true, [](ModelParts& p) { p.meta["quantization"]["int8_layers"] = "conv1"; }, "\"int8_layers\""},
      {"int8 layer unknown", true, [](ModelParts& p) { p.meta["quantization"]["int8_layers"].push_back("conv9"); }, "int8 layer conv9 is not a layer"},
      {"int8 layer not a string", true, [](ModelParts& p) { p.meta["quantization"]["int8_layers"].push_back(3); }, "non-string"},
      {"int8 pooling", true, [](ModelParts& p) { p.meta["quantization"]["int8_layers"].push_back("maxpool1"); }, "only conv, linear, add, mul and concat"},
      {"activation scale missing where an int8 layer reads", true, [](ModelParts& p) { p.meta["quantization"]["activations"].erase("input"); }, "int8 layer conv1 reads input, which has no activation scale"},
      {"activation scale missing before an int8 add", true,
       [](ModelParts& p) {
         p.meta["quantization"]["activations"].erase("conv3");
         p.meta["quantization"]["int8_layers"] = {"conv1", "conv2", "add1", "linear1"};
         p.find("conv3.weight")->dtype = format::DType::F32;
         p.find("conv3.weight")->bytes.resize(p.find("conv3.weight")->bytes.size() * 4);
         p.tensors.erase(std::remove_if(p.tensors.begin(), p.tensors.end(), [](auto& t) { return t.name == "conv3.weight_scale"; }), p.tensors.end());
       },
       "int8 layer add1 reads conv3, which has no activation scale"},
      {"activation scale zero", true, [](ModelParts& p) { p.meta["quantization"]["activations"]["relu1"]["scale"] = 0; }, "activation scale of relu1 is not a positive number"},
      {"activation scale a string", true, [](ModelParts& p) { p.meta["quantization"]["activations"]["relu1"]["scale"] = "0.1"; }, "must be {\"scale\": number"},
      {"activation signed missing", true, [](ModelParts& p) { p.meta["quantization"]["activations"]["relu1"].erase("signed"); }, "must be {\"scale\": number"},
      {"activation point unknown", true, [](ModelParts& p) { p.meta["quantization"]["activations"]["relu9"] = {{"scale", 0.1}, {"signed", false}}; }, "activation scale for relu9, which is not a layer"},
      {"activations per example over the limit", false,
       [](ModelParts& p) {
         p.meta["spec"] = "conv(64,k=1) gap linear(5)";
         p.meta["input"] = {2, 2048, 2048};
       },
       "more than the runtime's limit"},
      {"input over the limit", false, [](ModelParts& p) { p.meta["input"] = {2, 8192, 8192}; }, "values per example"},
      // A 2 KB file asking for an image 2 million pixels wide made oneDNN allocate 2.3 GB at load (found by the fuzzer).
      {"image side over the limit", false, [](ModelParts& p) { p.meta["input"] = {2, 8, 40000}; }, "pixels high or wide"},
  };
  MakeOptions fp32{false, 0, true, "dense", 11}, int8{true, 0, true, "dense", 12};
  auto fp32_parts = model_parts(kResidual, {2, 8, 8}, 5, fp32), int8_parts = model_parts(kResidual, {2, 8, 8}, 5, int8);
  CATCH_REQUIRE(load_error(encode(fp32_parts)).empty());
  CATCH_REQUIRE(load_error(encode(int8_parts)).empty());
  for (const auto& c : cases) {
    CATCH_INFO(c.what);
    ModelParts parts = c.int8 ? int8_parts : fp32_parts;
    c.edit(parts);
    std::string error;
    CATCH_CHECK_NOTHROW(error = load_error(encode(parts)));
    CATCH_CHECK_THAT(error, Catch::Contains(c.expect));
    CATCH_CHECK(error.rfind("m.shrink: ", 0) == 0);        // names the file
    CATCH_CHECK(error.find('\n') == std::string::npos);  // one line
  }
}

CATCH_TEST_CASE("predict refuses bad arguments and batches over the memory limit with an Error", "[rt_validate]") {
  auto bytes = make_model("usps_student", {1, 16, 16}, 10);
  auto m = rt::Model::from_memory(bytes.data(), bytes.size(), 1);
  std::vector<float> x(256, 0.5f);
  CATCH_CHECK_THROWS_AS(m.predict(x.data(), 0), rt::Error);
  CATCH_CHECK_THROWS_AS(m.predict(x.data(), -3), rt::Error);
  CATCH_CHECK_THROWS_AS(m.predict(nullptr, 1), rt::Error);
  // 2^40 examples would need petabytes: refused before anything is allocated or compiled.
  CATCH_CHECK_THROWS_WITH(m.predict(x.data(), int64_t(1) << 40), Catch::Contains("split the batch"));
  CATCH_CHECK_THROWS_WITH(m.predict(x.data(), std::numeric_limits<int64_t>::max()), Catch::Contains("split the batch"));
  CATCH_CHECK(m.predict(x.data(), 1).size() == 10);
  CATCH_CHECK_THROWS_WITH(rt::Model::from_memory(nullptr, 10), Catch::Contains("null data"));
  CATCH_CHECK_THROWS_WITH(rt::Model::from_memory(bytes.data(), 100), Catch::Contains("truncated"));
  // More threads than OpenMP can start crashed in its first parallel call; negative ones meant all.
  for (int threads : {-1, 1025, 100000})
    CATCH_CHECK_THROWS_WITH(rt::Model::from_memory(bytes.data(), bytes.size(), threads), Catch::Contains("threads = " + std::to_string(threads)));
  // A moved-from Model says so (no Model can be made but by load and from_memory).
  static_assert(!std::is_default_constructible_v<rt::Model>);
  rt::Model moved = std::move(m);
  CATCH_CHECK_THROWS_WITH(m.predict(x.data(), 1), Catch::Contains("moved from"));
  CATCH_CHECK_THROWS_WITH(m.classes(), Catch::Contains("moved from"));
  CATCH_CHECK(moved.classes() == 10);
}

CATCH_TEST_CASE("weights that oneDNN's layouts pad past the runtime's limit are an Error before any is allocated", "[rt_validate]") {
  // One input and two outputs per group: oneDNN pads each group's weights to 16 x 16 on AVX-512
  // (8 x 8 on AVX2), 128 (32) times their size. 262,144 groups of 15x15 taps: 236 MB of weights
  // (sparse: all zero) would need 60 GB (15 GB).
  MakeOptions o;
  o.sparsity = 1;
  o.storage = "sparse";
  auto bytes = make_model("conv(524288,k=15,p=7,g=262144) gap linear(classes)", {262144, 8, 8}, 2, o);
  CATCH_CHECK_THROWS_WITH(rt::Model::from_memory(bytes.data(), bytes.size(), 1), Catch::Contains("more than the runtime's limit of 8192 MiB"));
}
