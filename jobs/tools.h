// The commands that are not jobs: they look at a checkpoint, a model spec or a dataset, or export
// a checkpoint, and return the text the command prints (no run directory, no config file; a
// checkpoint's own saved config gives its data, with --data.key=value over it).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "export/export.h"  // ExportOptions

namespace shrink {

// A checkpoint and the data to measure it on.
struct CheckpointRun {
  std::string checkpoint;
  std::vector<std::string> overrides;  // --section.key=value over the checkpoint's saved config (--data.path=...)
  int64_t threads = 0;                 // 0: all cores
};

// `shrink eval`: test accuracy and loss, overall and per class; writes the logits as raw float32
// to `logits_out` unless it is empty.
std::string eval_report(const CheckpointRun& run, const std::string& logits_out);
// `shrink prune sensitivity`: accuracy with each layer pruned alone to each sparsity.
std::string sensitivity_report(const CheckpointRun& run, const std::vector<double>& sparsities);
// `shrink export`: writes the model file; one line saying what it wrote.
std::string export_report(const std::string& checkpoint, const std::string& out, const ExportOptions& options);
// `shrink model info`: each layer's type, shapes, params and MACs, and the totals, of a spec or
// preset (input C,H,W; empty: 1,16,16), an ONNX file (input: when the file leaves it open) or a checkpoint.
std::string model_info(const std::string& spec_or_file, const std::vector<int64_t>& input, int64_t classes);
// `shrink data info`: shapes, dtypes and class counts of a dataset.
std::string data_info(const std::string& path);
// `shrink prune report`: per-layer params, nonzeros, sparsity and MACs of a checkpoint.
std::string pruning_report(const std::string& checkpoint);

}  // namespace shrink
