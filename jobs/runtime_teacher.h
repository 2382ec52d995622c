// teacher.engine = runtime-fp32 | runtime-int8 (distill/teacher.h): the frozen teacher exported to a
// .shrink file and run by shrink's own runtime, which runs a folded fp32 model about 2x and an int8
// one about 6x faster than LibTorch's forward at batch 256. An int8 teacher is calibrated after
// training on training batches and checked against the fp32 teacher before any training.
#pragma once
#include <memory>

#include "distill/teacher.h"

namespace shrink {

// What jobs/jobs.cpp registers with register_teacher_engine.
std::unique_ptr<Teacher> runtime_teacher(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& request);

}  // namespace shrink
