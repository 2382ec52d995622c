// teacher.engine = runtime-fp32 | runtime-int8 (distill/teacher.h): the frozen teacher exported to a
// .shrink file and run by shrink's own runtime (folded, fused, and in int8 on integer kernels),
// faster than LibTorch's forward with its autograd machinery. An int8 teacher is calibrated after
// training on training batches and checked against the fp32 teacher before any training. A
// .shrink or ONNX file given as teacher is read here too.
#pragma once
#include <memory>

#include "distill/teacher.h"

namespace shrink {

// What jobs/jobs.cpp registers with register_teacher_engine. It is also handed an int8 .shrink
// teacher (already on the runtime), whatever teacher.engine says, to check and keep it.
std::unique_ptr<Teacher> runtime_teacher(std::unique_ptr<Teacher> libtorch, const TeacherEngineRequest& request);
// What jobs/jobs.cpp registers with register_model_file_teacher: a .shrink or ONNX file given as
// teacher. An ONNX or fp32 .shrink file is imported once (as `shrink import` does) into a checkpoint
// in cache_dir, named by the file's hash, and teaches from it on any engine; an int8 .shrink file is
// a teacher on the runtime, run as it is.
std::unique_ptr<Teacher> model_file_teacher(const std::string& path, const std::string& cache_dir, bool channels_last);

}  // namespace shrink
