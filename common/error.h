// Errors a user can cause (bad config, bad data, bad model file). The CLI prints the message
// as one line and exits with code 2; anything else that escapes is a bug.
#pragma once
#include <stdexcept>
#include <string>

namespace shrink {

struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace shrink
