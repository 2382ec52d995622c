// Opening a dataset as configured: train / validation / test sources, checked before use.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "datasets/source.h"

namespace shrink {

struct DataConfig {
  std::string source = "hdf5";       // hdf5 | idx | cifar10 | folder | synthetic
  std::string path;                   // file (hdf5) or folder (idx, cifar10, folder)
  std::string train_split = "train";  // HDF5 group names; image folder subfolders
  std::string test_split = "test";
  double test_share = 0;              // image folder of one CLASS/* tree: each class's share held out for test
  std::string cache;                  // image folder: where decoded images are cached (empty: the user's cache)
  std::vector<int64_t> shape;         // per-example C,H,W; empty = as stored
  int64_t classes = 10;               // 0: as the data has (image folders)
  bool in_memory = true;
  int64_t train_subset = 0;           // use this many training examples, a seeded random choice (0: all)
  double val_split = 0;               // share of train held out for validation
  std::string normalize = "none";     // none | fixed (mean/std given) | dataset (computed on train)
  std::vector<double> mean, std;
  int64_t shift = 0;                  // random shift of up to this many pixels (pad + crop)
  bool hflip = false;
  int64_t synthetic_train = 4000, synthetic_test = 1000;
  uint64_t seed = 0;                  // synthetic data and the validation split
};

struct Data {
  std::shared_ptr<Source> train, val, test;
  std::vector<int64_t> shape;
  int64_t classes = 0;
  std::vector<float> mean, std;  // per channel; empty = no normalization
  std::vector<std::string> class_names;  // image folders: the folder names; else empty
  bool images = false;  // examples are 8-bit images scaled to [0,1] (IDX, CIFAR-10, image folders)
};

// Opens the configured dataset and checks every example (finite values, labels in range).
Data open_data(const DataConfig& config);
// What `shrink data info PATH` prints: format, shapes, dtypes, class counts.
std::string describe_data(const std::string& path);

}  // namespace shrink
