// Exists only so CMake has something to attach the shared precompiled header to.
