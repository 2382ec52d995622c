#include "tests/helpers.h"

#include <fmt/format.h>
#include <hdf5.h>
#include <malloc.h>
#include <sys/wait.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "export/export.h"
#include "shrink/runtime.hpp"
#include "quantize/quantize.h"
#include "train/checkpoint.h"

namespace shrink::test {

// Every test of shrink_tests runs torch on one thread from a fixed seed: set before Catch's
// runner (tests/catch_runner.cpp, shared with the torch-free test binaries) starts. And freed
// tensors stay in the heap for the next: glibc serves a block over 32 MiB by mmap and unmaps it on
// free, so each large tensor was faulted in anew, page by page (the int8 simulation of resnet18 on
// 400 inputs: 95 s with glibc's defaults, 20 s so). Not in the shrink binary: compare reads each
// model's peak memory after the one before it freed its tensors.
const bool torch_set_up = [] {
  torch::set_num_threads(1);
  torch::manual_seed(0);
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();

TempDir::TempDir() {
  static std::mt19937_64 rng(std::random_device{}());
  path = std::filesystem::temp_directory_path() / ("shrink-test-" + std::to_string(rng()));
  std::filesystem::create_directories(path);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

void write_hdf5(const std::string& path, const std::string& group, const torch::Tensor& x, const torch::Tensor& y, bool append) {
  hid_t file = append ? H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT) : H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t g = H5Gcreate2(file, group.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  auto write = [&](const char* name, const torch::Tensor& t, hid_t type) {
    std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
    hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
    hid_t d = H5Dcreate2(g, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.contiguous().data_ptr());
    H5Dclose(d);
    H5Sclose(space);
  };
  if (x.scalar_type() == torch::kUInt8) write("data", x, H5T_NATIVE_UINT8);
  else if (x.scalar_type() == torch::kFloat64) write("data", x, H5T_NATIVE_DOUBLE);
  else write("data", x.to(torch::kFloat32), H5T_NATIVE_FLOAT);
  write("target", y.to(torch::kInt32).contiguous(), H5T_NATIVE_INT32);
  H5Gclose(g);
  H5Fclose(file);
}

void write_idx(const std::string& path, const torch::Tensor& t) {
  std::string bytes;
  unsigned char type = t.scalar_type() == torch::kUInt8 ? 0x08 : t.scalar_type() == torch::kInt32 ? 0x0C : 0x0D;
  bytes += std::string{0, 0, static_cast<char>(type), static_cast<char>(t.dim())};
  for (int64_t d : t.sizes()) {
    uint32_t v = static_cast<uint32_t>(d);
    bytes += std::string{static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
  }
  auto c = t.contiguous();
  size_t elem = c.element_size();
  const char* p = static_cast<const char*>(c.data_ptr());
  for (int64_t i = 0; i < c.numel(); ++i)
    for (size_t b = 0; b < elem; ++b) bytes += p[i * elem + (elem - 1 - b)];  // big-endian
  if (path.size() > 3 && path.substr(path.size() - 3) == ".gz") {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    write_text(path, bytes);
  }
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> synthetic_job_args(const std::string& out, int64_t epochs, const std::string& spec) {
  return {"--job.out=" + out, "--data.source=synthetic", "--data.shape=1,16,16", "--data.synthetic_train=600", "--data.synthetic_test=200",
          "--train.epochs=" + std::to_string(epochs), "--train.threads=1", "--model.spec=" + spec};
}

std::string train_synthetic(const TempDir& dir, const std::string& name, int64_t epochs, std::vector<std::string> extra) {
  Keys keys;
  add_train_options(keys);
  auto args = synthetic_job_args(dir / name, epochs);
  for (const auto& e : extra) {  // an extra --key=value replaces the default one
    const std::string key = e.substr(0, e.find('=') + 1);
    args.erase(std::remove_if(args.begin(), args.end(), [&](const std::string& a) { return a.rfind(key, 0) == 0; }), args.end());
  }
  args.insert(args.end(), extra.begin(), extra.end());
  run_train_job(read_job_config(Config::load(keys, "", args)), quiet());
  return dir / (name + "/checkpoints/last.pt");
}

QuantNet calibrated_int8(const TempDir& dir, const ModelSpec& spec, const std::string& float_checkpoint, const QuantSettings& settings,
                         const torch::Tensor& calibration) {
  QuantNet q(spec, settings);
  load_weights_into(float_checkpoint, *q);
  q->eval();
  q->set_calibrating(true);
  {
    torch::NoGradGuard no_grad;
    q->forward(calibration);
  }
  q->set_calibrating(false);
  q->finish_calibration();
  SpecNet as_net(std::static_pointer_cast<SpecNetImpl>(q.ptr()));
  save_checkpoint(dir / "q.pt", as_net, nullptr, {{"epoch", 0}});
  CATCH_CHECK(export_model(dir / "q.pt", dir / "q.shrink", {})["precision"] == "int8");
  return q;
}

std::string quantize_synthetic(const TempDir& dir, const std::string& name, const std::string& checkpoint) {
  Keys keys;
  add_train_options(keys);
  add_quantize_options(keys);
  auto args = synthetic_job_args(dir / name, 1);
  args.insert(args.end(), {"--quantize.checkpoint=" + checkpoint, "--quantize.mode=ptq"});
  auto config = Config::load(keys, "", args);
  run_quantize_job(read_job_config(config), read_quantize_config(config), quiet());
  return dir / (name + "/checkpoints/last.pt");
}

CliResult run_cli(const std::string& args) { return run_cmd(std::string(SHRINK_BIN) + " " + args); }

CliResult run_cmd(const std::string& command) {
  std::string cmd = command + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

std::string random_checkpoint(const TempDir& dir, const std::string& name, const std::string& text, std::vector<int64_t> input, int64_t classes,
                              const nlohmann::json& meta) {
  SpecNet net(parse_spec(text, input, classes));
  torch::NoGradGuard no_grad;
  for (auto& b : net->named_buffers()) {
    if (b.key().find("running_mean") != std::string::npos) b.value().uniform_(-0.3, 0.3);
    if (b.key().find("running_var") != std::string::npos) b.value().uniform_(0.5, 2);
  }
  for (auto& p : net->named_parameters())
    if (p.key().find("bn") != std::string::npos) p.value().uniform_(0.5, 1.5);
  nlohmann::json m = meta;
  m["epoch"] = 0;
  save_checkpoint(dir / name, net, nullptr, m);
  return dir / name;
}

torch::Tensor run_runtime(const std::string& model_file, const torch::Tensor& x, int threads) {
  auto m = rt::Model::load(model_file, threads);
  auto in = x.contiguous();
  auto out = m.predict(in.data_ptr<float>(), x.size(0));
  return torch::from_blob(out.data(), {x.size(0), m.classes()}, torch::kFloat32).clone();
}

QuantSettings unfoldable_batchnorm_float(const ModelSpec& spec) {
  QuantSettings settings;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    if (L.type != LayerType::BatchNorm) continue;
    const Layer* before = i > 0 && L.inputs[0] == spec.layers[i - 1].name ? &spec.layers[i - 1] : nullptr;
    int readers = 0;
    for (const Layer& other : spec.layers) readers += before && std::count(other.inputs.begin(), other.inputs.end(), before->name);
    if (!before || !has_weights(before->type) || readers != 1) settings.float_layers.push_back(L.name);
  }
  return settings;
}

torch::Tensor run_ort(const std::string& onnx_file, const torch::Tensor& x, const std::string& optimized, const std::string& outputs) {
  const std::string in = onnx_file + ".input.f32", out = onnx_file + ".ort.f32";
  auto c = x.contiguous();
  write_text(in, std::string(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * 4));
  std::string shape;
  for (int64_t d : c.sizes()) shape += (shape.empty() ? "" : ",") + std::to_string(d);
  auto r = run_cmd("node " + std::string(SHRINK_SOURCE_DIR) + "/tools/ort/ort.js run '" + onnx_file + "' --input '" + in + "' --shape " + shape +
                   " --out '" + out + "' --threads 1" + (optimized.empty() ? "" : " --optimized '" + optimized + "'") +
                   (outputs.empty() ? "" : " --outputs '" + outputs + "'"));
  if (r.code != 0) throw std::runtime_error("ONNX Runtime (tools/ort/ort.js; tools/ort/install sets it up) failed on " + onnx_file + ": " + r.out);
  const std::string y = read_text(out);
  const int64_t rows = x.size(0), cols = static_cast<int64_t>(y.size() / 4) / rows;
  return torch::from_blob(const_cast<char*>(y.data()), {rows, cols}, torch::kFloat32).clone();
}

std::map<std::string, int> onnx_op_counts(const std::string& onnx_file) {
  auto r = run_cmd("/usr/bin/python3 " + std::string(SHRINK_SOURCE_DIR) + "/tests/onnx/inspect_export.py ops '" + onnx_file + "'");
  if (r.code != 0) throw std::runtime_error("tests/onnx/inspect_export.py ops failed: " + r.out);
  return nlohmann::json::parse(r.out).get<std::map<std::string, int>>();
}

double top1_agreement(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.argmax(1) == b.argmax(1)).to(torch::kFloat64).mean().item<double>();
}

double relative_error(const torch::Tensor& got, const torch::Tensor& expect) {
  return ((got - expect).abs().max() / expect.abs().max()).item<double>();
}

std::string check_onnx_files(const std::vector<std::string>& files) {
  std::string cmd = "/usr/bin/python3 " + std::string(SHRINK_SOURCE_DIR) + "/tests/onnx/inspect_export.py check";
  for (const auto& f : files) cmd += " '" + f + "'";
  return run_cmd(cmd).out;
}

// The int8 simulation, shrink-run and ONNX Runtime on the files of a quantized checkpoint DIR/q.pt
// (DIR/q.shrink written by the caller): top-1 agreement of each pair at least 99.5%, and every int8
// conv and linear an integer kernel in the graph ONNX Runtime ran.
std::string first_departing_layer(const TempDir& dir, QuantNet& q, const torch::Tensor& x) {
  ExportOptions o;
  o.expose_layers = true;
  export_model(dir / "q.pt", dir / "q.exposed.onnx", o);
  run_ort(dir / "q.exposed.onnx", x, "", dir / "q.layers");
  const ModelSpec& spec = q->spec();
  std::vector<std::string> taps;
  for (const Layer& L : spec.layers) taps.push_back(L.name);
  std::map<std::string, torch::Tensor> sim;
  {
    torch::NoGradGuard no_grad;
    q->forward_with(x, taps, sim);
  }
  auto points = q->scales()["activations"];
  std::string report;
  std::vector<int> readers(spec.layers.size(), 0);
  for (const Layer& L : spec.layers)
    for (const auto& in : L.inputs)
      if (!in.empty()) ++readers[spec.index_of(in)];
  for (size_t i = 0; i + 1 < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    const Layer& next = spec.layers[i + 1];
    if (has_weights(L.type) && next.type == LayerType::BatchNorm && next.inputs[0] == L.name && readers[i] == 1) continue;  // folded: compared after it
    // Inside a unit (a clamp fused after it): the simulation's output is already on the unit's grid.
    if (!points.contains(L.name) && readers[i] == 1 && only_clamps(next.type) && next.inputs[0] == L.name) continue;
    // The exported model names a folded batchnorm's output after its conv or linear.
    const bool folded = i > 0 && L.type == LayerType::BatchNorm && has_weights(spec.layers[i - 1].type) && L.inputs[0] == spec.layers[i - 1].name &&
                        readers[i - 1] == 1;
    const std::string file = dir / ("q.layers/" + (folded ? spec.layers[i - 1].name : L.name) + ".exposed.f32");
    if (!std::filesystem::exists(file)) continue;
    const std::string bytes = read_text(file);
    const torch::Tensor& want = sim.at(L.name);
    auto got = torch::from_blob(const_cast<char*>(bytes.data()), want.sizes(), torch::kFloat32).clone();
    // Off by half an output step (on a grid), or by 1e-4 of the largest value (float).
    const double step = points.contains(L.name) ? points[L.name]["scale"].get<double>() : 0;
    const double tolerance = step > 0 ? 0.5 * step : 1e-4 * want.abs().max().item<double>();
    auto off = (got - want).abs();
    const double diff = off.max().item<double>();
    if (diff > tolerance)
      report += fmt::format("{}layer {} ({}): {} of {} values differ, by up to {}", report.empty() ? "" : "; then ", L.name, layer_type_name(L.type),
                            (off > tolerance).sum().item<int64_t>(), want.numel(),
                            step > 0 ? fmt::format("{:.1f} output steps (scale {:.3g})", diff / step, step) : fmt::format("{:.3g}", diff));
  }
  return report.empty() ? "no layer departs by half an output step before the logits"
                        : "the simulation and ONNX Runtime depart first at " + report;
}

void check_three_way(const TempDir& dir, QuantNet& q, const torch::Tensor& x, double min_ort_agreement) {
  export_model(dir / "q.pt", dir / "q.onnx", {});
  torch::Tensor sim;
  {
    torch::NoGradGuard no_grad;
    q->eval();
    sim = q->forward(x);
  }
  auto runtime = run_runtime(dir / "q.shrink", x);
  auto ort = run_ort(dir / "q.onnx", x, dir / "q.optimized.onnx");
  auto ops = onnx_op_counts(dir / "q.optimized.onnx");
  CATCH_INFO("ONNX Runtime's optimized graph: " << nlohmann::json(ops).dump());
  const double runtime_sim = top1_agreement(runtime, sim), ort_sim = top1_agreement(ort, sim), ort_runtime = top1_agreement(ort, runtime);
  CATCH_INFO((std::min(ort_sim, ort_runtime) < min_ort_agreement ? first_departing_layer(dir, q, x) : std::string()));
  CATCH_CHECK(runtime_sim >= 0.995);
  CATCH_CHECK(ort_sim >= min_ort_agreement);
  CATCH_CHECK(ort_runtime >= min_ort_agreement);
  int weighted = 0;
  for (size_t i = 0; i < q->spec().layers.size(); ++i) weighted += has_weights(q->spec().layers[i].type) && q->is_quantized(i);
  for (const char* float_op : {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"}) CATCH_CHECK(ops.count(float_op) == 0);
  CATCH_CHECK(ops["QLinearConv"] + ops["QGemm"] == weighted);
  CATCH_CHECK(check_onnx_files({dir / "q.onnx"}) == "ok 1\n");
}

}  // namespace shrink::test
