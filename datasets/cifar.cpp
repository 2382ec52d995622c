#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "datasets/formats.h"

namespace shrink {

std::shared_ptr<MemorySource> read_cifar10(const std::vector<std::string>& files) {
  constexpr int64_t pixels = 3 * 32 * 32, record = pixels + 1;
  std::vector<torch::Tensor> xs, ys;
  for (const auto& path : files) {
    if (!std::filesystem::is_regular_file(path)) throw UserError(fmt::format("{}: no such file", path));
    auto bytes = static_cast<int64_t>(std::filesystem::file_size(path));
    if (bytes == 0 || bytes % record != 0)
      throw UserError(fmt::format("{}: {} bytes is not a whole number of CIFAR-10 records ({} bytes each)", path, bytes, record));
    auto raw = torch::empty({bytes / record, record}, torch::kUInt8);
    std::ifstream in(path, std::ios::binary);
    if (!in.read(reinterpret_cast<char*>(raw.data_ptr()), bytes)) throw UserError(fmt::format("{}: read failed", path));
    ys.push_back(raw.select(1, 0).to(torch::kInt64));
    xs.push_back(raw.narrow(1, 1, pixels).reshape({-1, 3, 32, 32}).to(torch::kFloat32).div_(255.0));
  }
  if (xs.empty()) throw UserError("CIFAR-10: no batch files given");
  return std::make_shared<MemorySource>(torch::cat(xs), torch::cat(ys), files.front());
}

}  // namespace shrink
