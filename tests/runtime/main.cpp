// Runtime tests without torch: their own runner (Catch2 macros prefixed, as in tests/main.cpp).
#define CATCH_CONFIG_RUNNER
#define CATCH_CONFIG_PREFIX_ALL
#include <catch2/catch.hpp>

int main(int argc, char** argv) { return Catch::Session().run(argc, argv); }
