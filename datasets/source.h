// Where examples come from. A Source holds N examples of one shape, each with an integer
// label, and reads any set of them as a batch. In-memory and streaming (HDF5 hyperslab)
// sources share this interface, so the loader never knows which one it has.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "common/shape.h"

namespace shrink {

class Source {
 public:
  virtual ~Source() = default;
  virtual int64_t size() const = 0;
  virtual std::vector<int64_t> shape() const = 0;  // per example: C,H,W
  // Reads the examples at `indices` (any order) into x [n,C,H,W] float32 and y [n] int64.
  virtual void read(const std::vector<int64_t>& indices, torch::Tensor& x, torch::Tensor& y) const = 0;
  // Reads examples [start, start+count): the fast path for evaluation and statistics.
  virtual void read_range(int64_t start, int64_t count, torch::Tensor& x, torch::Tensor& y) const;
  virtual std::string describe() const = 0;
};

// Examples held in memory as one float32 tensor.
class MemorySource : public Source {
 public:
  MemorySource(torch::Tensor x, torch::Tensor y, std::string description);
  int64_t size() const override { return x_.size(0); }
  std::vector<int64_t> shape() const override;
  void read(const std::vector<int64_t>& indices, torch::Tensor& x, torch::Tensor& y) const override;
  void read_range(int64_t start, int64_t count, torch::Tensor& x, torch::Tensor& y) const override;
  std::string describe() const override { return description_; }
  const torch::Tensor& data() const { return x_; }
  const torch::Tensor& targets() const { return y_; }

 private:
  torch::Tensor x_, y_;
  std::string description_;
};

// A fixed subset of another source (used for the validation split).
class SubsetSource : public Source {
 public:
  SubsetSource(std::shared_ptr<const Source> base, std::vector<int64_t> indices, std::string description);
  int64_t size() const override { return static_cast<int64_t>(indices_.size()); }
  std::vector<int64_t> shape() const override { return base_->shape(); }
  void read(const std::vector<int64_t>& indices, torch::Tensor& x, torch::Tensor& y) const override;
  std::string describe() const override { return description_; }

 private:
  std::shared_ptr<const Source> base_;
  std::vector<int64_t> indices_;
  std::string description_;
};

// Checks a batch of examples: finite inputs, labels in [0, classes). Throws UserError naming
// `what` and the first bad example (offset by `first_index`).
void validate_examples(const torch::Tensor& x, const torch::Tensor& y, int64_t classes, const std::string& what, int64_t first_index);
// Per-class counts of a source's labels, checked as validate_examples checks them.
std::vector<int64_t> class_counts(const Source& source, int64_t classes);
// Per-label counts of labels whose number of classes no file states (IDX, HDF5): as many as the
// largest label says; a negative label, or one of 2^20 or more, is a UserError naming `what`.
std::vector<int64_t> label_counts(const torch::Tensor& y, const std::string& what);

}  // namespace shrink
