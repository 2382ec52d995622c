// ONNX tensors (initializers, Constant values) as floats or integers.
#include <fmt/format.h>

#include <cstring>

#include "common/error.h"
#include "onnx/importer.h"

namespace shrink::onnx_import {
namespace {

// Values stored as raw little-endian bytes or in the typed repeated field.
template <class Stored, class Out, class Field>
void read_values(const onnx::TensorProto& t, int64_t numel, const Field& field, std::vector<Out>& out, const std::string& what) {
  out.resize(static_cast<size_t>(numel));
  if (!t.raw_data().empty()) {
    if (t.raw_data().size() != static_cast<size_t>(numel) * sizeof(Stored))
      throw UserError(fmt::format("{}: {} bytes of data for {} values (damaged file?)", what, t.raw_data().size(), numel));
    for (int64_t i = 0; i < numel; ++i) {
      Stored v;
      std::memcpy(&v, t.raw_data().data() + i * sizeof(Stored), sizeof(Stored));
      out[i] = static_cast<Out>(v);
    }
    return;
  }
  if (field.size() != numel) throw UserError(fmt::format("{}: {} values for shape of {} (damaged file?)", what, field.size(), numel));
  for (int64_t i = 0; i < numel; ++i) out[i] = static_cast<Out>(field.Get(static_cast<int>(i)));
}

}  // namespace

Constant decode_tensor(const onnx::TensorProto& t, const std::string& what) {
  if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL)
    throw UserError(fmt::format("{}: its data is in an external file, which import does not read (save the model with its data inside)", what));
  Constant c;
  int64_t numel = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || __builtin_mul_overflow(numel, d, &numel) || numel > (int64_t(1) << 31))
      throw UserError(fmt::format("{}: bad or too large shape", what));
    c.dims.push_back(d);
  }
  switch (t.data_type()) {
    case onnx::TensorProto_DataType_FLOAT: read_values<float>(t, numel, t.float_data(), c.floats, what); break;
    case onnx::TensorProto_DataType_DOUBLE: read_values<double>(t, numel, t.double_data(), c.floats, what); break;
    case onnx::TensorProto_DataType_INT64:
      c.is_float = false;
      read_values<int64_t>(t, numel, t.int64_data(), c.ints, what);
      break;
    case onnx::TensorProto_DataType_INT32:
      c.is_float = false;
      read_values<int32_t>(t, numel, t.int32_data(), c.ints, what);
      break;
    case onnx::TensorProto_DataType_BOOL:  // Dropout's training_mode
      c.is_float = false;
      read_values<uint8_t>(t, numel, t.int32_data(), c.ints, what);
      break;
    default:
      throw UserError(fmt::format("{}: data type {} is not supported (import reads fp32 models; quantized ONNX files are not read yet)", what,
                                  onnx::TensorProto_DataType_Name(static_cast<onnx::TensorProto_DataType>(t.data_type()))));
  }
  return c;
}

}  // namespace shrink::onnx_import
