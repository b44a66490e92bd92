#include "core/build_info.hpp"

#include <dlfcn.h>

#include <cstdint>
#include <sstream>

#include <KokkosKernels_config.h>

#include "core/kokkos_compat.hpp"
#include "jetmoe/build_config.hpp"
#include "jetmoe/revision.hpp"
#include "parallel/comm.hpp"

#if JETMOE_HAVE_HDF5
#include <hdf5.h>
#endif
#if JETMOE_HAVE_CUDA_KERNELS
#include "jetmoe/kernels.h"
#endif
#if JETMOE_HAVE_NCCL
#include <nccl.h>
#endif

namespace jetmoe {

namespace {

std::string hdf5_text() {
#if JETMOE_HAVE_HDF5
  unsigned major = 0, minor = 0, release = 0;
  H5get_libversion(&major, &minor, &release);
  std::string s = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
#ifdef H5_HAVE_PARALLEL
  s += " (parallel, MPI-IO)";
#else
  s += " (serial)";
#endif
  return s;
#else
  return "not built (JETMOE_ENABLE_HDF5=OFF): no checkpoints";
#endif
}

std::string cuda_text() {
#if JETMOE_HAVE_CUDA_KERNELS
  std::ostringstream s;
  s << "kernels/ compiled by nvcc " << JETMOE_CUDA_COMPILER_VERSION << " for CUDA architectures " << jk_compiled_architectures();
  jk_runtime_info_t info{};
  if (jk_runtime_info(&info) == cudaSuccess) {
    s << "; runtime " << info.runtime_version / 1000 << "." << info.runtime_version % 1000 / 10;
    if (info.driver_version == 0) s << ", no CUDA driver";
    else s << ", driver " << info.driver_version / 1000 << "." << info.driver_version % 1000 / 10;
    if (info.device_count == 0) s << ", no CUDA device";
    else
      s << ", " << info.device_count << " device(s), device 0: " << info.device_name << " (sm_" << info.sm_major
        << info.sm_minor << (info.kernel_image_ok ? "" : ", kernels cannot run on it") << ")";
  }
#if defined(KOKKOS_ENABLE_CUDA)
  s << "; used by the Kokkos CUDA backend";
#else
  s << "; not used by this build (Kokkos has no CUDA backend)";
#endif
  return s.str();
#else
  return "not built (no CUDA toolkit or JETMOE_ENABLE_CUDA=OFF)";
#endif
}

std::string nccl_text() {
#if JETMOE_HAVE_NCCL
  int version = 0;
  ncclGetVersion(&version);
  return "NCCL " + std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
         std::to_string(version % 100);
#else
  return "not built (JETMOE_ENABLE_NCCL=OFF)";
#endif
}

std::string revision() {
  const std::string r = JETMOE_GIT_REVISION;
  return r.empty() ? "unknown revision" : r;
}

// A function of the BLAS library in this process, if it has one by that name.
template <class Fn>
Fn blas_symbol(const char* name) {
  return reinterpret_cast<Fn>(dlsym(RTLD_DEFAULT, name));
}

}  // namespace

HostBlas host_blas() {
  HostBlas b;
  using CharFn = char* (*)();
  using IntFn = int (*)();
  if (auto corename = blas_symbol<CharFn>("openblas_get_corename")) {
    b.library = "OpenBLAS";
    b.core = corename();
    if (auto config = blas_symbol<CharFn>("openblas_get_config")) {
      b.config = config();  // "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64"
      std::istringstream words(b.config);
      std::string name;
      words >> name >> b.version;
    }
    if (auto threads = blas_symbol<IntFn>("openblas_get_num_threads")) b.threads = threads();
  } else if (auto mkl_version = blas_symbol<void (*)(char*, int)>("MKL_Get_Version_String")) {
    b.library = "MKL";
    char text[256] = {};
    mkl_version(text, int(sizeof text));
    b.version = text;
    if (auto threads = blas_symbol<IntFn>("MKL_Get_Max_Threads")) b.threads = threads();
  } else if (auto blis_version = blas_symbol<CharFn>("bli_info_get_version_str")) {
    b.library = "BLIS";
    b.version = blis_version();
    if (auto threads = blas_symbol<std::int64_t (*)()>("bli_thread_get_num_threads")) b.threads = int(threads());
  } else {
    b.library = JETMOE_BLAS_LIBRARIES;
  }
  return b;
}

std::string HostBlas::describe() const {
  std::string s = library + (version.empty() ? "" : " " + version);
  std::string details = core.empty() ? "" : "core " + core;
  if (!details.empty()) details += ", ";
  details += threads > 0 ? std::to_string(threads) + (threads == 1 ? " thread" : " threads") : "thread count unknown";
  return s + " (" + details + ")";
}

std::string gpu_model() {
#if JETMOE_HAVE_CUDA_KERNELS
  jk_runtime_info_t info{};
  if (jk_runtime_info(&info) == cudaSuccess && info.device_count > 0)
    return std::string(info.device_name) + " (sm_" + std::to_string(info.sm_major) + std::to_string(info.sm_minor) + ")";
#endif
  return "";
}

std::string cuda_kernels_description(const std::string& gpu_kernels) {
  return "jetmoe CUDA kernels (job/gpu_kernels = " + gpu_kernels + ") on " + gpu_model();
}

std::string matrix_products_description() {
#if defined(KOKKOS_ENABLE_CUDA)
  const std::string gpu = gpu_model();
  return std::string("Kokkos ") + Kokkos::DefaultExecutionSpace::name() + " on " + (gpu.empty() ? "a GPU" : gpu);
#elif defined(KOKKOSKERNELS_ENABLE_TPL_BLAS)
  return "host BLAS " + host_blas().describe();
#else
  return "Kokkos Kernels' own GEMM";
#endif
}

std::string version_report(const std::string& app_name) {
  std::ostringstream s;
  s << app_name << " " << JETMOE_VERSION << " (" << revision() << ", " << JETMOE_BUILD_TYPE << ")\n"
    << "  compiler        " << JETMOE_CXX_COMPILER << ", C++" << JETMOE_CXX_STANDARD << "\n"
    << "  Kokkos          " << kokkos_version_string() << ", backends " << kokkos_backends()
    << ", default execution space " << Kokkos::DefaultExecutionSpace::name() << "\n"
    << "  Kokkos Kernels  " << JETMOE_KOKKOSKERNELS_VERSION
#ifdef KOKKOSKERNELS_ENABLE_TPL_BLAS
    << ", BLAS TPL on"
#else
    << ", BLAS TPL off"
#endif
#ifdef KOKKOSKERNELS_ENABLE_TPL_CUBLAS
    << ", cuBLAS TPL on"
#endif
    << "\n"
    << "  BLAS            " << JETMOE_BLAS_LIBRARIES << "; at run time " << host_blas().describe() << "\n"
    << "  MPI             " << (JETMOE_HAVE_MPI ? mpi_library_version() : std::string("not built (JETMOE_ENABLE_MPI=OFF)"))
    << "\n"
    << "  HDF5            " << hdf5_text() << "\n"
    << "  CUDA            " << cuda_text() << "\n"
    << "  NCCL            " << nccl_text() << "\n";
  return s.str();
}

std::string build_summary() {
  std::ostringstream s;
  s << "jetmoe " << JETMOE_VERSION << " (" << revision() << ", " << JETMOE_BUILD_TYPE << "), Kokkos "
    << kokkos_version_string() << " " << kokkos_backends() << (JETMOE_HAVE_MPI ? ", MPI" : "")
    << (JETMOE_HAVE_HDF5 ? ", HDF5" : "") << (JETMOE_HAVE_CUDA_KERNELS ? ", CUDA kernels" : "")
    << (JETMOE_HAVE_NCCL ? ", NCCL" : "");
  return s.str();
}

}  // namespace jetmoe
