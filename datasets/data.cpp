#include "datasets/data.h"

#include <fmt/format.h>

#include <filesystem>

#include "common/error.h"
#include "datasets/formats.h"

namespace shrink {
namespace fs = std::filesystem;
namespace {

std::string find_file(const std::string& dir, const std::vector<std::string>& names) {
  for (const auto& n : names) {
    fs::path p = fs::path(dir) / n;
    if (fs::is_regular_file(p)) return p.string();
  }
  throw UserError(fmt::format("data.path = {}: none of {} found", dir, fmt::join(names, ", ")));
}

struct Splits {
  std::shared_ptr<Source> train, test;
  std::vector<std::string> class_names;
  bool images = false;
};

Splits open_splits(const DataConfig& c) {
  if (c.source == "synthetic") {
    SyntheticOptions o;
    if (!c.shape.empty()) o.shape = c.shape;
    if (o.shape.size() != 3) throw UserError("data.shape must be C,H,W for synthetic data");
    o.classes = c.classes;
    o.train = c.synthetic_train;
    o.test = c.synthetic_test;
    o.seed = c.seed;
    return {make_synthetic(o, false), make_synthetic(o, true), {}, false};
  }
  if (c.path.empty()) throw UserError(fmt::format("data.path is empty (needed for data.source = {})", c.source));
  if (!fs::exists(c.path)) throw UserError(fmt::format("data.path = {}: no such file or folder", c.path));
  if (c.source == "hdf5") return {open_hdf5(c.path, c.train_split, c.shape, c.in_memory), open_hdf5(c.path, c.test_split, c.shape, c.in_memory), {}, false};
  if (c.source == "idx") {
    bool train_images = false, test_images = false;
    auto train = read_idx(find_file(c.path, {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz", "train-images.idx3-ubyte"}),
                          find_file(c.path, {"train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz", "train-labels.idx1-ubyte"}), &train_images);
    auto test = read_idx(find_file(c.path, {"t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz", "t10k-images.idx3-ubyte"}),
                         find_file(c.path, {"t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz", "t10k-labels.idx1-ubyte"}), &test_images);
    return {train, test, {}, train_images && test_images};
  }
  if (c.source == "cifar10") {
    std::vector<std::string> train_files;
    for (int i = 1; i <= 5; ++i) {
      fs::path p = fs::path(c.path) / fmt::format("data_batch_{}.bin", i);
      if (fs::is_regular_file(p)) train_files.push_back(p.string());
    }
    if (train_files.empty()) throw UserError(fmt::format("data.path = {}: no data_batch_N.bin files", c.path));
    return {read_cifar10(train_files), read_cifar10({find_file(c.path, {"test_batch.bin"})}), {}, true};
  }
  if (c.source == "folder") {
    FolderOptions o;
    o.root = c.path, o.train_split = c.train_split, o.test_split = c.test_split, o.test_share = c.test_share;
    o.seed = c.seed, o.shape = c.shape, o.cache_dir = c.cache, o.in_memory = c.in_memory;
    FolderData f = open_image_folder(o);
    return {f.train, f.test, f.class_names, true};
  }
  throw UserError(fmt::format("data.source = {}: unknown (expected hdf5, idx, cifar10, folder or synthetic)", c.source));
}

// Reads the whole source in chunks once: checks values and labels, and sums per-channel moments.
void check_and_measure(const Source& s, int64_t classes, std::vector<double>* sum, std::vector<double>* sq, int64_t* count) {
  const int64_t chunk = 4096;
  for (int64_t start = 0; start < s.size(); start += chunk) {
    torch::Tensor x, y;
    int64_t n = std::min(chunk, s.size() - start);
    s.read_range(start, n, x, y);
    validate_examples(x, y, classes, s.describe(), start);
    if (!sum) continue;
    auto per_channel = x.dim() >= 3 ? x.transpose(0, 1).reshape({x.size(1), -1}).to(torch::kFloat64) : x.reshape({1, -1}).to(torch::kFloat64);
    auto s1 = per_channel.sum(1), s2 = per_channel.pow(2).sum(1);
    sum->resize(s1.size(0), 0.0);
    sq->resize(s1.size(0), 0.0);
    for (int64_t c = 0; c < s1.size(0); ++c) {
      (*sum)[c] += s1[c].item<double>();
      (*sq)[c] += s2[c].item<double>();
    }
    *count += per_channel.size(1);
  }
}

// `n` of the source's examples, chosen by a seeded permutation and kept in their order.
std::shared_ptr<Source> random_subset(const std::shared_ptr<Source>& source, int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed + 4242);
  auto chosen = std::get<0>(torch::randperm(source->size(), gen, torch::kInt64).narrow(0, 0, n).sort());
  std::vector<int64_t> indices(chosen.data_ptr<int64_t>(), chosen.data_ptr<int64_t>() + n);
  return std::make_shared<SubsetSource>(source, indices, fmt::format("{} ({} of its {} examples)", source->describe(), n, source->size()));
}

// IDX (train-images-idx3-ubyte, t10k-labels.idx1-ubyte.gz, ...) and CIFAR-10 (data_batch_1.bin) files by name.
bool idx_or_cifar_name(const std::string& name) { return name.find("-ubyte") != std::string::npos || fs::path(name).extension() == ".bin"; }

// Subfolders and no IDX or CIFAR-10 files: CLASS/* or train/CLASS/* trees.
bool looks_like_image_folder(const std::string& path) {
  bool folders = false;
  std::error_code ec;  // an unreadable folder: describe_data's own listing names it
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    std::string name = entry.path().filename().string();
    if (idx_or_cifar_name(name)) return false;
    folders = folders || (entry.is_directory() && name.rfind('.', 0) != 0);
  }
  return folders;
}

}  // namespace

Data open_data(const DataConfig& c) {
  if (c.classes < 2 && !(c.classes == 0 && c.source == "folder")) throw UserError(fmt::format("data.classes = {}: need at least 2", c.classes));
  auto [train, test, class_names, images] = open_splits(c);
  const int64_t classes = class_names.empty() ? c.classes : static_cast<int64_t>(class_names.size());
  if (c.classes != 0 && classes != c.classes)
    throw UserError(fmt::format("data.classes = {}, but {} has {} class folders", c.classes, c.path, classes));
  if (c.train_subset > 0 && c.train_subset < train->size()) train = random_subset(train, c.train_subset, c.seed);
  if (train->shape() != test->shape())
    throw UserError(fmt::format("train examples are {} but test examples are {}", shape_string(train->shape()), shape_string(test->shape())));
  Data d;
  d.shape = train->shape();
  d.classes = classes;
  d.class_names = class_names;
  d.images = images;
  d.test = test;
  bool compute = c.normalize == "dataset";
  std::vector<double> sum, sq;
  int64_t count = 0;
  for (const auto* split : {&train, &test})
    if ((*split)->size() == 0) throw UserError(fmt::format("{}: no {} examples", (*split)->describe(), split == &train ? "training" : "test"));
  check_and_measure(*train, classes, compute ? &sum : nullptr, compute ? &sq : nullptr, &count);
  check_and_measure(*test, classes, nullptr, nullptr, &count);
  if (compute) {
    for (size_t ch = 0; ch < sum.size(); ++ch) {
      double mean = sum[ch] / count, var = sq[ch] / count - mean * mean;
      d.mean.push_back(static_cast<float>(mean));
      d.std.push_back(static_cast<float>(std::sqrt(std::max(var, 1e-12))));
    }
  } else if (c.normalize == "fixed") {
    int64_t channels = d.shape.size() == 3 ? d.shape[0] : 1;
    if (static_cast<int64_t>(c.mean.size()) != channels || static_cast<int64_t>(c.std.size()) != channels)
      throw UserError(fmt::format("data.mean and data.std need {} values (one per channel)", channels));
    for (int64_t ch = 0; ch < channels; ++ch) {
      if (!(c.std[ch] > 0)) throw UserError("data.std values must be positive");
      d.mean.push_back(static_cast<float>(c.mean[ch]));
      d.std.push_back(static_cast<float>(c.std[ch]));
    }
  } else if (c.normalize != "none") {
    throw UserError(fmt::format("data.normalize = {}: unknown (expected none, fixed or dataset)", c.normalize));
  }
  if (c.val_split < 0 || c.val_split >= 1) throw UserError(fmt::format("data.val_split = {}: must be in [0, 1)", c.val_split));
  if (c.val_split > 0) {
    // A seeded permutation decides which examples are held out; the same seed, the same split.
    auto gen = at::make_generator<at::CPUGeneratorImpl>(c.seed + 12345);
    auto perm = torch::randperm(train->size(), gen, torch::kInt64);
    int64_t n_val = std::max<int64_t>(1, static_cast<int64_t>(c.val_split * train->size()));
    std::vector<int64_t> all(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + train->size());
    std::vector<int64_t> val_idx(all.end() - n_val, all.end()), train_idx(all.begin(), all.end() - n_val);
    std::sort(val_idx.begin(), val_idx.end());
    std::sort(train_idx.begin(), train_idx.end());
    d.val = std::make_shared<SubsetSource>(train, val_idx, train->describe() + " (validation part)");
    d.train = std::make_shared<SubsetSource>(train, train_idx, train->describe() + " (training part)");
  } else {
    d.train = train;
  }
  return d;
}

std::string describe_data(const std::string& path) {
  if (!fs::exists(path)) throw UserError(fmt::format("{}: no such file or folder", path));
  if (fs::is_directory(path)) {
    if (looks_like_image_folder(path)) return describe_image_folder(path, "train", "test");
    std::string out;
    for (const auto& entry : fs::directory_iterator(path)) {
      std::string name = entry.path().filename().string();
      if (idx_or_cifar_name(name)) out += describe_data(entry.path().string());
    }
    if (out.empty()) throw UserError(fmt::format("{}: no IDX or CIFAR-10 files in this folder", path));
    return out;
  }
  std::string ext = fs::path(path).extension().string();
  if (ext == ".h5" || ext == ".hdf5" || ext == ".he5") return fmt::format("{} (HDF5)\n{}", path, describe_hdf5(path));
  if (ext == ".bin") {
    auto s = read_cifar10({path});
    auto counts = class_counts(*s, 10);
    return fmt::format("{} (CIFAR-10 binary): {} examples of 3x32x32 uint8, class counts {}\n", path, s->size(), fmt::join(counts, " "));
  }
  auto t = read_idx_tensor(path);
  std::string out = fmt::format("{} (IDX): {} {}", path, shape_string(t.sizes().vec()), c10::toString(t.scalar_type()));
  if (t.dim() == 1 && !t.is_floating_point()) out += fmt::format(", class counts {}", fmt::join(label_counts(t, path), " "));
  return out + "\n";
}

}  // namespace shrink
