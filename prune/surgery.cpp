#include "prune/surgery.h"

#include <fmt/format.h>

#include <numeric>
#include <optional>
#include <set>

#include "common/error.h"
#include "prune/masks.h"

namespace shrink {
namespace {

using Kept = std::map<int, std::vector<int64_t>>;  // a pruned space's kept channels

// The channel space of every layer's output, merged across residual adds and multiplies; a
// concat's space is its inputs' spaces one after the other.
struct Spaces {
  std::vector<int> parent;
  std::vector<int> of_layer;          // space of each layer's output
  std::vector<int64_t> block;         // features per channel in each layer's output (H*W after flatten)
  std::set<int> locked;
  std::map<int, std::vector<std::pair<int, int64_t>>> parts;  // a concat's space: its inputs' spaces and channel counts
  int input = 0;

  int make() {
    parent.push_back(static_cast<int>(parent.size()));
    return parent.back();
  }
  int find(int s) { return s < 0 ? s : parent[s] == s ? s : parent[s] = find(parent[s]); }
  void unite(int a, int b) { parent[find(a)] = find(b); }
  bool prunable(int s) { return s >= 0 && !locked.count(find(s)); }

  // The channels of `space` that stay: a pruned space's own, or a concat's parts' one after the
  // other; nothing when none of them is cut.
  std::optional<std::vector<int64_t>> kept_channels(int space, const Kept& kept) {
    int s = find(space);
    if (auto it = kept.find(s); it != kept.end()) return it->second;
    auto p = parts.find(s);
    if (p == parts.end()) return std::nullopt;
    std::vector<int64_t> out;
    bool cut = false;
    int64_t offset = 0;
    for (const auto& [part, channels] : p->second) {
      auto k = kept_channels(part, kept);
      cut = cut || k.has_value();
      for (int64_t c = 0; c < channels; ++c)
        if (!k || std::binary_search(k->begin(), k->end(), c)) out.push_back(offset + c);
      offset += channels;
    }
    return cut ? std::optional(out) : std::nullopt;
  }

  // A locked concat locks its parts (their channels are its channels).
  void lock_parts_of_locked_concats() {
    for (bool changed = true; changed;) {
      changed = false;
      for (const auto& [concat, ps] : parts)
        if (locked.count(find(concat)))
          for (const auto& [part, channels] : ps) changed = locked.insert(find(part)).second || changed;
    }
  }
};

// Whether a kind maps a zero channel to zero (a masked filter's channel stays zero through it).
bool keeps_zero(LayerType t) {
  switch (t) {
    case LayerType::Sigmoid:
    case LayerType::HardSigmoid: return false;  // f(0) = 0.5
    case LayerType::Softplus: return false;     // f(0) = log 2
    case LayerType::Conv2d:
    case LayerType::Linear:
    case LayerType::BatchNorm:  // its rows are masked too
    case LayerType::ReLU:
    case LayerType::ReLU6:
    case LayerType::HardSwish:
    case LayerType::LeakyReLU:
    case LayerType::Tanh:
    case LayerType::Elu:
    case LayerType::Mish:
    case LayerType::Gelu:
    case LayerType::PReLU:
    case LayerType::MaxPool:
    case LayerType::AvgPool:
    case LayerType::GlobalAvgPool:
    case LayerType::GlobalMaxPool:
    case LayerType::Flatten:
    case LayerType::Unflatten:
    case LayerType::Dropout:
    case LayerType::Add:
    case LayerType::Mul:
    case LayerType::Concat:
    case LayerType::Shuffle:
    case LayerType::Slice: return true;
  }
  return true;
}

Spaces trace_spaces(const ModelSpec& spec) {
  auto info = analyze(spec);
  Spaces sp;
  sp.input = sp.make();
  std::vector<int> locked_raw{sp.input};
  auto space_in = [&](const Layer& L, size_t k) { return L.inputs[k].empty() ? sp.input : sp.of_layer[spec.index_of(L.inputs[k])]; };
  auto block_in = [&](const Layer& L) { return L.inputs[0].empty() ? int64_t(1) : sp.block[spec.index_of(L.inputs[0])]; };
  auto channels_in = [&](const Layer& L, size_t k) { return L.inputs[k].empty() ? spec.input[0] : info[spec.index_of(L.inputs[k])].out_shape[0]; };
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    int in = space_in(L, 0), out = in;
    int64_t block = block_in(L);
    switch (traits(L.type).channels) {  // spec/layer_kinds.h: how the kind's channels follow its inputs'
      case Channels::Own:
        block = 1;
        if (L.type == LayerType::Conv2d && L.depthwise) break;  // one filter per channel: channel c stays c
        out = sp.make();  // a conv's filters, a linear's output features
        if (L.groups > 1) locked_raw.insert(locked_raw.end(), {in, out});
        break;
      case Channels::Tie: {
        int other = space_in(L, 1);
        // Channels tied to a concat's would have to be cut in all of its parts alike: kept whole.
        if (sp.parts.count(sp.find(in)) || sp.parts.count(sp.find(other))) locked_raw.insert(locked_raw.end(), {in, other});
        sp.unite(other, in);
        break;
      }
      case Channels::Concat:
        out = sp.make();
        for (size_t k = 0; k < L.inputs.size(); ++k) sp.parts[out].push_back({space_in(L, k), channels_in(L, k)});
        if (info[i].out_shape.size() != 3) locked_raw.push_back(out);  // features: blocks may differ per part
        block = 1;
        break;
      case Channels::Reorder:  // channel c of its output is not channel c of its input: both kept whole
        out = sp.make();
        locked_raw.insert(locked_raw.end(), {in, out});
        break;
      case Channels::Flatten: block = info[i].in_shape.size() == 3 ? info[i].in_shape[1] * info[i].in_shape[2] : block; break;
      case Channels::Follow:
        if (info[i].in_shape.size() == 3 && info[i].out_shape.size() == 1) block = 1;  // gap: C,H,W -> C
        break;
    }
    sp.of_layer.push_back(out);
    sp.block.push_back(block);
  }
  // A removed channel is gone, a masked one is zero: through a kind that does not keep zero the
  // masked model would pass on a constant the removed one does not, unless the only reader is a
  // mul by the channel it is tied to (squeeze-excite's gate; of linear layers, through the
  // unflatten that makes their features an image's channels).
  auto only_reader = [&](const std::string& name) -> const Layer* {
    const Layer* found = nullptr;
    for (const Layer& L : spec.layers)
      for (const auto& in : L.inputs)
        if (in == name) {
          if (found) return nullptr;
          found = &L;
        }
    return found;
  };
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    if (keeps_zero(spec.layers[i].type)) continue;
    const Layer* reader = only_reader(spec.layers[i].name);
    if (reader && reader->type == LayerType::Unflatten) reader = only_reader(reader->name);
    if (!(reader && reader->type == LayerType::Mul)) locked_raw.push_back(sp.of_layer[i]);
  }
  locked_raw.push_back(sp.of_layer.back());  // the model's output
  for (int s : locked_raw)
    if (s >= 0) sp.locked.insert(sp.find(s));
  sp.lock_parts_of_locked_concats();
  return sp;
}

torch::Tensor param(SpecNet& model, const std::string& name) {
  auto params = model->named_parameters();
  return params.contains(name) ? params[name] : torch::Tensor();
}

// Rows of `t` (dim 0 or 1) kept: channels of `keep`, each spanning `block` consecutive entries.
torch::Tensor select(const torch::Tensor& t, int64_t dim, const std::vector<int64_t>& keep, int64_t block) {
  std::vector<int64_t> idx;
  for (int64_t c : keep)
    for (int64_t j = 0; j < block; ++j) idx.push_back(c * block + j);
  return t.index_select(dim, torch::tensor(idx, torch::kInt64));
}

// Layer L's parameter `t` (its weight or bias) cut to the kept channels: output channels (rows)
// to `keep_out`, a conv's or linear's weight columns to `keep_in` (each `in_block` entries wide).
torch::Tensor cut_to_kept(const Layer& L, bool is_weight, torch::Tensor t, const std::vector<int64_t>* keep_out,
                          const std::vector<int64_t>* keep_in, int64_t in_block) {
  switch (L.type) {
    case LayerType::Conv2d:
      if (keep_out) t = select(t, 0, *keep_out, 1);
      if (is_weight && !L.depthwise && keep_in) t = select(t, 1, *keep_in, 1);
      return t;
    case LayerType::BatchNorm: return keep_out ? select(t, 0, *keep_out, 1) : t;
    case LayerType::PReLU: return keep_out && L.per_channel ? select(t, 0, *keep_out, 1) : t;  // one slope for all: nothing to cut
    case LayerType::Linear:
      if (keep_out) t = select(t, 0, *keep_out, 1);
      if (is_weight && keep_in) t = select(t, 1, *keep_in, in_block);
      return t;
    SHRINK_CASES_WITHOUT_PARAMETERS return t;  // no parameters
  }
  return t;
}

// Whether row c of a kind's parameters belongs to its output channel c (what mask_filters zeros).
bool rows_are_channels(LayerType t) {
  switch (t) {
    case LayerType::Conv2d:
    case LayerType::Linear:
    case LayerType::BatchNorm: return true;
    case LayerType::PReLU: return false;   // a zero channel stays zero through it: its slope needs no mask
    SHRINK_CASES_WITHOUT_PARAMETERS return false;
  }
  return false;
}

}  // namespace

FilterPlan plan_filter_pruning(SpecNet& model, const FilterPruning& o) {
  const ModelSpec& spec = model->spec();
  Spaces sp = trace_spaces(spec);
  for (const auto& name : o.excluded) sp.locked.insert(sp.find(sp.of_layer[spec.index_of(name)]));
  sp.lock_parts_of_locked_concats();
  for (const auto& [name, r] : o.layer_ratio)
    if (!has_weights(spec.layer(name).type)) throw UserError(fmt::format("prune: '{}' is not a conv or linear layer", name));
  // Per space: the convs and linears producing it and each filter's importance (a linear's
  // output feature: its row): its mean |w| summed over them, or the LAMP score of its L2 norm.
  std::map<int, std::vector<std::string>> producers;
  std::map<int, torch::Tensor> importance;
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    int s = sp.find(sp.of_layer[i]);
    if (!has_weights(L.type) || L.depthwise || !sp.prunable(s)) continue;
    producers[s].push_back(L.name);
    auto w = param(model, L.name + ".weight").detach().flatten(1);
    auto filter = o.lamp ? w.square().sum(1) : w.abs().mean(1);  // LAMP: squared L2 norms, summed over a space's producers
    importance[s] = importance.count(s) ? importance[s] + filter : filter;
  }
  if (o.lamp)
    for (auto& [s, imp] : importance) imp = lamp_scores(imp.sqrt());
  std::map<int, std::vector<int64_t>> keep;
  auto keep_top = [](const torch::Tensor& score, int64_t n) {
    auto idx = std::get<1>(score.topk(n));
    auto sorted = std::get<0>(idx.sort());
    return std::vector<int64_t>(sorted.data_ptr<int64_t>(), sorted.data_ptr<int64_t>() + n);
  };
  // Global: one threshold over the filters of every space a conv produces, at least one filter
  // left per space. A space of linear features alone is cut by its own share even then: a row's
  // mean |w| scales with 1/sqrt(fan-in), and a linear's fan-in (hundreds of features) dwarfs a
  // conv filter's (9 taps of one channel), so one threshold would empty it. LAMP scores are blind
  // to a layer's scale (masks.h): with them every space is ranked together.
  const auto ranked_globally = [&](int s) {
    if (!o.global) return false;
    if (o.lamp) return true;
    for (const auto& p : producers[s])
      if (spec.layer(p).type == LayerType::Conv2d) return true;
    return false;
  };
  std::vector<torch::Tensor> all;
  for (const auto& [s, imp] : importance)
    if (ranked_globally(s)) all.push_back(imp);
  double threshold = 0;
  if (!all.empty()) {
    auto scores = torch::cat(all);
    int64_t n_keep = std::max<int64_t>(1, std::llround((1 - o.ratio) * scores.numel()));
    threshold = std::get<0>(scores.topk(n_keep)).min().item<double>();
  }
  for (const auto& [s, imp] : importance) {
    if (ranked_globally(s)) {
      keep[s] = keep_top(imp, std::max<int64_t>(1, (imp >= threshold).sum().item<int64_t>()));
      continue;
    }
    double ratio = o.ratio;
    for (const auto& p : producers[s])
      if (o.layer_ratio.count(p)) ratio = o.layer_ratio.at(p);
    keep[s] = keep_top(imp, std::max<int64_t>(1, std::llround((1 - ratio) * imp.numel())));
  }
  FilterPlan plan;
  for (const auto& [s, names] : producers)
    for (const auto& name : names) plan.keep[name] = keep[s];
  return plan;
}

namespace {

// The kept channels of each pruned space, found through the plan's producer convs.
Kept kept_by_space(const ModelSpec& spec, Spaces& sp, const FilterPlan& plan) {
  Kept out;
  for (const auto& [name, keep] : plan.keep) out[sp.find(sp.of_layer[spec.index_of(name)])] = keep;
  return out;
}

}  // namespace

SpecNet remove_filters(SpecNet& model, const FilterPlan& plan) {
  const ModelSpec& spec = model->spec();
  Spaces sp = trace_spaces(spec);
  Kept kept = kept_by_space(spec, sp, plan);
  std::map<int, std::optional<std::vector<int64_t>>> channels;  // per space, worked out once
  auto keep_of = [&](int space) -> const std::vector<int64_t>* {
    auto it = channels.find(space);
    if (it == channels.end()) it = channels.emplace(space, sp.kept_channels(space, kept)).first;
    return it->second ? &*it->second : nullptr;
  };
  ModelSpec smaller = spec;
  for (size_t i = 0; i < spec.layers.size(); ++i)
    if (has_weights(spec.layers[i].type) && !spec.layers[i].depthwise && keep_of(sp.of_layer[i]))
      smaller.layers[i].out = static_cast<int64_t>(keep_of(sp.of_layer[i])->size());
  SpecNet out(smaller);
  auto info = analyze(spec);
  torch::NoGradGuard no_grad;
  auto src = model->named_parameters(), src_buffers = model->named_buffers();
  auto dst = out->named_parameters(), dst_buffers = out->named_buffers();
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    int in_space = L.inputs[0].empty() ? sp.input : sp.of_layer[spec.index_of(L.inputs[0])];
    int64_t in_block = L.inputs[0].empty() ? 1 : sp.block[spec.index_of(L.inputs[0])];
    if (L.type == LayerType::Linear && info[i].in_shape.size() == 3) in_block = info[i].in_shape[1] * info[i].in_shape[2];  // flattens itself
    const auto* keep_out = keep_of(sp.of_layer[i]);
    const auto* keep_in = keep_of(in_space);
    auto copy = [&](const std::string& key, torch::Tensor t, bool buffer) {
      (buffer ? dst_buffers[key] : dst[key]).copy_(t);
    };
    for (const char* part : {".weight", ".bias"}) {
      std::string key = L.name + part;
      if (!src.contains(key)) continue;
      copy(key, cut_to_kept(L, std::string(part) == ".weight", src[key].detach(), keep_out, keep_in, in_block), false);
    }
    if (L.type == LayerType::BatchNorm) {
      for (const char* part : {".running_mean", ".running_var"}) {
        auto t = src_buffers[L.name + part];
        copy(L.name + part, keep_out ? select(t, 0, *keep_out, 1) : t, true);
      }
      copy(L.name + ".num_batches_tracked", src_buffers[L.name + ".num_batches_tracked"], true);
    }
  }
  return out;
}

void mask_filters(SpecNet& model, const FilterPlan& plan) {
  const ModelSpec& spec = model->spec();
  Spaces sp = trace_spaces(spec);
  Kept kept = kept_by_space(spec, sp, plan);
  torch::NoGradGuard no_grad;
  auto params = model->named_parameters();
  for (size_t i = 0; i < spec.layers.size(); ++i) {
    const Layer& L = spec.layers[i];
    auto keep = rows_are_channels(L.type) ? sp.kept_channels(sp.of_layer[i], kept) : std::nullopt;
    if (!keep) continue;
    auto removed = torch::ones({params[L.name + ".weight"].size(0)}, torch::kBool);
    removed.index_fill_(0, torch::tensor(*keep, torch::kInt64), false);
    for (const char* part : {".weight", ".bias"})
      if (params.contains(L.name + part)) params[L.name + part].index_put_({removed}, 0);
  }
}

}  // namespace shrink
