// libFuzzer target: the model file reader on arbitrary bytes must reject or accept, never crash
// or read out of bounds (built with AddressSanitizer by tests/fuzz/run).
#include <cstddef>
#include <cstdint>

#include "runtime/model_file.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    shrink::rt::parse_model_file(data, size, "fuzz");
  } catch (const shrink::rt::Error&) {
  }
  return 0;
}
