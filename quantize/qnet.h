// The quantized simulation of a ModelSpec (docs/quantization.md): int8 per-channel symmetric
// weights, 8-bit per-tensor activations (unsigned after ReLU/ReLU6, signed symmetric elsewhere),
// batchnorm folded into the conv or linear before it, float logits out. It is a SpecNet, so the
// trainer trains it (quantization-aware training) and checkpoints hold its scales.
#pragma once
#include <string>
#include <vector>

#include "quantize/fake_quant.h"
#include "train/model.h"

namespace shrink {

struct QuantSettings {
  std::string observer = "minmax";  // minmax | ema | percentile
  double ema_momentum = 0.01, percentile = 99.99;
  bool lsq = false;                 // learnable step sizes (Esser et al. 2020)
  std::vector<std::string> float_layers;
  nlohmann::json to_json() const;
  static QuantSettings from_json(const nlohmann::json& j);
};

// The simulation's own parameters beside the model's, by name prefix: activation points
// ("aq_" + point) and LSQ weight scales ("wscale_" + layer). Checkpoints hold them under these names.
inline constexpr const char* kActivationPointPrefix = "aq_";
inline constexpr const char* kWeightScalePrefix = "wscale_";
inline bool is_quantizer_parameter(const std::string& name) {
  return name.rfind(kActivationPointPrefix, 0) == 0 || name.rfind(kWeightScalePrefix, 0) == 0;
}

// One activation quantization point: its observer, and its scale (a parameter with LSQ).
class ActQuantImpl : public torch::nn::Module {
 public:
  ActQuantImpl(bool is_signed, const QuantSettings& s);
  torch::Tensor forward(const torch::Tensor& x, bool observe, bool quantize);
  void finish_calibration();  // scale from the observer (and, with LSQ, becomes learnable)
  double qmin() const { return signed_ ? -128 : 0; }
  double qmax() const { return signed_ ? 127 : 255; }
  bool is_signed() const { return signed_; }
  torch::Tensor scale;

 private:
  bool signed_, lsq_;
  Observer observer_;
};
TORCH_MODULE(ActQuant);

class QuantNetImpl : public SpecNetImpl {
 public:
  QuantNetImpl(ModelSpec spec, QuantSettings settings);
  void set_calibrating(bool on) { calibrating_ = on; }
  void finish_calibration();
  void freeze_observers(bool on) { observers_frozen_ = on; }
  void freeze_batchnorm(bool on) { bn_frozen_ = on; }
  nlohmann::json describe() const override;
  // Activation scales (and signedness) by point, and per-channel weight scales by layer.
  nlohmann::json scales();
  // The weight a quantized layer computes with: batchnorm folded in, then fake-quantized.
  torch::Tensor quantized_weight(size_t layer);
  bool is_quantized(size_t layer) const { return quantized_[layer]; }

 protected:
  torch::Tensor layer_forward(size_t i, torch::Tensor& in, const std::vector<torch::Tensor>& rest, bool inplace) override;

 private:
  torch::Tensor fold_factor(size_t i);    // gamma / sqrt(var + eps) of the batchnorm folded into layer i
  torch::Tensor folded_weight(size_t i);  // layer i's weight with that factor applied per output channel
  torch::Tensor weight_scale(size_t i);   // its per-channel int8 scales (LSQ's, else max|w| / 127)
  // A bias on the int32 accumulator's grid, s_in * s_w[c] (docs/quantization.md).
  torch::Tensor accumulator_bias(size_t i, const torch::Tensor& b);
  // Layer i's output in evaluation: its int32 sum (bias included) computed exactly, then scaled.
  torch::Tensor integer_forward(size_t i, const torch::Tensor& x, const torch::Tensor& qw, const torch::Tensor& b);
  torch::Tensor apply_point(int point, const torch::Tensor& x);
  QuantSettings settings_;
  std::vector<bool> quantized_;     // conv/linear/add layers computed in int8
  std::vector<int> folded_into_;    // batchnorm layer -> the layer it is folded into (-1: none)
  std::vector<int> folded_bn_;      // conv/linear layer -> its folded batchnorm (-1: none)
  std::vector<int> point_after_;    // layer -> activation point applied to its output (-1: none)
  std::vector<int> grid_;           // layer -> point whose grid its output lies on (-1: float)
  std::vector<int> input_grid_;     // layer -> point whose grid its (first) input lies on (-1: float)
  std::vector<int> unit_point_;     // int8 conv/linear/add -> the point its unit's output is quantized at (-1: float)
  int input_point_ = -1;
  std::vector<ActQuant> points_;
  std::vector<torch::Tensor> weight_scale_;  // LSQ: learnable per-channel weight scales
  bool calibrating_ = false, observers_frozen_ = false, bn_frozen_ = false;
};
TORCH_MODULE(QuantNet);

}  // namespace shrink
