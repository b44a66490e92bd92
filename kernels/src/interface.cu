// The interface's own description for callers outside C++ (ctypes, other languages): its version and
// the sizes of its structures, so that a binding can refuse a library built from other headers.
#include "jetmoe/kernels.h"

#include <cstring>

int jk_abi_version(void) { return JK_ABI_VERSION; }

size_t jk_struct_size(const char* name) {
  if (name == nullptr) return 0;
  struct Entry {
    const char* name;
    size_t size;
  };
  static const Entry kSizes[] = {
      {"jk_runtime_info_t", sizeof(jk_runtime_info_t)},
      {"jk_attention_shape_t", sizeof(jk_attention_shape_t)},
      {"jk_adamw_tensor_t", sizeof(jk_adamw_tensor_t)},
      {"jk_adamw_hyper_t", sizeof(jk_adamw_hyper_t)},
      {"jk_layer_weights_t", sizeof(jk_layer_weights_t)},
      {"jk_layer_grads_t", sizeof(jk_layer_grads_t)},
      {"jk_layer_profile_t", sizeof(jk_layer_profile_t)},
      {"jk_layer_config_t", sizeof(jk_layer_config_t)},
      {"jk_model_config_t", sizeof(jk_model_config_t)},
      {"jk_model_weights_t", sizeof(jk_model_weights_t)},
      {"jk_model_grads_t", sizeof(jk_model_grads_t)},
      {"jk_model_batch_t", sizeof(jk_model_batch_t)},
      {"jk_router_outputs_t", sizeof(jk_router_outputs_t)},
  };
  for (const Entry& e : kSizes)
    if (std::strcmp(e.name, name) == 0) return e.size;
  return 0;
}
