// The importer's inner workings (onnx/import.cpp walks the graph, onnx/ops.cpp reads each op):
// every tensor of the graph is a Value, either a layer's output, a constant (initializers,
// Constant nodes, and the small integer vectors of shape arithmetic), a layer's output with a
// zero Pad still to apply (taken by the Conv or AveragePool that reads it), or a layer's output
// in the middle of a channel shuffle (viewed as N, g, C/g, H, W; then with the two group axes swapped),
// or one of the other partial views that Value::Kind lists.
#pragma once
#include <onnx/onnx_pb.h>

#include <limits>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "onnx/import.h"

namespace shrink::onnx_import {

// The batch size in shape arithmetic (Shape of a layer's output): known only when run.
inline constexpr int64_t kBatch = std::numeric_limits<int64_t>::min();

struct Constant {
  std::vector<int64_t> dims;
  bool is_float = true;
  std::vector<float> floats;  // is_float
  std::vector<int64_t> ints;  // !is_float (may hold kBatch)
  int64_t numel() const { return is_float ? static_cast<int64_t>(floats.size()) : static_cast<int64_t>(ints.size()); }
  // Its one value as a float (an integer converted); NaN unless it holds exactly one.
  float scalar() const {
    if (numel() != 1) return std::numeric_limits<float>::quiet_NaN();
    return is_float ? floats[0] : static_cast<float>(ints[0]);
  }
};

// onnx/tensors.cpp. `what` names the tensor in errors; data in an external file is read from
// there, its location relative to the model file `model_path` (as ONNX saves it).
Constant decode_tensor(const onnx::TensorProto& t, const std::string& what, const std::string& model_path);

struct Value {
  // ChannelsLast: the layer's C,H,W output viewed as H,W,C (a Transpose(0,2,3,1) of it, or the
  // model input as a channels-last file gives it); FlatChannelsLast: that view flattened.
  // Expanded: a C,1,1 layer output broadcast to C,H,W (Expand; only a Mul reads it).
  // Above: whether a layer's output exceeds the scalar `constant` (Greater; only a Where reads it).
  // GeluPart: a step of torch's GELU below opset 20 on the layer's output (gelu_step).
  enum class Kind { Layer, Constant, Padded, Grouped, ChannelsLast, FlatChannelsLast, Expanded, Above, GeluPart } kind = Kind::Layer;
  std::string layer;            // all but Constant: the spec layer whose output it is ("" = the model input)
  std::vector<int64_t> shape;   // all but Constant: per sample, as the layer gives it (C,H,W)
  Constant constant;            // Constant; Above: the threshold
  Pads pads{0, 0, 0, 0};        // Padded
  int64_t groups = 0;           // Grouped: viewed as N, groups, C/groups, H, W ...
  bool swapped = false;         // ... and then as N, C/groups, groups, H, W
  int gelu_steps = 0;           // GeluPart: how many of its steps are taken
  std::vector<int64_t> image;   // FlatChannelsLast: the C,H,W image whose H,W,C order it flattens; Expanded: the C,H,W it fills
};

inline Value constant_value(Constant c) {
  Value v;
  v.kind = Value::Kind::Constant;
  v.constant = std::move(c);
  return v;
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, const std::string& path, const std::vector<int64_t>& input);
  ImportedModel run();

  using Handler = void (Importer::*)(const onnx::NodeProto&);
  static const std::map<std::string, Handler>& handlers();  // onnx/ops.cpp

 private:
  // ops.cpp: one reader per op type (or family).
  void conv(const onnx::NodeProto& n);
  void gemm(const onnx::NodeProto& n);
  void matmul(const onnx::NodeProto& n);
  void add(const onnx::NodeProto& n);
  void mul(const onnx::NodeProto& n);
  void batchnorm(const onnx::NodeProto& n);
  void activation(const onnx::NodeProto& n);
  void clip(const onnx::NodeProto& n);
  void hardsigmoid(const onnx::NodeProto& n);
  void pool(const onnx::NodeProto& n);
  void ceil_from_end_pads(const onnx::NodeProto& n, Layer& L, const std::vector<int64_t>& in, const std::vector<int64_t>& pads);
  void global_pool(const onnx::NodeProto& n);
  void reduce(const onnx::NodeProto& n);  // ReduceMean, ReduceMax
  void flatten(const onnx::NodeProto& n);
  void reshape(const onnx::NodeProto& n);
  void shape(const onnx::NodeProto& n);
  void gather(const onnx::NodeProto& n);
  void squeeze(const onnx::NodeProto& n);
  void concat(const onnx::NodeProto& n);
  void identity(const onnx::NodeProto& n);
  void dropout(const onnx::NodeProto& n);
  void pad(const onnx::NodeProto& n);
  void expand(const onnx::NodeProto& n);
  void prelu(const onnx::NodeProto& n);
  void greater(const onnx::NodeProto& n);
  void erf(const onnx::NodeProto& n);
  bool gelu_step(const onnx::NodeProto& n);
  void where(const onnx::NodeProto& n);
  void min_max(const onnx::NodeProto& n);
  void squeeze_layer(const onnx::NodeProto& n, const Value& x);
  std::vector<int64_t> axes_of(const onnx::NodeProto& n, int64_t rank) const;
  int64_t axes_count(const onnx::NodeProto& n) const;
  void flatten_value(const onnx::NodeProto& n, const Value& x);
  const Value& linear_input(const onnx::NodeProto& n) const;
  std::vector<float> linear_weight(const Value& a, std::vector<float> w, int64_t out) const;
  std::vector<int64_t> pads_of_all_axes(const onnx::NodeProto& n, const std::vector<int64_t>& pads, const std::vector<int64_t>& axes, int64_t rank);
  void normalization(const onnx::NodeProto& n);  // Add, Sub, Mul, Div of a constant on the input
  std::vector<float> per_input_channel(const onnx::NodeProto& n, const Value& x, const Constant& c) const;
  // ops_constants.cpp: ops on constants, computed here.
  void constant(const onnx::NodeProto& n);
  void cast(const onnx::NodeProto& n);
  void constant_of_shape(const onnx::NodeProto& n);
  void transpose_constant(const onnx::NodeProto& n, const Constant& c);
  void reshape_constant(const onnx::NodeProto& n, const Constant& c);
  void slice_constant(const onnx::NodeProto& n, const Constant& c);
  struct SliceArgs {
    std::vector<int64_t> starts, ends, axes, steps;
  };
  SliceArgs slice_args(const onnx::NodeProto& n) const;  // Slice's inputs (axes default 0.., steps 1), checked
  // ops_channels.cpp: channel shuffles, slices and splits, and the arithmetic of shape vectors.
  void arithmetic(const onnx::NodeProto& n);     // Add, Sub, Mul, Div: of constants here, else the readers above
  void group(const onnx::NodeProto& n, const Value& x, const std::vector<int64_t>& target);
  void ungroup(const onnx::NodeProto& n, const Value& x);
  void transpose(const onnx::NodeProto& n);
  void slice(const onnx::NodeProto& n);
  void split(const onnx::NodeProto& n);
  void output_softmax(const onnx::NodeProto& n);  // Softmax, LogSoftmax
  // Whether the first entry of a Reshape target `t` is the batch: from Shape, 0 (copied), the
  // file's own fixed batch size, or -1 when every other entry is given.
  bool batch_entry(const std::vector<int64_t>& t) const;

  // import.cpp: values, layers, errors.
  [[noreturn]] void unsupported(const onnx::NodeProto& n, const std::string& what) const;
  const Value& input(const onnx::NodeProto& n, int k) const;        // any kind; an error when absent
  bool has_input(const onnx::NodeProto& n, int k) const;            // given and not ""
  const Value& layer_input(const onnx::NodeProto& n, int k) const;  // a layer's output (a Pad must have been taken)
  const Value& padded_input(const onnx::NodeProto& n, int k) const; // a layer's output, or one with a Pad still to take (Conv, pools)
  const Constant& constant_input(const onnx::NodeProto& n, int k) const;
  void set_output(const onnx::NodeProto& n, Value v);
  void only_first_output_used(const onnx::NodeProto& n) const;
  // Appends `L` reading `inputs` (layer names), checks its shapes and sets the node's output.
  std::string add_layer(const onnx::NodeProto& n, Layer L, const std::vector<std::string>& inputs, int output = 0);
  void set_tensor(const std::string& key, std::vector<int64_t> shape, std::vector<float> values);
  void retype(const onnx::NodeProto& n, int i, LayerType type, const std::string& input);
  int index_of_layer(const std::string& name) const { return spec_.index_of(name); }
  int uses(const std::string& tensor) const;
  // Nodes (and graph outputs) that read layer `layer`'s output under any of its names: an
  // Identity, a Flatten or Reshape that changes nothing, a one-input Concat or a folded bias Add
  // gives it another name, and its own read of the first is not a reader's.
  int readers(const std::string& layer) const;
  void finish_output();

  const onnx::ModelProto& model_;
  std::string path_;
  int64_t opset_ = 0;
  std::vector<float> norm_scale_, norm_offset_;  // the input's normalization so far: x * scale + offset, per channel
  int64_t file_batch_ = 0;  // the input's batch size when the file fixes one (torch's export without dynamic axes)
  std::map<std::string, Value> values_;
  std::map<std::string, int> uses_;      // readers of each tensor name (graph outputs count)
  std::map<std::string, int> counters_;  // layer names: op + running count
  ImportedModel out_;
  ModelSpec& spec_ = out_.spec;
};

inline Layer layer_of(LayerType type) {
  Layer L;
  L.type = type;
  return L;
}

// Attribute readers (ops.cpp). An attribute of another type than ONNX gives it is a BadAttribute
// (the importer names the file and node).
struct BadAttribute : std::runtime_error {
  using std::runtime_error::runtime_error;
};
int64_t attr_int(const onnx::NodeProto& n, const std::string& name, int64_t fallback);
// A float attribute as the double its shortest text reads as (0.2f as 0.2), for readable specs.
double attr_float(const onnx::NodeProto& n, const std::string& name, float fallback);
double as_double(float v);
std::string attr_string(const onnx::NodeProto& n, const std::string& name, const std::string& fallback);
std::vector<int64_t> attr_ints(const onnx::NodeProto& n, const std::string& name, std::vector<int64_t> fallback = {});

}  // namespace shrink::onnx_import
