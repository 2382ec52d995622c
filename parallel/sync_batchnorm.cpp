#include "parallel/sync_batchnorm.h"

#include <stdexcept>

#include "parallel/world.h"

namespace shrink {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Per channel (dim 1) of x, as [1, C, 1, ...] to broadcast.
std::vector<int64_t> reduce_dims(const torch::Tensor& x) {
  std::vector<int64_t> dims{0};
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return dims;
}

torch::Tensor per_channel(const torch::Tensor& v, const torch::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[1] = -1;
  return v.view(shape);
}

struct SyncBatchNormFunction : torch::autograd::Function<SyncBatchNormFunction> {
  // Sums in float64: the global statistics come from sums over many examples and workers.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               torch::Tensor running_mean, torch::Tensor running_var, double eps, double momentum) {
    const auto dims = reduce_dims(x);
    const int64_t channels = x.size(1);
    auto sums = torch::cat({x.sum(dims, false, torch::kFloat64), (x * x).sum(dims, false, torch::kFloat64),
                            torch::full({1}, static_cast<double>(x.numel() / std::max<int64_t>(channels, 1)), torch::kFloat64)});
    World::get().all_reduce_sum({sums});
    const double count = sums[2 * channels].item<double>();
    if (count < 2) throw std::invalid_argument("batchnorm over fewer than 2 values per channel in the whole batch");
    auto mean = sums.narrow(0, 0, channels) / count;
    auto var = (sums.narrow(0, channels, channels) / count - mean * mean).clamp_min(0);
    {
      torch::NoGradGuard no_grad;
      running_mean.mul_(1 - momentum).add_(mean.to(running_mean.scalar_type()), momentum);
      running_var.mul_(1 - momentum).add_((var * (count / (count - 1))).to(running_var.scalar_type()), momentum);
    }
    auto invstd = (var + eps).rsqrt().to(x.scalar_type());
    auto xhat = (x - per_channel(mean.to(x.scalar_type()), x)) * per_channel(invstd, x);
    ctx->save_for_backward({xhat, weight, invstd});
    ctx->saved_data["count"] = count;
    return xhat * per_channel(weight, x) + per_channel(bias, x);
  }

  // d x = w * invstd * (dy - sum(dy) / count - xhat * sum(dy * xhat) / count), both sums over
  // every worker; d weight and d bias are this worker's sums.
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto &xhat = saved[0], &weight = saved[1], &invstd = saved[2];
    const double count = ctx->saved_data["count"].toDouble();
    const auto& dy = grads[0];
    const auto dims = reduce_dims(xhat);
    auto sum_dy = dy.sum(dims), sum_dy_xhat = (dy * xhat).sum(dims);
    auto global = torch::cat({sum_dy, sum_dy_xhat});
    World::get().all_reduce_sum({global});
    const int64_t channels = xhat.size(1);
    auto mean_dy = global.narrow(0, 0, channels) / count, mean_dy_xhat = global.narrow(0, channels, channels) / count;
    auto dx = per_channel(weight * invstd, xhat) * (dy - per_channel(mean_dy, xhat) - xhat * per_channel(mean_dy_xhat, xhat));
    return {dx, sum_dy_xhat, sum_dy, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor sync_batch_norm(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, torch::Tensor& running_mean,
                              torch::Tensor& running_var, double eps, double momentum) {
  return SyncBatchNormFunction::apply(x, weight, bias, running_mean, running_var, eps, momentum);
}

}  // namespace shrink
