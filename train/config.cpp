#include "train/config.h"

#include <fmt/format.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/error.h"

namespace shrink {
namespace {

std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// Finds "section.key" -> line number in INI text, and checks the syntax line by line
// (Boost's own message for a bad line does not say which line).
std::map<std::string, int> scan_ini(const std::string& text, const std::string& origin) {
  std::map<std::string, int> lines;
  std::istringstream in(text);
  std::string line, section;
  for (int n = 1; std::getline(in, line); ++n) {
    std::string t = trim(line);
    if (t.empty() || t[0] == '#' || t[0] == ';') continue;
    if (t[0] == '[') {
      if (t.back() != ']') throw UserError(fmt::format("{}:{}: expected a section like [train], got '{}'", origin, n, t));
      section = trim(t.substr(1, t.size() - 2));
      continue;
    }
    size_t eq = t.find('=');
    if (eq == std::string::npos) throw UserError(fmt::format("{}:{}: expected 'key = value', got '{}'", origin, n, t));
    std::string key = trim(t.substr(0, eq));
    lines[section.empty() ? key : section + "." + key] = n;
  }
  return lines;
}

std::string option_name(const po::error_with_option_name& e) {
  std::string name = e.get_option_name();
  while (!name.empty() && name[0] == '-') name.erase(0, 1);
  return name.substr(0, name.find('='));
}

std::string value_string(const boost::any& v) {
  if (v.empty()) return "";
  if (auto p = boost::any_cast<std::string>(&v)) return *p;
  if (auto p = boost::any_cast<int64_t>(&v)) return std::to_string(*p);
  if (auto p = boost::any_cast<double>(&v)) return fmt::format("{}", *p);
  if (auto p = boost::any_cast<bool>(&v)) return *p ? "true" : "false";
  if (auto p = boost::any_cast<int>(&v)) return std::to_string(*p);
  return "?";
}

}  // namespace

Config Config::load(const po::options_description& keys, const std::string& file, const std::vector<std::string>& args) {
  std::string text;
  if (!file.empty()) {
    std::ifstream in(file);
    if (!std::filesystem::is_regular_file(file) || !in) throw UserError(fmt::format("config file {}: no such file", file));
    std::stringstream buffer;
    buffer << in.rdbuf();
    text = buffer.str();
  }
  return layered(keys, text, file, args);
}

Config Config::layered(const po::options_description& keys, const std::string& text, const std::string& origin,
                       const std::vector<std::string>& args) {
  Config c;
  c.keys_ = &keys;
  // Command line first: po::store keeps the first value it sees, so the command line wins.
  try {
    auto style = po::command_line_style::unix_style & ~po::command_line_style::allow_guessing;
    auto parsed = po::command_line_parser(args).options(keys).style(style).run();
    for (const auto& o : parsed.options) {
      if (o.string_key.empty()) throw UserError(fmt::format("unexpected argument '{}'", o.original_tokens.empty() ? "" : o.original_tokens[0]));
      c.origin_[o.string_key] = "command line";
    }
    po::store(parsed, c.vm_);
  } catch (const po::unknown_option& e) {
    throw UserError(fmt::format("command line: unknown key '{}' (see --help for the keys)", option_name(e)));
  } catch (const po::error& e) {
    throw UserError(fmt::format("command line: {}", e.what()));
  }
  Config base = from_text(keys, text, origin);
  for (const auto& [key, value] : base.vm_) {
    auto it = c.vm_.find(key);
    if (it != c.vm_.end() && !it->second.defaulted()) continue;
    if (it != c.vm_.end()) c.vm_.erase(it);
    c.vm_.insert({key, value});
    if (!value.defaulted()) c.origin_[key] = base.where(key);
  }
  po::notify(c.vm_);
  return c;
}

Config Config::from_text(const po::options_description& keys, const std::string& text, const std::string& origin) {
  Config c;
  c.keys_ = &keys;
  auto lines = scan_ini(text, origin);
  auto where = [&](const std::string& key) { return lines.count(key) ? fmt::format("{}:{}", origin, lines[key]) : origin; };
  try {
    std::istringstream in(text);
    po::store(po::parse_config_file(in, keys, false), c.vm_);
  } catch (const po::unknown_option& e) {
    throw UserError(fmt::format("{}: unknown key '{}' (see --help for the keys)", where(option_name(e)), option_name(e)));
  } catch (const po::error_with_option_name& e) {
    throw UserError(fmt::format("{}: {}", where(option_name(e)), e.what()));
  } catch (const po::error& e) {
    throw UserError(fmt::format("{}: {}", origin, e.what()));
  }
  for (const auto& [key, line] : lines) c.origin_[key] = fmt::format("{}:{}", origin, line);
  po::notify(c.vm_);
  return c;
}

std::string Config::where(const std::string& key) const {
  auto it = origin_.find(key);
  return it == origin_.end() ? "default" : it->second;
}

void Config::fail(const std::string& key, const std::string& message) const {
  std::string value = has(key) ? value_string(vm_.at(key).value()) : "";
  throw UserError(fmt::format("{}: {} = {}: {}", where(key), key, value, message));
}

std::string Config::to_ini() const {
  std::string out, section;
  for (const auto& opt : keys_->options()) {
    const std::string& name = opt->long_name();
    size_t dot = name.find('.');
    if (dot == std::string::npos || !vm_.count(name)) continue;
    std::string sec = name.substr(0, dot);
    if (sec != section) {
      out += (out.empty() ? "" : "\n") + fmt::format("[{}]\n", sec);
      section = sec;
    }
    out += fmt::format("{} = {}\n", name.substr(dot + 1), value_string(vm_.at(name).value()));
  }
  return out;
}

po::typed_value<double>* real_value(double v) { return po::value<double>()->default_value(v, fmt::format("{}", v)); }
po::typed_value<bool>* flag_value(bool v) { return po::value<bool>()->default_value(v, v ? "true" : "false"); }

void add_train_options(po::options_description& keys, const std::string& model_section) {
  OptimConfig o;
  TrainConfig t;
  DataConfig d;
  // clang-format off
  keys.add_options()
    ("job.out", po::value<std::string>()->default_value("runs/default"), "run directory (also --out DIR)")
    ("data.source", po::value<std::string>()->default_value(d.source), "hdf5 | idx | cifar10 | synthetic")
    ("data.path", po::value<std::string>()->default_value(""), "HDF5 file, or folder of IDX / CIFAR-10 files (also --data PATH)")
    ("data.train_split", po::value<std::string>()->default_value(d.train_split), "HDF5 group of the training examples")
    ("data.test_split", po::value<std::string>()->default_value(d.test_split), "HDF5 group of the test examples")
    ("data.shape", po::value<std::string>()->default_value(""), "per-example shape C,H,W (empty: as stored; synthetic: 1,16,16)")
    ("data.classes", po::value<int64_t>()->default_value(d.classes), "number of classes; labels must be in [0, classes)")
    ("data.in_memory", flag_value(d.in_memory), "load the whole dataset; false reads HDF5 batch by batch")
    ("data.val_split", real_value(d.val_split), "share of train held out for validation (picks the best checkpoint)")
    ("data.normalize", po::value<std::string>()->default_value(d.normalize), "none | fixed (data.mean, data.std) | dataset (computed on train)")
    ("data.mean", po::value<std::string>()->default_value(""), "per-channel means for normalize = fixed, e.g. 0.5,0.5,0.5")
    ("data.std", po::value<std::string>()->default_value(""), "per-channel standard deviations for normalize = fixed")
    ("data.shift", po::value<int64_t>()->default_value(d.shift), "random shift of up to this many pixels (pad and random crop)")
    ("data.hflip", flag_value(d.hflip), "random horizontal flips")
    ("data.synthetic_train", po::value<int64_t>()->default_value(d.synthetic_train), "synthetic dataset: training examples")
    ("data.synthetic_test", po::value<int64_t>()->default_value(d.synthetic_test), "synthetic dataset: test examples")
    ("data.seed", po::value<int64_t>()->default_value(0), "seed of the synthetic data and the validation split")
    ((model_section + ".spec").c_str(), po::value<std::string>()->default_value("usps_student"), "preset name or layer string, e.g. 'conv(16) bn relu gap linear(classes)'")
    ((model_section + ".init").c_str(), po::value<std::string>()->default_value(""), "start from this checkpoint's weights (same spec); empty: fresh initialization")
    ("train.epochs", po::value<int64_t>()->default_value(t.epochs), "epochs")
    ("train.batch_size", po::value<int64_t>()->default_value(t.batch_size), "training batch size")
    ("train.eval_batch_size", po::value<int64_t>()->default_value(t.eval_batch_size), "evaluation batch size")
    ("train.seed", po::value<int64_t>()->default_value(t.seed), "seed of initialization, data order and augmentation")
    ("train.threads", po::value<int64_t>()->default_value(t.threads), "LibTorch intra-op threads (0: all cores)")
    ("train.label_smoothing", real_value(t.label_smoothing), "label smoothing of the cross-entropy")
    ("train.grad_clip", real_value(t.grad_clip), "clip the gradient norm to this (0: off)")
    ("train.drop_last", flag_value(t.drop_last), "drop the last incomplete training batch")
    ("train.channels_last", flag_value(t.channels_last), "NHWC memory format (faster convolutions on oneDNN)")
    ("train.prefetch", po::value<int64_t>()->default_value(t.prefetch), "batches prepared ahead on a background thread (0: none)")
    ("train.log_seconds", real_value(t.log_seconds), "interval of progress lines when not on a terminal")
    ("train.keep_epochs", po::value<std::string>()->default_value(""), "also keep checkpoints/epoch-K.pt after these epochs, e.g. 0,2 (0: initial weights; for rewinding)")
    ("optim.name", po::value<std::string>()->default_value(o.name), "sgd | adamw")
    ("optim.lr", real_value(o.lr), "peak learning rate")
    ("optim.momentum", real_value(o.momentum), "SGD momentum")
    ("optim.nesterov", flag_value(o.nesterov), "SGD Nesterov momentum")
    ("optim.weight_decay", real_value(o.weight_decay), "weight decay (decoupled for adamw)")
    ("optim.beta1", real_value(o.beta1), "AdamW beta1")
    ("optim.beta2", real_value(o.beta2), "AdamW beta2")
    ("optim.schedule", po::value<std::string>()->default_value(o.schedule), "constant | step | cosine (per step, to optim.min_lr)")
    ("optim.warmup_epochs", real_value(o.warmup_epochs), "linear warm-up from 0 over this many epochs")
    ("optim.step_epochs", real_value(o.step_epochs), "step schedule: multiply by gamma every this many epochs")
    ("optim.gamma", real_value(o.gamma), "step schedule factor")
    ("optim.min_lr", real_value(o.min_lr), "cosine schedule: final learning rate");
  // clang-format on
}

namespace {

std::vector<double> parse_numbers(const Config& c, const std::string& key) {
  std::vector<double> out;
  std::string text = c.get<std::string>(key);
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    try {
      size_t used = 0;
      out.push_back(std::stod(part, &used));
      if (trim(part.substr(used)).size()) throw std::invalid_argument("");
    } catch (const std::exception&) {
      c.fail(key, "expected comma-separated numbers");
    }
  }
  return out;
}

void one_of(const Config& c, const std::string& key, std::initializer_list<const char*> choices) {
  std::string v = c.get<std::string>(key);
  for (const char* choice : choices)
    if (v == choice) return;
  std::string all;
  for (const char* choice : choices) all += (all.empty() ? "" : ", ") + std::string(choice);
  c.fail(key, "expected one of " + all);
}

}  // namespace

JobConfig read_job_config(const Config& c) {
  JobConfig j;
  j.out = c.get<std::string>("job.out");
  if (j.out.empty()) c.fail("job.out", "the run directory cannot be empty");
  one_of(c, "data.source", {"hdf5", "idx", "cifar10", "synthetic"});
  one_of(c, "data.normalize", {"none", "fixed", "dataset"});
  one_of(c, "optim.name", {"sgd", "adamw"});
  one_of(c, "optim.schedule", {"constant", "step", "cosine"});
  DataConfig& d = j.data;
  d.source = c.get<std::string>("data.source");
  d.path = c.get<std::string>("data.path");
  d.train_split = c.get<std::string>("data.train_split");
  d.test_split = c.get<std::string>("data.test_split");
  std::string shape = c.get<std::string>("data.shape");
  if (!shape.empty()) {
    try {
      d.shape = parse_shape(shape);
    } catch (const UserError& e) {
      c.fail("data.shape", e.what());
    }
  }
  d.classes = c.get<int64_t>("data.classes");
  if (d.classes < 2) c.fail("data.classes", "need at least 2 classes");
  d.in_memory = c.get<bool>("data.in_memory");
  d.val_split = c.get<double>("data.val_split");
  if (!(d.val_split >= 0 && d.val_split < 1)) c.fail("data.val_split", "must be in [0, 1)");
  d.normalize = c.get<std::string>("data.normalize");
  d.mean = parse_numbers(c, "data.mean");
  d.std = parse_numbers(c, "data.std");
  d.shift = c.get<int64_t>("data.shift");
  if (d.shift < 0 || d.shift > 64) c.fail("data.shift", "must be in [0, 64]");
  d.hflip = c.get<bool>("data.hflip");
  d.synthetic_train = c.get<int64_t>("data.synthetic_train");
  d.synthetic_test = c.get<int64_t>("data.synthetic_test");
  if (d.synthetic_train < 1) c.fail("data.synthetic_train", "must be at least 1");
  if (d.synthetic_test < 1) c.fail("data.synthetic_test", "must be at least 1");
  d.seed = static_cast<uint64_t>(c.get<int64_t>("data.seed"));
  std::string section = c.has("model.spec") ? "model" : "student";
  j.model = c.get<std::string>(section + ".spec");
  j.init = c.get<std::string>(section + ".init");

  TrainConfig& t = j.train;
  t.epochs = c.get<int64_t>("train.epochs");
  if (t.epochs < 1) c.fail("train.epochs", "must be at least 1");
  t.batch_size = c.get<int64_t>("train.batch_size");
  if (t.batch_size < 1) c.fail("train.batch_size", "must be at least 1");
  t.eval_batch_size = c.get<int64_t>("train.eval_batch_size");
  if (t.eval_batch_size < 1) c.fail("train.eval_batch_size", "must be at least 1");
  t.seed = c.get<int64_t>("train.seed");
  t.threads = c.get<int64_t>("train.threads");
  if (t.threads < 0 || t.threads > 1024) c.fail("train.threads", "must be in [0, 1024] (0: all cores)");
  t.label_smoothing = c.get<double>("train.label_smoothing");
  if (!(t.label_smoothing >= 0 && t.label_smoothing < 1)) c.fail("train.label_smoothing", "must be in [0, 1)");
  t.grad_clip = c.get<double>("train.grad_clip");
  if (!(t.grad_clip >= 0)) c.fail("train.grad_clip", "must be >= 0");
  t.drop_last = c.get<bool>("train.drop_last");
  t.channels_last = c.get<bool>("train.channels_last");
  t.prefetch = static_cast<int>(c.get<int64_t>("train.prefetch"));
  if (t.prefetch < 0 || t.prefetch > 64) c.fail("train.prefetch", "must be in [0, 64]");
  t.log_seconds = c.get<double>("train.log_seconds");
  for (double e : parse_numbers(c, "train.keep_epochs")) {
    if (e < 0 || e != std::floor(e)) c.fail("train.keep_epochs", "epochs must be whole numbers >= 0");
    t.keep_epochs.push_back(static_cast<int64_t>(e));
  }

  OptimConfig& o = j.optim;
  o.name = c.get<std::string>("optim.name");
  o.lr = c.get<double>("optim.lr");
  if (!(o.lr > 0 && o.lr < 1e6)) c.fail("optim.lr", "must be a positive number");
  o.momentum = c.get<double>("optim.momentum");
  if (!(o.momentum >= 0 && o.momentum < 1)) c.fail("optim.momentum", "must be in [0, 1)");
  o.nesterov = c.get<bool>("optim.nesterov");
  if (o.nesterov && o.momentum == 0 && o.name == "sgd") c.fail("optim.nesterov", "Nesterov needs optim.momentum > 0");
  o.weight_decay = c.get<double>("optim.weight_decay");
  if (!(o.weight_decay >= 0)) c.fail("optim.weight_decay", "must be >= 0");
  o.beta1 = c.get<double>("optim.beta1");
  o.beta2 = c.get<double>("optim.beta2");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) c.fail("optim.beta1", "must be in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) c.fail("optim.beta2", "must be in [0, 1)");
  o.schedule = c.get<std::string>("optim.schedule");
  o.warmup_epochs = c.get<double>("optim.warmup_epochs");
  if (!(o.warmup_epochs >= 0)) c.fail("optim.warmup_epochs", "must be >= 0");
  o.step_epochs = c.get<double>("optim.step_epochs");
  if (!(o.step_epochs > 0)) c.fail("optim.step_epochs", "must be > 0");
  o.gamma = c.get<double>("optim.gamma");
  o.min_lr = c.get<double>("optim.min_lr");
  if (!(o.min_lr >= 0 && o.min_lr <= o.lr)) c.fail("optim.min_lr", "must be in [0, optim.lr]");
  j.resolved_ini = c.to_ini();
  return j;
}

int resolve_threads(int64_t requested) {
  if (requested > 0) return static_cast<int>(requested);
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

}  // namespace shrink
