// ONNX tensors (initializers, Constant values) as floats or integers.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

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

// The tensor with its external data (ONNX's external_data: location, offset, length) read into
// raw_data. The location must name a file beside the model or below its folder, as onnx.checker
// requires.
onnx::TensorProto with_external_data(const onnx::TensorProto& t, const std::string& what, const std::string& model_path) {
  std::string location;
  int64_t offset = 0, length = -1;
  for (const auto& entry : t.external_data()) {
    auto number = [&] {
      try {
        size_t used = 0;
        const int64_t v = std::stoll(entry.value(), &used);
        if (used == entry.value().size() && v >= 0) return v;
      } catch (const std::exception&) {
      }
      throw UserError(fmt::format("{}: external data {} '{}' is not a byte count", what, entry.key(), entry.value()));
    };
    if (entry.key() == "location") location = entry.value();
    else if (entry.key() == "offset") offset = number();
    else if (entry.key() == "length") length = number();
  }
  const std::filesystem::path relative(location);
  if (location.empty() || relative.is_absolute() || std::any_of(relative.begin(), relative.end(), [](const auto& part) { return part == ".."; }))
    throw UserError(fmt::format("{}: external data location '{}' must name a file in the model's folder", what, location));
  const std::filesystem::path folder = std::filesystem::path(model_path).parent_path(), file = folder / relative;
  std::error_code ec;
  const std::string inside = std::filesystem::weakly_canonical(folder.empty() ? "." : folder, ec).string() + "/";
  if (std::filesystem::weakly_canonical(file, ec).string().rfind(inside, 0) != 0)
    throw UserError(fmt::format("{}: external data location '{}' must name a file in the model's folder (a link leads out of it)", what, location));
  std::ifstream in(file, std::ios::binary);
  const auto size = std::filesystem::file_size(file, ec);
  if (!in || ec) throw UserError(fmt::format("{}: cannot open its external data file {}", what, file.string()));
  if (length < 0) length = static_cast<int64_t>(size) - offset;
  if (offset > static_cast<int64_t>(size) || length < 0 || length > static_cast<int64_t>(size) - offset)
    throw UserError(fmt::format("{}: external data at offset {}, {} bytes, lies past the end of {} ({} bytes: truncated?)", what, offset,
                                length, file.string(), size));
  onnx::TensorProto copy = t;
  copy.clear_external_data();
  copy.set_data_location(onnx::TensorProto_DataLocation_DEFAULT);
  std::string bytes(static_cast<size_t>(length), '\0');
  in.seekg(offset);
  if (!in.read(bytes.data(), length)) throw UserError(fmt::format("{}: cannot read its external data from {}", what, file.string()));
  copy.set_raw_data(std::move(bytes));
  return copy;
}

}  // namespace

Constant decode_tensor(const onnx::TensorProto& t, const std::string& what, const std::string& model_path) {
  if (t.data_location() == onnx::TensorProto_DataLocation_EXTERNAL) return decode_tensor(with_external_data(t, what, model_path), what, model_path);
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
