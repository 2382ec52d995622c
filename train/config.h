// Job configuration: INI file + command-line overrides with the same key names
// (--optim.lr=0.01 overrides [optim] lr). Every key is declared with its type, default and
// meaning; unknown keys and bad values are UserErrors naming the key and where it was set.
#pragma once
#include <boost/program_options.hpp>

#include <map>
#include <string>
#include <vector>

#include "datasets/data.h"
#include "train/spec.h"

namespace shrink {

namespace po = boost::program_options;

class Config {
 public:
  // `args` are the --key=value words of the command line; `file` may be empty.
  static Config load(const po::options_description& keys, const std::string& file, const std::vector<std::string>& args);
  // The same with the INI text given directly (e.g. a config saved in a checkpoint).
  static Config layered(const po::options_description& keys, const std::string& text, const std::string& origin,
                        const std::vector<std::string>& args);
  // Parses a resolved config saved earlier (in a run directory or checkpoint).
  static Config from_text(const po::options_description& keys, const std::string& text, const std::string& origin);

  template <class T>
  T get(const std::string& key) const {
    return vm_.at(key).as<T>();
  }
  bool has(const std::string& key) const { return vm_.count(key) > 0; }
  // Where a key got its value: "FILE:LINE", "command line" or "default".
  std::string where(const std::string& key) const;
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;
  // The resolved config as INI text, one [section] per key prefix, every key present.
  std::string to_ini() const;

 private:
  po::variables_map vm_;
  const po::options_description* keys_ = nullptr;
  std::map<std::string, std::string> origin_;
};

// Option values whose defaults print as written ("0.05", "true"; Boost would print
// 0.050000000000000003 and 1).
po::typed_value<double>* real_value(double v);
po::typed_value<bool>* flag_value(bool v);

// Keys of the training job (job.*, data.*, model.*, train.*, optim.*). The model's keys (spec,
// init) go in `model_section`: "model" for train, "student" for distill.
void add_train_options(po::options_description& keys, const std::string& model_section = "model");

struct OptimConfig {
  std::string name = "sgd";          // sgd | adamw
  double lr = 0.05, momentum = 0.9, weight_decay = 5e-4, beta1 = 0.9, beta2 = 0.999;
  bool nesterov = true;
  std::string schedule = "cosine";   // constant | step | cosine
  double warmup_epochs = 0, step_epochs = 30, gamma = 0.1, min_lr = 0;
};

struct TrainConfig {
  int64_t epochs = 20, batch_size = 128, eval_batch_size = 512, seed = 0, threads = 0;
  double label_smoothing = 0, grad_clip = 0;
  bool drop_last = false, channels_last = true;
  int prefetch = 2;
  double log_seconds = 10;  // plain progress line interval when not on a terminal
  std::vector<int64_t> keep_epochs;  // also keep checkpoints/epoch-K.pt after these epochs (0: the initial weights)
};

struct JobConfig {
  std::string out;
  std::string model;  // spec text or preset name
  std::string init;   // checkpoint whose weights the model starts from (empty: fresh init)
  DataConfig data;
  TrainConfig train;
  OptimConfig optim;
  std::string resolved_ini;
};

// Reads and checks the typed job settings (choices, ranges); errors name the key.
JobConfig read_job_config(const Config& config);
// Threads to use: `requested` if > 0, else all cores.
int resolve_threads(int64_t requested);

}  // namespace shrink
