// teacher.engine = runtime-fp32 | runtime-int8 (distill/teacher.h): the frozen teacher exported to a
// .shrink file and run by shrink's own runtime (folded, fused, and in int8 on integer kernels),
// faster than LibTorch's forward with its autograd machinery. An int8 teacher is calibrated after
// training on training batches and checked against the fp32 teacher before any training.
#pragma once
#include <memory>

#include "distill/teacher.h"

namespace shrink {

// What jobs/jobs.cpp registers with register_teacher_engine.
std::unique_ptr<Teacher> runtime_teacher(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& request);

}  // namespace shrink
