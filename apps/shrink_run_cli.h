// shrink-run's options, declared once for the program and its tests.
#pragma once
#include "apps/cli.h"

namespace shrink {

inline const CommandLine& shrink_run_command_line() {
  static const CommandLine line{
      "shrink-run", "", "MODEL",
      "runs a .shrink model with the runtime alone (no LibTorch): prints the predicted classes, or the accuracy with --labels.\n"
      "Inputs: PNG or JPEG images (for a model trained on images: prints each one's top classes), NumPy .npy arrays (N,C,H,W\n"
      "as torch orders them; float32, float64, or uint8 scaled to [0,1]), IDX files (uint8 scaled to [0,1], or float32) or raw\n"
      "float32 (N x input size, C,H,W order: the one form whose shape is not checked); labels: IDX or raw int32.",
      {{"input", "FILE...", Rule::text(false), "the examples: one or more files", false, true, true},
       {"top", "K", Rule::integer(1, 1 << 20), "images: how many of the most likely classes to print (default 3)"},
       {"labels", "FILE", Rule::text(false), "their labels: print the accuracy"},
       {"logits", "OUT", Rule::text(false), "write the logits as raw float32, one row per example"},
       {"batch", "N", Rule::integer(1, 1 << 16), "examples per predict call (and the --bench throughput batch; default 256, 1 with --profile)"},
       {"threads", "N", Rule::integer(0, 1024), "oneDNN threads (0: all cores)"},
       {"bench", "", Rule::flag(), "measure batch-1 latency and batch-N throughput instead (and print the peak memory)"},
       {"seconds", "S", Rule::real(0.01, 3600), "--bench: seconds of each measurement (default 2)"},
       {"profile", "", Rule::flag(), "where a call's time goes instead: each primitive's median time at batch N (--batch, default 1)"}},
      false};
  return line;
}

}  // namespace shrink
