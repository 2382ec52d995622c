// Readers for each data format. Each returns a Source with data as float32 [N,C,H,W]
// (uint8 data scaled to [0,1]) and int64 labels; problems are UserErrors naming the file.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "datasets/source.h"

namespace shrink {

// HDF5: `group` holds `data` (float32 or uint8, [N,F] or [N,C,H,W]) and `target` (integers, [N]).
// `shape` (C,H,W) reshapes [N,F] data; empty keeps the file's shape ([N,F] becomes F features).
// With in_memory=false examples are read from the file batch by batch (hyperslabs). `description`
// names the source in messages (empty: "PATH:/GROUP").
std::shared_ptr<Source> open_hdf5(const std::string& path, const std::string& group, const std::vector<int64_t>& shape, bool in_memory,
                                  const std::string& description = "");
// A description of every group with data/target in the file (for `shrink data info`).
std::string describe_hdf5(const std::string& path);

// Tensors (float32, uint8 or int64, kept in their dtype) as the datasets of a new HDF5 file, named
// by their paths ("train/data" makes the group "train"); written to a temporary name, then renamed.
void write_hdf5(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& datasets);
// One float32 tensor as dataset `name` of a new HDF5 file, and read back. Used for caches.
void write_hdf5_tensor(const std::string& path, const std::string& name, const torch::Tensor& t);
torch::Tensor read_hdf5_tensor(const std::string& path, const std::string& name);

// IDX (MNIST family), gzip'd or raw: images [N,H,W] or [N,H,W,C]... as [N,1,H,W]; labels [N].
// `eight_bit`, if given, says whether the images were uint8 (scaled to [0,1]: images as shrink-run
// reads PNG and JPEG files) rather than values of another type, taken as they are.
std::shared_ptr<MemorySource> read_idx(const std::string& images_path, const std::string& labels_path, bool* eight_bit = nullptr);
// One IDX file as a tensor of its own dtype (exposed for tests and `data info`).
torch::Tensor read_idx_tensor(const std::string& path);

// CIFAR-10 binary batches: records of 1 label byte + 3072 pixel bytes (3x32x32).
std::shared_ptr<MemorySource> read_cifar10(const std::vector<std::string>& files);

// Image folders (PNG, JPEG): ROOT/TRAIN/CLASS/* and ROOT/TEST/CLASS/*, or one ROOT/CLASS/* tree of
// which each class's test_share goes to test (seeded). Classes are the folder names, sorted.
// Images become `shape` (C = 1: grayscale, 3: RGB; Pillow's convert and bilinear resize); with
// no shape, the first image's, and every other must match it. Decoded once into a cache file.
struct FolderOptions {
  std::string root, train_split = "train", test_split = "test";
  double test_share = 0;
  uint64_t seed = 0;
  std::vector<int64_t> shape;
  std::string cache_dir;  // empty: $XDG_CACHE_HOME/shrink or ~/.cache/shrink
  bool in_memory = true;
};
struct FolderData {
  std::shared_ptr<Source> train, test;
  std::vector<std::string> class_names;
};
FolderData open_image_folder(const FolderOptions& options);
// Class counts and image sizes per split (for `shrink data info ROOT`).
std::string describe_image_folder(const std::string& root, const std::string& train_split, const std::string& test_split);

// The built-in synthetic image dataset: class prototypes made of random blobs, shown shifted,
// rescaled, mixed with another class and noisy. The same seed gives the same examples.
struct SyntheticOptions {
  std::vector<int64_t> shape{1, 16, 16};
  int64_t classes = 10;
  int64_t train = 4000, test = 1000;
  uint64_t seed = 0;
};
std::shared_ptr<MemorySource> make_synthetic(const SyntheticOptions& options, bool test_split);

}  // namespace shrink
