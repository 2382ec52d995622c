// shrink-run: runs a .shrink model with the runtime alone (no LibTorch); its options are in
// shrink::shrink_run_command_line() below (shrink-run --help).
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "apps/shrink_run_cli.h"
#include "common/error.h"
#include "common/image.h"
#include "common/peak_memory.h"
#include "common/shape.h"
#include "shrink/runtime.hpp"

namespace {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError(path + ": no such file");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

uint32_t be32(const std::string& b, size_t at) {
  return (uint32_t(uint8_t(b[at])) << 24) | (uint32_t(uint8_t(b[at + 1])) << 16) | (uint32_t(uint8_t(b[at + 2])) << 8) | uint8_t(b[at + 3]);
}

bool is_idx(const std::string& b) { return b.size() >= 4 && b[0] == 0 && b[1] == 0 && b[3] >= 1 && b[3] <= 4; }

// An IDX file: its dimensions and its values as doubles (uint8 scaled to [0,1], as training reads it).
struct Idx {
  std::vector<int64_t> dims;
  std::vector<double> values;
};

Idx read_idx(const std::string& path, const std::string& b) {
  const int rank = b[3];
  uint8_t type = uint8_t(b[2]);
  size_t elem = type == 0x08 || type == 0x09 ? 1 : type == 0x0B ? 2 : type == 0x0C || type == 0x0D ? 4 : type == 0x0E ? 8 : 0;
  if (!elem) throw UsageError(path + ": unknown IDX type");
  if (b.size() < 4 + 4 * size_t(rank)) throw UsageError(path + ": truncated IDX header");
  Idx idx;
  uint64_t n = 1;
  for (int d = 0; d < rank; ++d) {
    idx.dims.push_back(be32(b, 4 + 4 * d));
    if (__builtin_mul_overflow(n, uint64_t(idx.dims.back()), &n) || n > b.size()) throw UsageError(path + ": truncated or padded IDX data");
  }
  size_t at = 4 + 4 * rank;
  if (b.size() != at + n * elem) throw UsageError(path + ": truncated or padded IDX data");
  std::vector<double>& out = idx.values;
  out.resize(n);
  for (uint64_t k = 0; k < n; ++k) {
    const char* p = b.data() + at + k * elem;
    uint64_t raw = 0;
    for (size_t j = 0; j < elem; ++j) raw = (raw << 8) | uint8_t(p[j]);
    switch (type) {
      case 0x08: out[k] = uint8_t(raw) / 255.0; break;
      case 0x09: out[k] = int8_t(raw); break;
      case 0x0B: out[k] = int16_t(raw); break;
      case 0x0C: out[k] = int32_t(raw); break;
      case 0x0D: { uint32_t r = uint32_t(raw); float f; std::memcpy(&f, &r, 4); out[k] = f; break; }
      default: { double d; std::memcpy(&d, &raw, 8); out[k] = d; }
    }
  }
  return idx;
}

std::vector<int64_t> without_leading_ones(std::vector<int64_t> shape) {
  while (shape.size() > 1 && shape[0] == 1) shape.erase(shape.begin());
  return shape;
}

// IDX examples in the model's C,H,W order, read as training reads IDX files: N,F as 1,1,F; N,H,W
// as 1,H,W; N,H,W,C as C,H,W (transposed). Their shape must be the model's input shape.
std::vector<float> idx_examples(const std::string& path, const Idx& idx, const std::vector<int64_t>& input) {
  const std::vector<int64_t> d(idx.dims.begin() + 1, idx.dims.end());
  const std::vector<int64_t> item = d.size() == 1 ? std::vector<int64_t>{1, 1, d[0]} : d.size() == 2 ? std::vector<int64_t>{1, d[0], d[1]}
                                    : d.size() == 3 ? std::vector<int64_t>{d[2], d[0], d[1]} : std::vector<int64_t>{};
  if (item.empty() || without_leading_ones(item) != without_leading_ones(input))
    throw UsageError(path + ": IDX examples of shape " + shrink::shape_string(item) + " (as C,H,W), but the model's input is " + shrink::shape_string(input));
  std::vector<float> x(idx.values.size());
  if (item[0] == 1) {
    std::copy(idx.values.begin(), idx.values.end(), x.begin());
    return x;
  }
  const int64_t C = item[0], HW = item[1] * item[2], per = C * HW;
  for (int64_t i = 0; i < idx.dims[0]; ++i)
    for (int64_t p = 0; p < HW; ++p)
      for (int64_t c = 0; c < C; ++c) x[i * per + c * HW + p] = static_cast<float>(idx.values[i * per + p * C + c]);
  return x;
}

bool is_npy(const std::string& b) { return b.size() >= 10 && b.compare(0, 6, "\x93NUMPY") == 0; }

// The value of `key` in a .npy header (a Python dict literal): up to the next comma outside
// parentheses, or the closing brace.
std::string npy_field(const std::string& path, const std::string& header, const std::string& key) {
  size_t at = header.find("'" + key + "':");
  if (at == std::string::npos) throw UsageError(path + ": NumPy header without '" + key + "'");
  at += key.size() + 3;
  size_t end = at;
  for (int depth = 0; end < header.size() && (depth > 0 || (header[end] != ',' && header[end] != '}')); ++end)
    depth += header[end] == '(' ? 1 : header[end] == ')' ? -1 : 0;
  std::string v = header.substr(at, end - at);
  v.erase(0, v.find_first_not_of(" "));
  v.erase(v.find_last_not_of(" ") + 1);
  return v;
}

// A NumPy .npy array (np.save) of float32, float64 or uint8 (scaled to [0,1], as IDX's), in C
// order, shaped N followed by the model's input shape (torch's N,C,H,W), or the input shape alone
// (one example). The shape is checked, so another image size is refused, not re-cut.
std::vector<float> npy_examples(const std::string& path, const std::string& b, const std::vector<int64_t>& input) {
  const int major = uint8_t(b[6]);
  if (major < 1 || major > 3 || (major > 1 && b.size() < 12)) throw UsageError(path + ": unknown NumPy format version " + std::to_string(major));
  const size_t header_len = major == 1 ? uint8_t(b[8]) | uint8_t(b[9]) << 8 : uint32_t(uint8_t(b[8])) | uint32_t(uint8_t(b[9])) << 8 | uint32_t(uint8_t(b[10])) << 16 | uint32_t(uint8_t(b[11])) << 24;
  const size_t start = major == 1 ? 10 : 12;
  if (b.size() < start + header_len) throw UsageError(path + ": truncated NumPy header");
  const std::string header = b.substr(start, header_len);
  const std::string descr = npy_field(path, header, "descr"), shape_text = npy_field(path, header, "shape");
  if (npy_field(path, header, "fortran_order") != "False") throw UsageError(path + ": a Fortran-order NumPy array; save it in C order (np.ascontiguousarray)");
  const size_t elem = descr == "'<f4'" ? 4 : descr == "'<f8'" ? 8 : descr == "'|u1'" ? 1 : 0;
  if (!elem) throw UsageError(path + ": NumPy dtype " + descr + "; shrink-run reads float32, float64 or uint8 arrays");
  std::vector<int64_t> dims;
  uint64_t n = 1;
  for (size_t at = shape_text.find_first_of("0123456789"); at != std::string::npos; at = shape_text.find_first_of("0123456789", at)) {
    size_t used = 0;
    try {
      dims.push_back(std::stoll(shape_text.substr(at), &used));
    } catch (const std::out_of_range&) {
      throw UsageError(path + ": a NumPy shape entry out of range");
    }
    at += used;
    if (__builtin_mul_overflow(n, uint64_t(dims.back()), &n) || n > b.size()) throw UsageError(path + ": truncated or padded NumPy data");
  }
  if (b.size() != start + header_len + n * elem) throw UsageError(path + ": truncated or padded NumPy data");
  const bool one = dims == input, many = dims.size() == input.size() + 1 && std::equal(input.begin(), input.end(), dims.begin() + 1);
  if (!one && !many)
    throw UsageError(path + ": a NumPy array of shape " + shrink::shape_string(dims) + ", but the model reads N," + shrink::shape_string(input) +
                     " (N,C,H,W for images)");
  std::vector<float> x(n);
  const char* p = b.data() + start + header_len;
  for (uint64_t k = 0; k < n; ++k) {
    if (elem == 1) x[k] = uint8_t(p[k]) / 255.0f;
    else if (elem == 4) std::memcpy(&x[k], p + 4 * k, 4);
    else {
      double d;
      std::memcpy(&d, p + 8 * k, 8);
      x[k] = static_cast<float>(d);
    }
  }
  return x;
}

// Raw float32, IDX or NumPy examples from a file's bytes.
std::vector<float> read_inputs(const std::string& path, const std::string& b, const std::vector<int64_t>& input, int64_t per_example) {
  std::vector<float> x;
  if (is_idx(b)) {
    x = idx_examples(path, read_idx(path, b), input);
  } else if (is_npy(b)) {
    x = npy_examples(path, b, input);
  } else {
    if (b.size() % (4 * per_example)) throw UsageError(path + ": " + std::to_string(b.size()) + " bytes is not a whole number of float32 examples of " + std::to_string(per_example) + " values");
    x.resize(b.size() / 4);
    std::memcpy(x.data(), b.data(), b.size());
  }
  if (x.empty() || x.size() % per_example) throw UsageError(path + ": examples do not have the model's input size " + std::to_string(per_example));
  for (float v : x)
    if (!std::isfinite(v)) throw UsageError(path + ": has NaN or infinite values");
  return x;
}

// A file read once (a pipe cannot be read twice), and whether it is an image: by its first bytes,
// or by its name, so that a damaged .png gets the decoder's message rather than a raw-size one.
struct InputFile {
  std::string path, bytes;
  bool image;
};

InputFile read_input_file(const std::string& path) {
  InputFile f{path, slurp(path), false};
  std::string ext = path.substr(std::min(path.size(), path.find_last_of('.')));
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  f.image = shrink::image::starts_like_image(f.bytes.data(), f.bytes.size()) || ext == ".png" || ext == ".jpg" || ext == ".jpeg";
  return f;
}

// PNG and JPEG files as the model's inputs, made as its training examples were (Model::
// preprocessing): converted to its channels, resized to its H,W, scaled to [0,1].
std::vector<float> read_images(const std::vector<InputFile>& files, const shrink::rt::Model& m) {
  const auto shape = m.input_shape();
  if (!m.preprocessing().image_input)
    throw UsageError(files[0].path + ": an image, but the model was not trained on images (its file does not say how to turn one into input); give raw float32 or IDX input");
  if (shape.size() != 3 || (shape[0] != 1 && shape[0] != 3))
    throw UsageError(files[0].path + ": an image, but the model's input is not 1 or 3 channels of H x W");
  const int64_t C = shape[0], H = shape[1], W = shape[2];
  std::vector<float> x(files.size() * C * H * W);
  std::vector<uint8_t> planar(C * H * W);
  for (size_t i = 0; i < files.size(); ++i) {
    const std::vector<uint8_t> bytes(files[i].bytes.begin(), files[i].bytes.end());
    shrink::image::to_planar(shrink::image::resize(shrink::image::to_channels(shrink::image::decode(bytes, files[i].path), C), W, H), planar.data());
    std::transform(planar.begin(), planar.end(), x.begin() + i * planar.size(), [](uint8_t v) { return v / 255.0f; });
  }
  return x;
}

// Every --input file: all images, or raw float32 / IDX examples, one after another.
std::vector<float> read_all_inputs(const std::vector<std::string>& paths, const shrink::rt::Model& m, int64_t per_example, bool* images) {
  std::vector<InputFile> files;
  for (const auto& p : paths) files.push_back(read_input_file(p));
  *images = files[0].image;
  for (const auto& f : files)
    if (f.image != *images)
      throw UsageError("--input: " + f.path + (f.image ? " is an image but " : " is not a PNG or JPEG image but ") + files[0].path +
                       (f.image ? " is not" : " is") + " (give images or raw examples, not both)");
  if (*images) return read_images(files, m);
  std::vector<float> x;
  for (const auto& f : files) {
    auto part = read_inputs(f.path, f.bytes, m.input_shape(), per_example);
    x.insert(x.end(), part.begin(), part.end());
  }
  return x;
}

// One line per image: its most likely classes, by name where the model has names.
void print_top_classes(const std::string& path, const std::vector<float>& probabilities, const std::vector<std::string>& names, int64_t top) {
  std::vector<int64_t> order(probabilities.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = static_cast<int64_t>(k);
  top = std::min<int64_t>(top, static_cast<int64_t>(order.size()));
  std::partial_sort(order.begin(), order.begin() + top, order.end(), [&](int64_t a, int64_t b) { return probabilities[a] > probabilities[b]; });
  std::printf("%s:", path.c_str());
  for (int64_t k = 0; k < top; ++k) {
    const int64_t c = order[k];
    std::string name = c < static_cast<int64_t>(names.size()) ? names[c] : "class " + std::to_string(c);
    std::printf("%s %s %.1f%%", k ? "," : "", name.c_str(), 100 * probabilities[c]);
  }
  std::printf("\n");
}

std::vector<int64_t> read_labels(const std::string& path) {
  std::string b = slurp(path);
  std::vector<int64_t> y;
  if (is_idx(b)) {
    for (double v : read_idx(path, b).values) {
      const double label = b[2] == 0x08 ? std::round(v * 255) : v;  // uint8 labels were scaled as images are
      if (label != std::round(label) || std::abs(label) > 1e15) throw UsageError(path + ": labels must be integers (found " + std::to_string(v) + ")");
      y.push_back(static_cast<int64_t>(std::llround(label)));
    }
  } else {
    if (b.size() % 4) throw UsageError(path + ": raw labels must be int32");
    y.resize(b.size() / 4);
    for (size_t k = 0; k < y.size(); ++k) {
      int32_t v;
      std::memcpy(&v, b.data() + 4 * k, 4);
      y[k] = v;
    }
  }
  return y;
}

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p / 100 * v.size()))];
}

// `batch` examples taken from x in turn (repeating it when it holds fewer).
std::vector<float> batch_of(const std::vector<float>& x, int64_t per, int64_t batch) {
  std::vector<float> out(batch * per);
  for (int64_t k = 0; k < batch * per; ++k) out[k] = x[k % x.size()];
  return out;
}

void bench(const shrink::rt::Model& m, const std::vector<float>& x, int64_t per, int64_t batch, double seconds) {
  using clock = std::chrono::steady_clock;
  std::vector<double> ms;
  m.predict(x.data(), 1);
  const auto span = std::chrono::duration<double>(seconds);
  auto until = clock::now() + span;
  for (int i = 0; i < 20000 && (i < 50 || clock::now() < until); ++i) {
    auto t0 = clock::now();
    m.predict(x.data() + (i % (x.size() / per)) * per, 1);
    ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count());
  }
  const std::vector<float> big = batch_of(x, per, batch);
  m.predict(big.data(), batch);
  int64_t runs = 0;
  auto t0 = clock::now();
  while (runs < 5 || clock::now() - t0 < span) m.predict(big.data(), batch), ++runs;
  const double took = std::chrono::duration<double>(clock::now() - t0).count();
  const long peak_kb = static_cast<long>(shrink::peak_rss_kb());
  std::printf("latency batch 1: p50 %.4f ms, p99 %.4f ms (%zu runs)\nthroughput batch %ld: %.0f examples/s\npeak memory %.1f MB\n", percentile(ms, 50),
              percentile(ms, 99), ms.size(), static_cast<long>(batch), runs * batch / took, peak_kb / 1024.0);
  std::printf("{\"p50_ms\": %.6f, \"p99_ms\": %.6f, \"throughput\": %.1f, \"batch\": %ld, \"peak_rss_kb\": %ld}\n", percentile(ms, 50), percentile(ms, 99),
              runs * batch / took, static_cast<long>(batch), peak_kb);
}

// Each primitive's share of a call at `batch` (1000 calls, or 3 seconds' worth at large batches).
void profile(const shrink::rt::Model& m, const std::vector<float>& x, int64_t per, int64_t batch) {
  const std::vector<float> in = batch_of(x, per, batch);
  auto t0 = std::chrono::steady_clock::now();
  m.predict(in.data(), batch);
  const double one = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const int runs = static_cast<int>(std::clamp(3.0 / std::max(one, 1e-9), 10.0, 1000.0));
  auto steps = m.profile(in.data(), batch, runs);
  double total = 0;
  for (const auto& s : steps) total += s.microseconds;
  std::printf("profile at batch %ld, median of %d calls, %d of %d threads: %zu primitives, %.2f us in all\n", static_cast<long>(batch), runs,
              steps.empty() ? 1 : steps[0].threads, m.threads(), steps.size(), total);
  if (const int64_t pass = m.batch_per_pass(batch); pass < batch)  // the profile ran the batch whole
    std::printf("(a predict call runs batch %ld in passes of up to %ld examples, on %d threads)\n", static_cast<long>(batch), static_cast<long>(pass),
                m.threads_at(batch));
  std::printf("%5s %-44s %10s %7s\n", "step", "layer (primitive)", "us", "share");
  for (size_t k = 0; k < steps.size(); ++k)
    std::printf("%5zu %-44s %10.2f %6.1f%%\n", k, steps[k].what.c_str(), steps[k].microseconds, 100 * steps[k].microseconds / total);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    shrink::Args args = shrink::parse_command_line(shrink::shrink_run_command_line(), std::vector<std::string>(argv + 1, argv + argc));
    if (args.help) {
      std::cout << shrink::help_text(shrink::shrink_run_command_line());
      return 0;
    }
    const std::string model_path = args.positional[0];
    std::map<std::string, std::string> opt;
    for (const char* name : {"labels", "logits"})
      if (auto v = args.get(name)) opt[name] = *v;
    const bool run_bench = args.has("bench"), run_profile = args.has("profile");
    const int64_t batch = args.integer("batch", run_profile ? 1 : 256);
    const int threads = static_cast<int>(args.integer("threads", 0));
    auto m = shrink::rt::Model::load(model_path, threads);
    int64_t per = 1;
    for (int64_t d : m.input_shape()) per *= d;
    const auto inputs = args.all("input");
    bool images = false;
    auto x = read_all_inputs(inputs, m, per, &images);
    int64_t n = static_cast<int64_t>(x.size()) / per;
    if (run_bench || run_profile) {
      run_bench ? bench(m, x, per, batch, args.real("seconds", 2.0)) : profile(m, x, per, batch);
      return 0;
    }
    std::vector<int64_t> labels;
    if (opt.count("labels")) {
      labels = read_labels(opt["labels"]);
      if (static_cast<int64_t>(labels.size()) != n) throw UsageError(opt["labels"] + ": " + std::to_string(labels.size()) + " labels for " + std::to_string(n) + " examples");
      for (int64_t y : labels)
        if (y < 0 || y >= m.classes()) throw UsageError(opt["labels"] + ": label " + std::to_string(y) + " is outside [0, " + std::to_string(m.classes()) + ")");
    }
    int64_t correct = 0;
    std::ofstream logits_out;
    if (opt.count("logits")) {
      logits_out.open(opt["logits"], std::ios::binary);
      if (!logits_out) throw UsageError(opt["logits"] + ": cannot write");
    }
    const bool write_logits = opt.count("logits") > 0;
    const bool name_top_classes = images && labels.empty() && !write_logits;  // else as for raw input
    const auto names = m.class_names();
    for (int64_t start = 0; start < n; start += batch) {
      int64_t b = std::min(batch, n - start);
      if (name_top_classes) {
        const auto p = m.probabilities(x.data() + start * per, b);
        for (int64_t k = 0; k < b; ++k)
          print_top_classes(inputs[start + k], {p.begin() + k * m.classes(), p.begin() + (k + 1) * m.classes()}, names, args.integer("top", 3));
        continue;
      }
      auto logits = m.predict(x.data() + start * per, b);
      if (write_logits) logits_out.write(reinterpret_cast<const char*>(logits.data()), static_cast<std::streamsize>(logits.size() * sizeof(float)));
      for (int64_t k = 0; k < b; ++k) {
        const float* row = logits.data() + k * m.classes();
        int64_t top = std::max_element(row, row + m.classes()) - row;
        if (labels.empty()) std::printf("%ld\n", static_cast<long>(top));
        else correct += top == labels[start + k];
      }
    }
    if (!labels.empty()) std::printf("accuracy %.4f (%ld of %ld)\n", double(correct) / n, static_cast<long>(correct), static_cast<long>(n));
  } catch (const UsageError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const shrink::UserError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const shrink::rt::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    if (const std::string oom = shrink::out_of_memory_message(e); !oom.empty()) {
      std::cerr << "error: " << oom << std::endl;
      return 2;
    }
    std::cerr << "internal error (a bug; please report): " << e.what() << std::endl;
    return 1;
  }
  return 0;
}
