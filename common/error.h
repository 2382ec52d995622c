// Errors a user can cause (bad config, bad data, bad model file). The CLI prints the message
// as one line and exits with code 2; anything else that escapes is a bug.
#pragma once
#include <new>
#include <stdexcept>
#include <string>

namespace shrink {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A failed allocation (std::bad_alloc, or LibTorch's CPU allocator, which throws its own error
// saying how much it tried) as one line for the user; empty for any other exception. Sizes the
// user chose (data.shape, a batch, a file's claimed dimensions) cause these: not bugs.
inline std::string out_of_memory_message(const std::exception& e) {
  if (dynamic_cast<const std::bad_alloc*>(&e)) return "out of memory";
  const std::string what = e.what();
  const size_t at = what.find("you tried to allocate");
  if (what.find("can't allocate memory") == std::string::npos || at == std::string::npos) return "";
  return "out of memory: " + what.substr(at, what.find_first_of(".\n", at) - at);
}

}  // namespace shrink
