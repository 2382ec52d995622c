#include "train/model.h"

namespace shrink {

SpecNetImpl::SpecNetImpl(ModelSpec spec) : spec_(std::move(spec)) {
  namespace nn = torch::nn;
  std::vector<LayerInfo> info = analyze(spec_);
  std::vector<int> readers(spec_.layers.size(), 0);
  for (size_t i = 0; i < spec_.layers.size(); ++i) {
    const Layer& L = spec_.layers[i];
    std::vector<int> inputs;
    for (const auto& in : L.inputs) {
      int j = in.empty() ? -1 : spec_.index_of(in);
      inputs.push_back(j);
      if (j >= 0) ++readers[j];
    }
    input_index_.push_back(inputs);
    const auto& s = info[i].in_shape;
    nn::AnyModule m;
    switch (L.type) {
      case LayerType::Conv2d: {
        int64_t out = L.depthwise ? s[0] : L.out, groups = L.depthwise ? s[0] : L.groups;
        // Holds the parameters; the forward is conv2d_of (padding may be asymmetric).
        m = nn::AnyModule(register_module(L.name, nn::Conv2d(nn::Conv2dOptions(s[0], out, {L.kernel, L.kernel_width()})
                                                                 .stride(L.stride)
                                                                 .padding(L.padding)
                                                                 .dilation(L.dilation)
                                                                 .groups(groups)
                                                                 .bias(L.bias))));
        break;
      }
      case LayerType::Linear: {
        int64_t in = 1;
        for (int64_t d : s) in *= d;
        m = nn::AnyModule(register_module(L.name, nn::Linear(nn::LinearOptions(in, L.out).bias(L.bias))));
        break;
      }
      case LayerType::PReLU:
        m = nn::AnyModule(register_module(L.name, nn::PReLU(nn::PReLUOptions().num_parameters(L.per_channel ? s[0] : 1))));
        break;
      case LayerType::BatchNorm:
        if (s.size() == 3) m = nn::AnyModule(register_module(L.name, nn::BatchNorm2d(nn::BatchNormOptions(s[0]).eps(L.eps))));
        else m = nn::AnyModule(register_module(L.name, nn::BatchNorm1d(nn::BatchNormOptions(s[0]).eps(L.eps))));
        break;
      SHRINK_CASES_WITHOUT_PARAMETERS break;  // functional: no module, no parameters
    }
    modules_.push_back(std::move(m));
  }
  for (size_t i = 0; i < spec_.layers.size(); ++i) {
    std::vector<int> sources;
    for (int src = input_index_[i][0];; src = input_index_[src][0]) {
      if (src < 0 || readers[src] != 1) {
        sources.clear();
        break;
      }
      sources.push_back(src);
      if (!may_be_a_view(spec_.layers[src].type)) break;
    }
    inplace_sources_.push_back(sources);
  }
}

std::shared_ptr<torch::nn::Module> SpecNetImpl::layer_module(const std::string& name) const {
  int i = spec_.index_of(name);
  if (i < 0 || modules_[i].is_empty()) return nullptr;
  return modules_[i].ptr();
}

torch::Tensor SpecNetImpl::forward(torch::Tensor x) { return run(x, nullptr, nullptr); }

torch::Tensor SpecNetImpl::forward_with(torch::Tensor x, const std::vector<std::string>& taps,
                                        std::map<std::string, torch::Tensor>& tapped) {
  std::vector<int> wanted;
  for (const auto& name : taps) wanted.push_back(spec_.index_of(spec_.layer(name).name));
  std::vector<torch::Tensor> kept;
  torch::Tensor out = run(x, &wanted, &kept);
  for (size_t k = 0; k < taps.size(); ++k) tapped[taps[k]] = kept[k];
  return out;
}

torch::Tensor SpecNetImpl::run(torch::Tensor x, const std::vector<int>* taps, std::vector<torch::Tensor>* kept) {
  std::vector<torch::Tensor> outs(spec_.layers.size());
  auto input = [&](size_t i, size_t k) -> torch::Tensor& {
    int j = input_index_[i][k];
    return j < 0 ? x : outs[j];
  };
  for (size_t i = 0; i < spec_.layers.size(); ++i) {
    const Layer& L = spec_.layers[i];
    torch::Tensor& in = input(i, 0);
    // A tapped tensor must not be overwritten by a later in-place ReLU.
    const auto& sources = inplace_sources_[i];
    const bool inplace = !sources.empty() && (!taps || std::none_of(sources.begin(), sources.end(), [&](int s) {
                                                return std::find(taps->begin(), taps->end(), s) != taps->end();
                                              }));
    std::vector<torch::Tensor> rest;
    for (size_t k = 1; k < L.inputs.size(); ++k) rest.push_back(input(i, k));
    outs[i] = layer_forward(i, in, rest, inplace);
  }
  if (taps)
    for (int t : *taps) kept->push_back(outs[t]);
  return outs.back();
}

torch::Tensor conv2d_of(const Layer& L, const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
  const int64_t groups = L.depthwise ? x.size(1) : L.groups;
  const Pads P = L.pads();
  const std::array<int64_t, 2> stride{L.stride, L.stride_width()}, dilation{L.dilation, L.dilation};
  if (P.symmetric()) return torch::conv2d(x, w, b, stride, std::array<int64_t, 2>{P.top, P.left}, dilation, groups);
  auto padded = torch::constant_pad_nd(x, {P.left, P.right, P.top, P.bottom});
  return torch::conv2d(padded, w, b, stride, std::array<int64_t, 2>{0, 0}, dilation, groups);
}


namespace {

// What LibTorch's batchnorm module does around its functional call in training mode.
template <typename BatchNorm>
torch::Tensor batchnorm_with(const SpecNetImpl::BatchNormFn& fn, BatchNorm& bn, const torch::Tensor& x) {
  {
    torch::NoGradGuard no_grad;
    bn.num_batches_tracked.add_(1);
  }
  const auto& o = bn.options;  // a spec's batchnorm is affine and tracks its statistics
  const double momentum = o.momentum() ? *o.momentum() : 1.0 / bn.num_batches_tracked.template item<double>();  // unset: cumulative
  return fn(x, bn.weight, bn.bias, bn.running_mean, bn.running_var, o.eps(), momentum);
}

}  // namespace

torch::Tensor SpecNetImpl::batchnorm_forward(size_t i, const torch::Tensor& x) {
  torch::nn::Module* bn = modules_[i].ptr().get();
  if (auto* b2 = dynamic_cast<torch::nn::BatchNorm2dImpl*>(bn)) return batchnorm_with(training_batchnorm_, *b2, x);
  return batchnorm_with(training_batchnorm_, dynamic_cast<torch::nn::BatchNorm1dImpl&>(*bn), x);
}

torch::Tensor SpecNetImpl::layer_forward(size_t i, torch::Tensor& in, const std::vector<torch::Tensor>& rest, bool inplace) {
  const Layer& L = spec_.layers[i];
  switch (L.type) {
    case LayerType::Conv2d: {
      auto conv = modules_[i].get<torch::nn::Conv2d>();
      return conv2d_of(L, in, conv->weight, conv->bias);
    }
    case LayerType::BatchNorm: return training_batchnorm_ && is_training() ? batchnorm_forward(i, in) : modules_[i].forward(in);
    case LayerType::Linear: return modules_[i].forward(in.dim() > 2 ? in.flatten(1) : in);
    case LayerType::ReLU: return inplace ? torch::relu_(in) : torch::relu(in);
    case LayerType::ReLU6: return inplace ? torch::hardtanh_(in, 0, 6) : torch::hardtanh(in, 0, 6);
    case LayerType::HardSwish: return inplace ? torch::hardswish_(in) : torch::hardswish(in);
    case LayerType::LeakyReLU: return inplace ? torch::leaky_relu_(in, L.alpha) : torch::leaky_relu(in, L.alpha);
    case LayerType::Tanh: return inplace ? torch::tanh_(in) : torch::tanh(in);
    case LayerType::Elu: return inplace ? torch::elu_(in, L.alpha) : torch::elu(in, L.alpha);
    case LayerType::Softplus: return torch::softplus(in);
    case LayerType::Mish: return torch::mish(in);
    case LayerType::Gelu: return torch::gelu(in);
    case LayerType::PReLU: return modules_[i].forward(in);
    case LayerType::Sigmoid: return inplace ? torch::sigmoid_(in) : torch::sigmoid(in);
    case LayerType::HardSigmoid: return torch::clamp(in * L.alpha + L.beta, 0, 1);  // ONNX's form, any alpha and beta
    case LayerType::MaxPool: {
      const Layer::Window W = L.window();
      return torch::max_pool2d(in, W.kernel, W.stride, W.padding, 1, L.ceil);
    }
    case LayerType::AvgPool: {
      const Layer::Window W = L.window();
      return torch::avg_pool2d(in, W.kernel, W.stride, W.padding, L.ceil, L.include_pad);
    }
    // adaptive_avg_pool2d, not mean(): its backward keeps the channels-last layout, mean's expands.
    case LayerType::GlobalAvgPool: {
      auto pooled = torch::adaptive_avg_pool2d(in, {1, 1});
      return L.keep_dims ? pooled : pooled.flatten(1);
    }
    case LayerType::GlobalMaxPool: {
      auto pooled = torch::adaptive_max_pool2d(in, {1, 1});
      return L.keep_dims ? std::get<0>(pooled) : std::get<0>(pooled).flatten(1);
    }
    case LayerType::Flatten: return in.flatten(1);
    case LayerType::Unflatten: return in.view({in.size(0), in.size(1), 1, 1});
    case LayerType::Dropout: return torch::dropout(in, L.dropout, is_training());
    case LayerType::Add: return in + rest.at(0);
    case LayerType::Mul: return in * rest.at(0);  // broadcasts C,1,1 over C,H,W
    case LayerType::Concat: {
      std::vector<torch::Tensor> all{in};
      all.insert(all.end(), rest.begin(), rest.end());
      return torch::cat(all, 1);
    }
    case LayerType::Shuffle: {  // channel c of group g moves to c * groups + g (ShuffleNet's channel shuffle)
      auto sizes = in.sizes().vec();
      sizes[1] /= L.groups;
      sizes.insert(sizes.begin() + 1, L.groups);
      return in.reshape(sizes).transpose(1, 2).flatten(1, 2);
    }
    case LayerType::Slice: return in.narrow(1, L.start, L.end - L.start);
  }
  return in;
}

}  // namespace shrink
