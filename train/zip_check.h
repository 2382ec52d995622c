// The CRC-32 of every stored entry of a zip file (a torch archive: checkpoints are ones). LibTorch
// reads its archives without checking them, so a flipped bit in a checkpoint's weights would load
// as different weights, silently. No torch.
#pragma once
#include <string>

namespace shrink {

// Empty when every entry's data matches the CRC-32 its directory records (or the file is not a
// zip: LibTorch's reader reports that itself); else which entry does not, in words.
std::string zip_damage(const std::string& path);

}  // namespace shrink
