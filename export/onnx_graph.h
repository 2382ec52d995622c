// The building blocks of an ONNX graph as the exporter writes it (export/onnx_writer.cpp): inputs
// and outputs with a batch axis, initializers from raw bytes, nodes named after their output, and
// attributes.
#pragma once
#include <onnx/onnx_pb.h>

#include <cstdint>
#include <string>
#include <vector>

namespace shrink {

class OnnxGraph {
 protected:
  using DataType = onnx::TensorProto::DataType;
  explicit OnnxGraph(onnx::GraphProto& graph) : g_(graph) {}

  void add_io(onnx::ValueInfoProto& v, const std::string& name, const std::vector<int64_t>& per_sample) {
    v.set_name(name);
    auto* t = v.mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    t->mutable_shape()->add_dim()->set_dim_param("batch");
    for (int64_t d : per_sample) t->mutable_shape()->add_dim()->set_dim_value(d);
  }

  void initializer(const std::string& name, DataType type, const std::vector<int64_t>& dims, const void* data, size_t bytes) {
    onnx::TensorProto* t = g_.add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    for (int64_t d : dims) t->add_dims(d);
    t->set_raw_data(data, bytes);
  }
  template <class T>
  std::string initializer(const std::string& name, DataType type, const std::vector<int64_t>& dims, const std::vector<T>& values) {
    initializer(name, type, dims, values.data(), values.size() * sizeof(T));
    return name;
  }
  std::string floats(const std::string& name, const std::vector<int64_t>& dims, const std::vector<float>& values) {
    return initializer(name, onnx::TensorProto::FLOAT, dims, values);
  }

  onnx::NodeProto& node(const std::string& op, const std::vector<std::string>& inputs, const std::string& output) {
    onnx::NodeProto* n = g_.add_node();
    n->set_op_type(op);
    n->set_name(output);
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(output);
    return *n;
  }
  static void attr(onnx::NodeProto& n, const std::string& name, int64_t v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, float v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::FLOAT);
    a->set_f(v);
  }
  static void attr(onnx::NodeProto& n, const std::string& name, const std::vector<int64_t>& v) {
    auto* a = n.add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t x : v) a->add_ints(x);
  }

  std::string int64s(const std::string& name, const std::vector<int64_t>& values) {
    return initializer(name, onnx::TensorProto::INT64, {static_cast<int64_t>(values.size())}, values);
  }

  onnx::GraphProto& g_;
};

}  // namespace shrink
