// Image folders: ROOT/TRAIN/CLASS/* and ROOT/TEST/CLASS/*, or one ROOT/CLASS/* tree split per class.
// Every image is decoded once (common/image.h: Pillow's conversions and bilinear resize) into a
// cache file, an HDF5 file of uint8 [N,C,H,W] per split, named by a hash of what it was made from
// (the file list with sizes and modification times, the labels, the shape); a later run with the
// same files reads the cache, and streams from it when data.in_memory = false.
#include <fmt/format.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <map>
#include <unistd.h>
#include <thread>

#include "common/error.h"
#include "common/image.h"
#include "datasets/formats.h"

namespace shrink {
namespace fs = std::filesystem;
namespace {

// Bumped when decoding or resizing changes, so older caches are not reused.
constexpr const char* kCacheVersion = "shrink image cache 1";

bool hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// The class folders under `dir`, sorted.
std::vector<fs::path> sorted_folders(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (!hidden(e.path()) && e.is_directory()) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// A class folder's images, its subfolders' too (following links), in torchvision ImageFolder's
// order (sorted(os.walk(...)): by folder path as a string, then by name). Unlike ImageFolder it
// skips hidden files and folders and reads only .png, .jpg and .jpeg (docs/config.md). A link to
// nothing with an image's name is an error naming it.
std::vector<fs::path> images_in(const fs::path& dir) {
  constexpr int kDeepest = 32;  // deeper is a link loop, which os.walk would follow forever
  std::vector<fs::path> out;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink); it != fs::end(it); ++it) {
    const fs::path& p = it->path();
    if (hidden(p)) {
      it.disable_recursion_pending();
      continue;
    }
    if (it.depth() >= kDeepest) throw UserError(fmt::format("{}: folders nested over {} deep (a link loop?)", p.string(), kDeepest));
    if (!has_image_extension(p)) continue;
    if (it->is_symlink() && !fs::exists(p)) throw UserError(fmt::format("{}: a link to a file that does not exist", p.string()));
    if (it->is_regular_file()) out.push_back(p);
  }
  std::sort(out.begin(), out.end(), [](const fs::path& a, const fs::path& b) {
    const std::string da = a.parent_path().string(), db = b.parent_path().string();
    return da != db ? da < db : a.filename().string() < b.filename().string();
  });
  return out;
}

struct Example {
  fs::path file;
  int64_t label;
};

struct Listing {
  std::vector<std::string> classes;
  std::vector<Example> train, test;
  std::string layout;  // which folders the splits came from, in words
};

// CLASS/* under `dir`, labelled by position in `classes` (a class folder `classes` lacks is an error).
std::vector<Example> list_split(const fs::path& dir, const std::vector<std::string>& classes) {
  std::vector<Example> out;
  for (const auto& folder : sorted_folders(dir)) {
    auto it = std::find(classes.begin(), classes.end(), folder.filename().string());
    if (it == classes.end())
      throw UserError(fmt::format("{}: a class the training images do not have", folder.string()));
    auto files = images_in(folder);
    if (files.empty()) throw UserError(fmt::format("{}: an empty class folder (no .png, .jpg or .jpeg files)", folder.string()));
    for (auto& f : files) out.push_back({f, it - classes.begin()});
  }
  return out;
}

std::vector<std::string> class_names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& folder : sorted_folders(dir)) out.push_back(folder.filename().string());
  if (out.size() < 2) throw UserError(fmt::format("{}: needs at least two class folders, found {}", dir.string(), out.size()));
  return out;
}

// A file's place in its class's test order: a hash of its path within the class folder (its
// name, for a file directly in it; salted by data.seed), so the split does not depend on where
// the folder lies, and adding an image moves at most one other across it.
uint64_t split_rank(const Example& e, const fs::path& class_folder, uint64_t seed) {
  const std::string name = e.file.lexically_relative(class_folder).string();
  return XXH3_64bits_withSeed(name.data(), name.size(), seed);
}

Listing list_folder(const FolderOptions& o) {
  Listing l;
  fs::path root(o.root), train = root / o.train_split, test = root / o.test_split;
  if (fs::is_directory(train) && fs::is_directory(test)) {
    if (o.test_share > 0)
      throw UserError(fmt::format("data.test_share = {}: {} has {}/ and {}/ folders already (leave data.test_share at 0)", o.test_share, o.root,
                                  o.train_split, o.test_split));
    l.classes = class_names_in(train);
    l.train = list_split(train, l.classes);
    l.test = list_split(test, l.classes);
    l.layout = fmt::format("{} and {}", train.string(), test.string());
    return l;
  }
  if (!(o.test_share > 0))
    throw UserError(fmt::format("data.path = {}: has no {}/ and {}/ folders (data.train_split, data.test_split); for one CLASS/* tree set "
                                "data.test_share (e.g. 0.2)", o.root, o.train_split, o.test_split));
  // One tree: of each class, the test_share (at least one image) first in split_rank order goes to test.
  l.classes = class_names_in(root);
  const std::vector<Example> all = list_split(root, l.classes);
  for (int64_t c = 0; c < static_cast<int64_t>(l.classes.size()); ++c) {
    std::vector<size_t> members;  // places in `all`, in listing order
    for (size_t k = 0; k < all.size(); ++k)
      if (all[k].label == c) members.push_back(k);
    auto n_test = std::max<size_t>(1, static_cast<size_t>(o.test_share * members.size()));
    if (n_test >= members.size())
      throw UserError(fmt::format("{}: {} images, too few to hold out data.test_share = {} for test", (root / l.classes[c]).string(),
                                  members.size(), o.test_share));
    const fs::path folder = root / l.classes[c];
    std::vector<size_t> order = members;
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return split_rank(all[a], folder, o.seed) < split_rank(all[b], folder, o.seed); });
    std::vector<size_t> held(order.begin(), order.begin() + n_test), kept(order.begin() + n_test, order.end());
    for (auto* part : {&held, &kept}) std::sort(part->begin(), part->end());  // back in listing order
    for (size_t k : held) l.test.push_back(all[k]);
    for (size_t k : kept) l.train.push_back(all[k]);
  }
  l.layout = fmt::format("{} ({:.0f}% of each class held out for test, seed {})", o.root, 100 * o.test_share, o.seed);
  return l;
}

// The shape every image becomes: data.shape, or the first training image's own.
std::vector<int64_t> target_shape(const FolderOptions& o, const Listing& l) {
  if (!o.shape.empty()) {
    if (o.shape.size() != 3 || (o.shape[0] != 1 && o.shape[0] != 3))
      throw UserError(fmt::format("data.shape = {}: image folders need C,H,W with C = 1 (grayscale) or 3 (RGB)", shape_string(o.shape)));
    return o.shape;
  }
  image::Image first = image::decode(l.train.front().file.string());
  return {first.channels, first.height, first.width};  // decode_all names this file in a mismatch
}

uint64_t cache_key(const FolderOptions& o, const Listing& l) {
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  auto add = [&](const std::string& s) { XXH3_64bits_update(state, s.data(), s.size() + 1); };
  add(kCacheVersion);
  add(shape_string(o.shape));
  add(fs::weakly_canonical(o.root).string());  // photos, ./photos and photos/ share a cache
  for (const auto* split : {&l.train, &l.test}) {
    add("split");
    for (const auto& e : *split) {
      std::error_code ec;  // a file gone or unreadable fails its decoding next, with its name
      auto time = fs::last_write_time(e.file, ec).time_since_epoch().count();
      add(fmt::format("{}\t{}\t{}\t{}", e.file.lexically_relative(o.root).string(), e.label, fs::file_size(e.file, ec), time));
    }
  }
  uint64_t key = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return key;
}

// Decodes `examples` into uint8 [N,C,H,W] on all cores. Without data.shape every image must have
// the size and channels of `first` (resizing or converting silently would hide a mixed folder).
// The first bad file in listing order is reported, and no more are decoded after one is found.
torch::Tensor decode_all(const std::vector<Example>& examples, const std::vector<int64_t>& shape, bool shape_given, const fs::path& first) {
  const int64_t n = static_cast<int64_t>(examples.size()), C = shape[0], H = shape[1], W = shape[2];
  auto out = torch::empty({n, C, H, W}, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  std::atomic<int64_t> next{0};
  std::vector<std::exception_ptr> errors(n);
  auto work = [&] {
    for (int64_t i; (i = next++) < n;) {
      try {
        const std::string file = examples[i].file.string();
        image::Image im = image::decode(file);
        if (!shape_given && (im.channels != C || im.height != H || im.width != W))
          throw UserError(fmt::format("{}: {} but {} is {}; set data.shape = C,H,W to convert and resize every image", file,
                                      shape_string({im.channels, im.height, im.width}), first.string(), shape_string(shape)));
        image::to_planar(image::resize(image::to_channels(im, C), W, H), dst + i * C * H * W);
      } catch (...) {
        errors[i] = std::current_exception();
        next = n;  // the others stop after the image they are on
      }
    }
  };
  std::vector<std::thread> threads(std::max(1u, std::thread::hardware_concurrency()) - 1);
  for (auto& t : threads) t = std::thread(work);
  work();
  for (auto& t : threads) t.join();
  for (const auto& e : errors)  // the first bad file in listing order, whichever thread met it
    if (e) std::rethrow_exception(e);
  return out;
}

torch::Tensor labels_of(const std::vector<Example>& examples) {
  auto y = torch::empty({static_cast<int64_t>(examples.size())}, torch::kInt64);
  for (size_t i = 0; i < examples.size(); ++i) y[i] = examples[i].label;
  return y;
}

std::string default_cache_dir() {
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) return fmt::format("{}/shrink", xdg);
  if (const char* home = std::getenv("HOME"); home && *home) return fmt::format("{}/.cache/shrink", home);
  return (fs::temp_directory_path() / "shrink-cache").string();
}

// A folder or file that cannot be listed or read (permissions, a loop of links) is the user's to fix.
template <class Fn>
auto naming_filesystem_errors(Fn fn) {
  try {
    return fn();
  } catch (const fs::filesystem_error& e) {
    throw UserError(fmt::format("{}: {}", e.path1().string(), e.code().message()));
  }
}

// Decodes the listing's images into the cache file. Written under a name of this process, then
// renamed: two runs decoding the same folder at once each write their own file, and either one
// ends as the cache.
void write_cache(const FolderOptions& o, const Listing& l, const std::vector<int64_t>& shape, const fs::path& cache) {
  std::error_code ec;
  fs::create_directories(cache.parent_path(), ec);
  if (ec) throw UserError(fmt::format("data.cache = {}: cannot create the folder ({})", cache.parent_path().string(), ec.message()));
  const bool given = !o.shape.empty();
  const fs::path first = l.train.front().file;
  const std::string part = fmt::format("{}.part-{}", cache.string(), getpid());
  write_hdf5(part, {{"train/data", decode_all(l.train, shape, given, first)},
                    {"train/target", labels_of(l.train)},
                    {"test/data", decode_all(l.test, shape, given, first)},
                    {"test/target", labels_of(l.test)}});
  fs::rename(part, cache);
}

FolderData open_folder(const FolderOptions& o) {
  if (!fs::is_directory(o.root)) throw UserError(fmt::format("data.path = {}: not a folder", o.root));
  Listing l = list_folder(o);
  const std::vector<int64_t> shape = target_shape(o, l);
  fs::path dir = o.cache_dir.empty() ? default_cache_dir() : o.cache_dir;
  fs::path cache = dir / fmt::format("images-{:016x}.h5", cache_key(o, l));
  const bool cached = fs::exists(cache);
  if (!cached) write_cache(o, l, shape, cache);
  FolderData d;
  d.class_names = l.classes;
  auto described = [&](const char* split) { return fmt::format("image folder {}: {} split (decoded into {})", l.layout, split, cache.string()); };
  auto open = [&] {
    d.train = open_hdf5(cache.string(), "train", {}, o.in_memory, described("train"));
    d.test = open_hdf5(cache.string(), "test", {}, o.in_memory, described("test"));
  };
  try {
    open();
  } catch (const UserError&) {  // an earlier run's cache that no longer reads (a disk error, a copy cut short): made again
    if (!cached) throw;
    fs::remove(cache);
    write_cache(o, l, shape, cache);
    open();
  }
  return d;
}

std::string describe_folder(const std::string& root, const std::string& train_split, const std::string& test_split) {
  fs::path train = fs::path(root) / train_split, test = fs::path(root) / test_split;
  std::vector<std::pair<fs::path, std::string>> splits = {{root, "all"}};  // a one-tree folder
  if (fs::is_directory(train) && fs::is_directory(test)) splits = {{train, train_split}, {test, test_split}};
  const auto classes = class_names_in(splits.front().first);
  std::string out = fmt::format("{} (image folder, {} classes)\n", root, classes.size());
  for (const auto& [dir, name] : splits) {
    const auto examples = list_split(dir, classes);
    std::vector<int64_t> counts(classes.size(), 0);
    std::map<std::string, int64_t> sizes;  // "C,H,W" -> images
    for (const auto& e : examples) {
      ++counts[e.label];
      image::Image im = image::decode(e.file.string());
      ++sizes[shape_string({im.channels, im.height, im.width})];
    }
    out += fmt::format("  {}: {} images; per class:\n", name, examples.size());
    for (size_t c = 0; c < classes.size(); ++c) out += fmt::format("    {:>8}  {}\n", counts[c], classes[c]);
    out += "    image sizes (C,H,W):";
    for (const auto& [size, n] : sizes) out += fmt::format(" {} x{}", size, n);
    out += "\n";
  }
  return out;
}

}  // namespace

FolderData open_image_folder(const FolderOptions& o) { return naming_filesystem_errors([&] { return open_folder(o); }); }

std::string describe_image_folder(const std::string& root, const std::string& train_split, const std::string& test_split) {
  return naming_filesystem_errors([&] { return describe_folder(root, train_split, test_split); });
}

}  // namespace shrink
