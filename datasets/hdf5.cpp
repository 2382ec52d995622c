// HDF5 datasets through the C API. HDF5 is not thread-safe: every call holds hdf5_mutex
// (the loader's prefetch thread reads through here too).
#include <fmt/format.h>
#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <numeric>

#include "common/error.h"
#include "common/file_io.h"
#include "datasets/formats.h"

namespace shrink {
namespace {

std::mutex hdf5_mutex;

// Owns one HDF5 handle and closes it with the right function.
struct Handle {
  hid_t id = -1;
  herr_t (*close)(hid_t) = nullptr;
  Handle(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() {
    if (id >= 0) close(id);
  }
};

void silence_hdf5() {
  static std::once_flag once;
  std::call_once(once, [] { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); });
}

std::vector<int64_t> dims_of(hid_t dataset) {
  Handle space(H5Dget_space(dataset), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(space.id);
  std::vector<hsize_t> dims(std::max(rank, 0));
  H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
  return {dims.begin(), dims.end()};
}

enum class Kind { Float32, UInt8, Integer, Other };

Kind kind_of(hid_t dataset) {
  Handle type(H5Dget_type(dataset), H5Tclose);
  H5T_class_t cls = H5Tget_class(type.id);
  size_t size = H5Tget_size(type.id);
  if (cls == H5T_FLOAT && size == 4) return Kind::Float32;
  if (cls == H5T_INTEGER && size == 1 && H5Tget_sign(type.id) == H5T_SGN_NONE) return Kind::UInt8;
  if (cls == H5T_INTEGER) return Kind::Integer;
  return Kind::Other;
}

// "float64", "int16", ...: what the file holds, for error messages.
std::string type_name(hid_t dataset) {
  Handle type(H5Dget_type(dataset), H5Tclose);
  H5T_class_t cls = H5Tget_class(type.id);
  size_t bits = 8 * H5Tget_size(type.id);
  if (cls == H5T_FLOAT) return fmt::format("float{}", bits);
  if (cls == H5T_INTEGER) return fmt::format("{}int{}", H5Tget_sign(type.id) == H5T_SGN_NONE ? "u" : "", bits);
  return "non-numeric";
}

class Hdf5Source : public Source {
 public:
  Hdf5Source(const std::string& path, const std::string& group, const std::vector<int64_t>& shape, std::string description)
      : path_(path), group_(group), description_(description.empty() ? fmt::format("{}:/{}", path, group) : std::move(description)) {
    std::lock_guard<std::mutex> lock(hdf5_mutex);
    silence_hdf5();
    if (!std::filesystem::is_regular_file(path)) throw UserError(fmt::format("{}: no such file", path));
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_ < 0) throw UserError(fmt::format("{}: not an HDF5 file or unreadable", path));
    try {
      open_datasets(shape);
    } catch (...) {
      close_all();
      throw;
    }
  }
  ~Hdf5Source() override { close_all(); }

  int64_t size() const override { return n_; }
  std::vector<int64_t> shape() const override { return shape_; }
  std::string describe() const override { return description_; }

  void read(const std::vector<int64_t>& indices, torch::Tensor& x, torch::Tensor& y) const override {
    // HDF5 returns selected rows in file order: read them sorted, then put them back in order.
    std::vector<int64_t> order(indices.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return indices[a] < indices[b]; });
    std::vector<int64_t> sorted(indices.size());
    for (size_t i = 0; i < order.size(); ++i) sorted[i] = indices[order[i]];
    torch::Tensor xs, ys;
    read_rows(sorted, xs, ys);
    auto inverse = torch::empty({static_cast<int64_t>(order.size())}, torch::kInt64);
    for (size_t i = 0; i < order.size(); ++i) inverse[order[i]] = static_cast<int64_t>(i);
    x = xs.index_select(0, inverse);
    y = ys.index_select(0, inverse);
  }

  void read_range(int64_t start, int64_t count, torch::Tensor& x, torch::Tensor& y) const override {
    std::lock_guard<std::mutex> lock(hdf5_mutex);
    std::vector<hsize_t> offset(data_rank_, 0), extent(file_dims_.begin(), file_dims_.end());
    offset[0] = start;
    extent[0] = count;
    Handle space(H5Dget_space(data_), H5Sclose);
    H5Sselect_hyperslab(space.id, H5S_SELECT_SET, offset.data(), nullptr, extent.data(), nullptr);
    read_selected(space.id, count, x);
    Handle tspace(H5Dget_space(target_), H5Sclose);
    hsize_t toff = start, tcount = count;
    H5Sselect_hyperslab(tspace.id, H5S_SELECT_SET, &toff, nullptr, &tcount, nullptr);
    read_targets(tspace.id, count, y);
  }

 private:
  void open_datasets(const std::vector<int64_t>& shape) {
    group_id_ = H5Gopen2(file_, group_.c_str(), H5P_DEFAULT);
    if (group_id_ < 0) throw UserError(fmt::format("{}: no group '{}' (expected /{}/data and /{}/target)", path_, group_, group_, group_));
    data_ = H5Dopen2(group_id_, "data", H5P_DEFAULT);
    if (data_ < 0) throw UserError(fmt::format("{}: no dataset /{}/data", path_, group_));
    target_ = H5Dopen2(group_id_, "target", H5P_DEFAULT);
    if (target_ < 0) throw UserError(fmt::format("{}: no dataset /{}/target", path_, group_));
    kind_ = kind_of(data_);
    if (kind_ != Kind::Float32 && kind_ != Kind::UInt8)
      throw UserError(fmt::format("{}: /{}/data has dtype {}; expected float32 or uint8", path_, group_, type_name(data_)));
    if (kind_of(target_) != Kind::Integer && kind_of(target_) != Kind::UInt8)
      throw UserError(fmt::format("{}: /{}/target has dtype {}; expected integers", path_, group_, type_name(target_)));
    file_dims_ = dims_of(data_);
    data_rank_ = static_cast<int>(file_dims_.size());
    auto tdims = dims_of(target_);
    if (data_rank_ != 2 && data_rank_ != 4)
      throw UserError(fmt::format("{}: /{}/data has shape {}; expected [N,features] or [N,C,H,W]", path_, group_, shape_string(file_dims_)));
    if (tdims.size() != 1 || tdims[0] != file_dims_[0])
      throw UserError(fmt::format("{}: /{}/target has shape {}; expected [{}] to match data", path_, group_, shape_string(tdims), file_dims_[0]));
    n_ = file_dims_[0];
    std::vector<int64_t> file_shape(file_dims_.begin() + 1, file_dims_.end());
    int64_t features = std::accumulate(file_shape.begin(), file_shape.end(), int64_t(1), std::multiplies<int64_t>());
    if (shape.empty()) {
      shape_ = file_shape;
    } else {
      int64_t want = std::accumulate(shape.begin(), shape.end(), int64_t(1), std::multiplies<int64_t>());
      if (want != features || (data_rank_ == 4 && shape != file_shape))
        throw UserError(fmt::format("{}: /{}/data examples have shape {}, which does not fit data.shape = {}", path_, group_,
                                    shape_string(file_shape), shape_string(shape)));
      shape_ = shape;
    }
  }

  void read_rows(const std::vector<int64_t>& sorted, torch::Tensor& x, torch::Tensor& y) const {
    std::lock_guard<std::mutex> lock(hdf5_mutex);
    int64_t n = static_cast<int64_t>(sorted.size());
    Handle space(H5Dget_space(data_), H5Sclose), tspace(H5Dget_space(target_), H5Sclose);
    H5Sselect_none(space.id);
    H5Sselect_none(tspace.id);
    std::vector<hsize_t> offset(data_rank_, 0), extent(file_dims_.begin(), file_dims_.end());
    extent[0] = 1;
    hsize_t one = 1;
    for (int64_t row : sorted) {  // runs of consecutive rows become one hyperslab
      offset[0] = row;
      hsize_t toff = row;
      H5Sselect_hyperslab(space.id, H5S_SELECT_OR, offset.data(), nullptr, extent.data(), nullptr);
      H5Sselect_hyperslab(tspace.id, H5S_SELECT_OR, &toff, nullptr, &one, nullptr);
    }
    read_selected(space.id, n, x);
    read_targets(tspace.id, n, y);
  }

  void read_selected(hid_t file_space, int64_t n, torch::Tensor& x) const {
    std::vector<int64_t> out_shape{n};
    out_shape.insert(out_shape.end(), shape_.begin(), shape_.end());
    hsize_t total = static_cast<hsize_t>(H5Sget_select_npoints(file_space));
    Handle mem(H5Screate_simple(1, &total, nullptr), H5Sclose);
    herr_t status;
    if (kind_ == Kind::Float32) {
      x = torch::empty(out_shape, torch::kFloat32);
      status = H5Dread(data_, H5T_NATIVE_FLOAT, mem.id, file_space, H5P_DEFAULT, x.data_ptr());
    } else {
      auto bytes = torch::empty(out_shape, torch::kUInt8);
      status = H5Dread(data_, H5T_NATIVE_UINT8, mem.id, file_space, H5P_DEFAULT, bytes.data_ptr());
      x = bytes.to(torch::kFloat32).div_(255.0);
    }
    if (status < 0) throw UserError(fmt::format("{}: reading /{}/data failed (file damaged?)", path_, group_));
  }

  void read_targets(hid_t file_space, int64_t n, torch::Tensor& y) const {
    hsize_t count = n;
    Handle mem(H5Screate_simple(1, &count, nullptr), H5Sclose);
    y = torch::empty({n}, torch::kInt64);
    if (H5Dread(target_, H5T_NATIVE_INT64, mem.id, file_space, H5P_DEFAULT, y.data_ptr()) < 0)
      throw UserError(fmt::format("{}: reading /{}/target failed (file damaged?)", path_, group_));
  }

  void close_all() {
    if (data_ >= 0) H5Dclose(data_);
    if (target_ >= 0) H5Dclose(target_);
    if (group_id_ >= 0) H5Gclose(group_id_);
    if (file_ >= 0) H5Fclose(file_);
    data_ = target_ = group_id_ = file_ = -1;
  }

  std::string path_, group_, description_;
  hid_t file_ = -1, group_id_ = -1, data_ = -1, target_ = -1;
  Kind kind_ = Kind::Other;
  std::vector<int64_t> file_dims_, shape_;
  int data_rank_ = 0;
  int64_t n_ = 0;
};

}  // namespace

std::shared_ptr<Source> open_hdf5(const std::string& path, const std::string& group, const std::vector<int64_t>& shape, bool in_memory,
                                  const std::string& description) {
  auto streaming = std::make_shared<Hdf5Source>(path, group, shape, description);
  if (!in_memory) return streaming;
  torch::Tensor x, y;
  streaming->read_range(0, streaming->size(), x, y);
  return std::make_shared<MemorySource>(x, y, streaming->describe());
}

namespace {

// The HDF5 memory type of a tensor kept in its own dtype: float32, uint8 and int64.
hid_t hdf5_type_of(const torch::Tensor& t) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return H5T_NATIVE_FLOAT;
    case torch::kUInt8: return H5T_NATIVE_UINT8;
    case torch::kInt64: return H5T_NATIVE_INT64;
    default: throw std::logic_error(fmt::format("write_hdf5: no HDF5 type for {}", c10::toString(t.scalar_type())));
  }
}

}  // namespace

void write_hdf5(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& datasets) {
  // The file is built in memory (HDF5's core driver) and written by write_file_atomic: a full
  // disk then fails cleanly there, where HDF5 writing to disk itself would leave a file it
  // cannot close (and crash at exit).
  std::vector<char> image;
  {
    std::lock_guard<std::mutex> lock(hdf5_mutex);
    silence_hdf5();
    Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
    H5Pset_fapl_core(fapl.id, 1 << 20, 0);
    Handle file(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id), H5Fclose);
    Handle groups(H5Pcreate(H5P_LINK_CREATE), H5Pclose);  // "train/data" creates the group "train"
    H5Pset_create_intermediate_group(groups.id, 1);
    bool ok = file.id >= 0;
    for (const auto& [name, tensor] : datasets) {
      auto data = tensor.contiguous();
      std::vector<hsize_t> dims(data.sizes().begin(), data.sizes().end());
      Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
      Handle d(H5Dcreate2(file.id, name.c_str(), hdf5_type_of(data), space.id, groups.id, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
      ok = ok && d.id >= 0 && H5Dwrite(d.id, hdf5_type_of(data), H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data_ptr()) >= 0;
    }
    ok = ok && H5Fflush(file.id, H5F_SCOPE_GLOBAL) >= 0;
    ssize_t size = ok ? H5Fget_file_image(file.id, nullptr, 0) : -1;
    if (size > 0) image.resize(static_cast<size_t>(size));
    if (size <= 0 || H5Fget_file_image(file.id, image.data(), image.size()) != size)
      throw std::runtime_error(fmt::format("HDF5 could not build {} in memory", path));
  }
  write_file_atomic(path, image.data(), image.size());
}

void write_hdf5_tensor(const std::string& path, const std::string& name, const torch::Tensor& t) {
  write_hdf5(path, {{name, t.to(torch::kFloat32)}});
}

torch::Tensor read_hdf5_tensor(const std::string& path, const std::string& name) {
  std::lock_guard<std::mutex> lock(hdf5_mutex);
  silence_hdf5();
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file.id < 0) throw UserError(fmt::format("{}: not an HDF5 file or unreadable", path));
  Handle d(H5Dopen2(file.id, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (d.id < 0) throw UserError(fmt::format("{}: no dataset {}", path, name));
  auto t = torch::empty(dims_of(d.id), torch::kFloat32);
  if (H5Dread(d.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
    throw UserError(fmt::format("{}: reading {} failed", path, name));
  return t;
}

std::string describe_hdf5(const std::string& path) {
  std::string out;
  std::vector<std::string> groups;
  {
    std::lock_guard<std::mutex> lock(hdf5_mutex);
    silence_hdf5();
    if (!std::filesystem::is_regular_file(path)) throw UserError(fmt::format("{}: no such file", path));
    Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (file.id < 0) throw UserError(fmt::format("{}: not an HDF5 file or unreadable", path));
    Handle root(H5Gopen2(file.id, "/", H5P_DEFAULT), H5Gclose);
    hsize_t n = 0;
    H5Gget_num_objs(root.id, &n);
    for (hsize_t i = 0; i < n; ++i) {
      char name[256] = {0};
      H5Gget_objname_by_idx(root.id, i, name, sizeof(name) - 1);
      if (H5Gget_objtype_by_idx(root.id, i) != H5G_GROUP) continue;
      Handle g(H5Gopen2(root.id, name, H5P_DEFAULT), H5Gclose);
      if (H5Lexists(g.id, "data", H5P_DEFAULT) > 0 && H5Lexists(g.id, "target", H5P_DEFAULT) > 0) groups.push_back(name);
    }
  }
  if (groups.empty()) throw UserError(fmt::format("{}: no group with 'data' and 'target' datasets", path));
  for (const auto& g : groups) {
    Hdf5Source source(path, g, {}, "");
    std::string dtype;
    {
      std::lock_guard<std::mutex> lock(hdf5_mutex);
      Handle f(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
      Handle d(H5Dopen2(f.id, ("/" + g + "/data").c_str(), H5P_DEFAULT), H5Dclose);
      dtype = type_name(d.id);
    }
    if (source.size() == 0) {
      out += fmt::format("/{}: data {} [0, {}]: no examples\n", g, dtype, fmt::join(source.shape(), ", "));
      continue;
    }
    torch::Tensor x, y;
    source.read_range(0, source.size(), x, y);
    const std::vector<int64_t> counts = label_counts(y, fmt::format("{} /{}", path, g));
    const int64_t classes = static_cast<int64_t>(counts.size());
    out += fmt::format("/{}: data {} [{}, {}], target int [{}], labels {}..{}, value range [{:.4g}, {:.4g}], finite: {}\n", g, dtype,
                       source.size(), fmt::join(source.shape(), ", "), source.size(), y.min().item<int64_t>(), classes - 1,
                       x.min().item<float>(), x.max().item<float>(), torch::isfinite(x).all().item<bool>() ? "yes" : "NO");
    std::vector<std::string> parts;
    for (int64_t c = 0; c < classes; ++c) parts.push_back(fmt::format("{}:{}", c, counts[c]));
    out += fmt::format("  class counts {}\n", fmt::join(parts, " "));
  }
  return out;
}

}  // namespace shrink
