#include "tests/helpers.h"

#include <hdf5.h>
#include <sys/wait.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>

#include "export/export.h"
#include "quantize/quantize.h"
#include "train/checkpoint.h"

namespace shrink::test {

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

}  // namespace shrink::test
