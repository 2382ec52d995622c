#include "datasets/source.h"

#include <fmt/format.h>

#include "common/error.h"

namespace shrink {

void Source::read_range(int64_t start, int64_t count, torch::Tensor& x, torch::Tensor& y) const {
  std::vector<int64_t> indices(count);
  for (int64_t i = 0; i < count; ++i) indices[i] = start + i;
  read(indices, x, y);
}

MemorySource::MemorySource(torch::Tensor x, torch::Tensor y, std::string description)
    : x_(x.to(torch::kFloat32).contiguous()), y_(y.to(torch::kInt64).contiguous()), description_(std::move(description)) {}

std::vector<int64_t> MemorySource::shape() const {
  auto s = x_.sizes().vec();
  return {s.begin() + 1, s.end()};
}

void MemorySource::read(const std::vector<int64_t>& indices, torch::Tensor& x, torch::Tensor& y) const {
  auto idx = torch::from_blob(const_cast<int64_t*>(indices.data()), {static_cast<int64_t>(indices.size())}, torch::kInt64);
  x = x_.index_select(0, idx);
  y = y_.index_select(0, idx);
}

void MemorySource::read_range(int64_t start, int64_t count, torch::Tensor& x, torch::Tensor& y) const {
  x = x_.narrow(0, start, count);
  y = y_.narrow(0, start, count);
}

SubsetSource::SubsetSource(std::shared_ptr<const Source> base, std::vector<int64_t> indices, std::string description)
    : base_(std::move(base)), indices_(std::move(indices)), description_(std::move(description)) {}

void SubsetSource::read(const std::vector<int64_t>& indices, torch::Tensor& x, torch::Tensor& y) const {
  std::vector<int64_t> mapped(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) mapped[i] = indices_.at(indices[i]);
  base_->read(mapped, x, y);
}

namespace {

void check_labels(const torch::Tensor& y, int64_t classes, const std::string& what, int64_t first_index) {
  auto out_of_range = (y < 0) | (y >= classes);
  if (out_of_range.any().item<bool>()) {
    int64_t bad = out_of_range.nonzero()[0][0].item<int64_t>();
    throw UserError(fmt::format("{}: example {} has label {}, outside [0, {})", what, first_index + bad, y[bad].item<int64_t>(), classes));
  }
}

}  // namespace

void validate_examples(const torch::Tensor& x, const torch::Tensor& y, int64_t classes, const std::string& what, int64_t first_index) {
  auto finite = torch::isfinite(x).flatten(1).all(1);
  if (!finite.all().item<bool>()) {
    int64_t bad = (~finite).nonzero()[0][0].item<int64_t>();
    throw UserError(fmt::format("{}: example {} has a NaN or infinite input value", what, first_index + bad));
  }
  check_labels(y, classes, what, first_index);
}

std::vector<int64_t> class_counts(const Source& source, int64_t classes) {
  auto counts = torch::zeros({classes}, torch::kInt64);
  const int64_t chunk = 8192;
  for (int64_t start = 0; start < source.size(); start += chunk) {
    torch::Tensor x, y;
    source.read_range(start, std::min(chunk, source.size() - start), x, y);
    check_labels(y, classes, source.describe(), start);
    counts += torch::bincount(y, {}, classes);
  }
  return {counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + classes};
}

std::vector<int64_t> label_counts(const torch::Tensor& y, const std::string& what) {
  if (y.numel() == 0) return {};
  const torch::Tensor labels = y.to(torch::kInt64);
  check_labels(labels, int64_t{1} << 20, what, 0);
  const auto counts = torch::bincount(labels);
  return {counts.data_ptr<int64_t>(), counts.data_ptr<int64_t>() + counts.numel()};
}

}  // namespace shrink
