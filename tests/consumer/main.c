#include <shrink_runtime.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  shrink_model* m = NULL;
  if (shrink_model_load(argv[1], 1, &m) != 0) {
    printf("error: %s\n", shrink_last_error());
    return 1;
  }
  int64_t n = shrink_model_input_size(m), classes = shrink_model_classes(m);
  float* x = calloc((size_t)n, sizeof(float));
  float* y = calloc((size_t)classes, sizeof(float));
  int rc = shrink_model_predict(m, x, 1, y);
  printf("c ok: rc %d, %lld classes\n", rc, (long long)classes);
  shrink_model_free(m);
  free(x);
  free(y);
  return rc;
}
