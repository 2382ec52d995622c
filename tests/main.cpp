// Test runner: deterministic torch on one thread. Catch2 macros are prefixed (CATCH_CHECK)
// because torch defines its own CHECK.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>
#include <torch/torch.h>

int main(int argc, char** argv) {
  torch::set_num_threads(1);
  torch::manual_seed(0);
  return Catch::Session().run(argc, argv);
}
