/* shrink runtime, C API: for embedding from C and other languages. Thread safety as the C++ API
   (shrink/runtime.hpp): shrink_model_predict calls on one model may run in parallel from several
   threads; `threads` at load is the number of OpenMP threads each call uses (0: all cores), set
   per call on the calling thread. Functions return 0 on success, non-zero on failure;
   shrink_last_error() then says why (per thread). */
#ifndef SHRINK_RUNTIME_H
#define SHRINK_RUNTIME_H
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHRINK_C_API __attribute__((visibility("default")))

typedef struct shrink_model shrink_model;

/* 0 and *out a model, or 1, *out NULL and shrink_last_error() saying why. The queries below
   answer 0 (or NULL) for a NULL model. */
SHRINK_C_API int shrink_model_load(const char* path, int threads, shrink_model** out);
/* input: batch * input_size floats; output: batch * classes floats. */
SHRINK_C_API int shrink_model_predict(shrink_model* model, const float* input, int64_t batch, float* output);
SHRINK_C_API int64_t shrink_model_input_size(const shrink_model* model);
SHRINK_C_API int64_t shrink_model_classes(const shrink_model* model);
/* The name of class `index`, or NULL when the file names none (or index is out of range). */
SHRINK_C_API const char* shrink_model_class_name(const shrink_model* model, int64_t index);
/* The stored preprocessing (see shrink/runtime.hpp, Model::preprocessing): 1 when the model was
   trained on 8-bit images scaled to [0,1], else 0; and the per-channel normalization that
   predict applies: writes up to `capacity` means and stds, returns the channel count (0: none). */
SHRINK_C_API int shrink_model_image_input(const shrink_model* model);
SHRINK_C_API int64_t shrink_model_normalization(const shrink_model* model, float* mean, float* std, int64_t capacity);
SHRINK_C_API void shrink_model_free(shrink_model* model);
SHRINK_C_API const char* shrink_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
