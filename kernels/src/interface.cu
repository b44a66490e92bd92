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
#define JK_STRUCT(type) {#type, sizeof(type)}  // the name written once
  static const Entry kSizes[] = {
      JK_STRUCT(jk_runtime_info_t),  JK_STRUCT(jk_attention_shape_t), JK_STRUCT(jk_adamw_tensor_t),
      JK_STRUCT(jk_adamw_hyper_t),   JK_STRUCT(jk_layer_weights_t),   JK_STRUCT(jk_layer_grads_t),
      JK_STRUCT(jk_layer_profile_t), JK_STRUCT(jk_layer_config_t),    JK_STRUCT(jk_model_config_t),
      JK_STRUCT(jk_model_weights_t), JK_STRUCT(jk_model_grads_t),     JK_STRUCT(jk_model_batch_t),
      JK_STRUCT(jk_router_outputs_t),
  };
#undef JK_STRUCT
  for (const Entry& e : kSizes)
    if (std::strcmp(e.name, name) == 0) return e.size;
  return 0;
}
