// The precompiled header of the torch-heavy targets (see CMakeLists.txt).
#pragma once
#include <torch/torch.h>
