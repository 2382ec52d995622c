// The `shrink` commands in one table: each command's syntax (flags with their rules), the config
// keys it takes (when it takes any) and its run function. The job commands come from the job
// table (jobs/jobs.h). main(), --help and the tests that try bad values on every option all read
// this one table. A command only turns its arguments into a call of jobs/ and returns the text
// to print; jobs print their progress as they run.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "common/config.h"

namespace shrink {

struct Command {
  CommandLine line;
  std::function<void(Keys&)> keys;           // the config keys it takes (empty: none)
  std::function<std::string(const Args&)> run;  // returns what it prints
};

const std::vector<Command>& shrink_commands();
// Runs `shrink WORDS...` (without the program name); user errors are thrown as UserError.
int run_shrink(const std::vector<std::string>& words);

}  // namespace shrink
