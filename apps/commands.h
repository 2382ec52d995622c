// The `shrink` commands in one table: each command's syntax (flags with their rules), the config
// keys of its job (when it takes any) and its run function. main(), --help and the tests that
// try bad values on every option all read this one table.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "common/config.h"

namespace shrink {

struct Command {
  CommandLine line;
  std::function<void(Keys&)> keys;  // the job's config keys (empty: none)
  std::function<int(const Args&)> run;
};

const std::vector<Command>& shrink_commands();
// Runs `shrink WORDS...` (without the program name); user errors are thrown as UserError.
int run_shrink(const std::vector<std::string>& words);

}  // namespace shrink
