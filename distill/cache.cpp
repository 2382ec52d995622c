#include "distill/cache.h"

#include <fmt/format.h>
#include <xxhash.h>

#include <filesystem>

#include "datasets/formats.h"

namespace shrink {

std::string hash_examples(const Source& source, const Augment& normalization) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  const int64_t chunk = 4096;
  for (int64_t start = 0; start < source.size(); start += chunk) {
    torch::Tensor x, y;
    source.read_range(start, std::min(chunk, source.size() - start), x, y);
    x = x.contiguous();
    y = y.contiguous();
    XXH3_64bits_update(state, x.data_ptr(), x.numel() * x.element_size());
    XXH3_64bits_update(state, y.data_ptr(), y.numel() * y.element_size());
  }
  for (const auto* v : {&normalization.mean, &normalization.std}) XXH3_64bits_update(state, v->data(), v->size() * sizeof(float));
  uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return fmt::format("{:016x}", h);
}

CachedLogits teacher_logits_cached(Teacher& teacher, std::shared_ptr<const Source> source, const Augment& normalization,
                                   const std::string& cache_dir, int64_t batch_size) {
  CachedLogits c;
  c.file = fmt::format("{}/teacher-{}-data-{}.h5", cache_dir, teacher.file_hash(), hash_examples(*source, normalization));
  if (std::filesystem::exists(c.file)) {
    c.logits = read_hdf5_tensor(c.file, "logits");
    if (c.logits.dim() == 2 && c.logits.size(0) == source->size()) {
      c.reused = true;
      return c;
    }
  }
  std::vector<torch::Tensor> parts;
  for_each_batch(source, batch_size, normalization, [&](const Batch& b) { parts.push_back(teacher.forward(b.x)); });
  c.logits = torch::cat(parts).contiguous();
  std::filesystem::create_directories(cache_dir);
  write_hdf5_tensor(c.file, "logits", c.logits);
  return c;
}

}  // namespace shrink
