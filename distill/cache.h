// Teacher-output cache: the teacher's logits for every example of a source, computed once and
// kept in an HDF5 file whose name is a hash of the teacher file and of the examples themselves
// (values, labels and normalization), so a changed teacher or dataset never reuses stale logits.
#pragma once
#include <string>

#include "datasets/loader.h"
#include "distill/teacher.h"

namespace shrink {

struct CachedLogits {
  torch::Tensor logits;  // [N, classes], row i for example i of the source
  std::string file;
  bool reused = false;   // found on disk rather than computed now
};

// xxh3-64 of a source's examples and labels (and the normalization applied), hex.
std::string hash_examples(const Source& source, const Augment& normalization);
CachedLogits teacher_logits_cached(Teacher& teacher, std::shared_ptr<const Source> source, const Augment& normalization,
                                   const std::string& cache_dir, int64_t batch_size);

}  // namespace shrink
