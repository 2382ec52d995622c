// The shrink command line (the commands are in apps/commands.cpp). User errors (a bad .shrink
// file given to compare is one, out of memory another) print one line and exit 2; anything else
// that escapes is a bug (exit 1).
#include <iostream>

#include "apps/commands.h"
#include "common/error.h"
#include "shrink/runtime.hpp"

int main(int argc, char** argv) {
  try {
    return shrink::run_shrink(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const shrink::UserError& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const shrink::rt::Error& e) {
    std::cerr << "error: " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    if (const std::string oom = shrink::out_of_memory_message(e); !oom.empty()) {
      std::cerr << "error: " << oom << std::endl;
      return 2;
    }
    std::cerr << "internal error (a bug; please report): " << e.what() << std::endl;
    return 1;
  }
}
