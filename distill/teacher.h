// The teacher of a distillation: a shrink checkpoint (native: its spec is known, so its layers
// can be tapped for feature losses) or a TorchScript file saved by PyTorch (logits only).
// It always runs frozen: eval mode, no gradients. A quantized shrink checkpoint teaches what it
// computes: its int8 simulation (what its exported int8 model gives), not its float weights.
#pragma once
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "spec/spec.h"

namespace shrink {

class Teacher {
 public:
  virtual ~Teacher() = default;
  // kind: "auto" (a shrink checkpoint if it is one, else TorchScript), "shrink" or "torchscript".
  static std::unique_ptr<Teacher> load(const std::string& path, const std::string& kind, bool channels_last);
  // Logits for x; with taps, also the outputs of those teacher layers (native teachers only).
  virtual torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps = {},
                                std::map<std::string, torch::Tensor>* tapped = nullptr) = 0;
  virtual const ModelSpec* spec() const { return nullptr; }  // null for TorchScript teachers
  virtual std::string kind() const = 0;  // shrink | shrink-quantized | torchscript
  virtual bool int8_simulated() const { return false; }  // a quantized checkpoint, run as its int8 simulation
  const std::string& path() const { return path_; }
  const std::string& file_hash() const { return hash_; }  // xxh3-64 of the file, hex
  // The input normalization the teacher was trained with (empty: none or unknown), and its class names.
  std::vector<float> mean, std;
  std::vector<std::string> class_names;

 protected:
  std::string path_, hash_;
};

// xxh3-64 of a file's bytes, as 16 hex digits.
std::string hash_file(const std::string& path);

}  // namespace shrink
