#include <shrink/runtime.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  try {
    auto m = shrink::rt::Model::load(argv[1], 1);
    int64_t n = 1;
    for (int64_t d : m.input_shape()) n *= d;
    std::vector<float> x(2 * n, 0.25f);
    auto logits = m.predict(x.data(), 2);
    std::printf("cpp ok: %zu logits, %s\n", logits.size(), m.precision().c_str());
    return logits.size() == size_t(2 * m.classes()) ? 0 : 1;
  } catch (const shrink::rt::Error& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
