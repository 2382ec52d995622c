// train.precision: fp32, or bf16 autocast (LibTorch's CPU autocast: convolutions and matrix
// products in bfloat16, weights, gradients and optimizer state in fp32). bf16 pays only on CPUs
// that compute it natively (AMX or AVX512-BF16); elsewhere it is emulated and several times slower
// (pytorch#86270), so `auto` picks it only on those.
#pragma once
#include <string>

namespace shrink {

struct Precision {
  std::string name;       // fp32 | bf16: what the run trains in
  std::string cpu_flags;  // the CPU's bf16 flags that decided `auto` ("" when it has none)
};

// `asked`: fp32 | bf16 | auto.
Precision resolve_precision(const std::string& asked);

// Autocast to bf16 on this thread for the scope's life when `on` (the forward and the loss; the
// backward runs outside).
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool on);
  ~Bf16Autocast();
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool on_, was_enabled_ = false;
};

}  // namespace shrink
