// The Catch2 runner of every test binary (shrink_tests, runtime_tests, cli_tests): one object
// compiled once per tree, without optimization (tests/CMakeLists.txt): it is Catch's whole
// implementation, the slowest file of the tree to compile, and none of it is under test.
// Catch2 macros are prefixed (CATCH_CHECK) because torch defines its own CHECK. shrink_tests'
// own start (one torch thread, a fixed seed, malloc settings) is a static initializer in
// tests/helpers.cpp.
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

int main(int argc, char** argv) { return Catch::Session().run(argc, argv); }
