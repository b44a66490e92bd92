#pragma once
#include <string>

namespace jetmoe {

// The `--version` text: project version and revision, Kokkos version and backends, Kokkos Kernels,
// BLAS, MPI, HDF5, CUDA kernels (compiled architectures, runtime, driver, devices) and NCCL, each
// as this binary was built and as the machine it runs on reports.
std::string version_report(const std::string& app_name);
// One line for logs: "jetmoe 0.1.0 (abc1234, Release) Kokkos 3.4.1 Serial, MPI, HDF5, CUDA kernels sm_90a".
std::string build_summary();

// The host BLAS as it runs in this process, as the library itself reports (OpenBLAS, MKL or BLIS, looked
// up at run time, so that any BLAS links). Its matrix products depend on the kernel set and on the
// thread count: OpenBLAS divides a product differently among 1 and among 2 threads, and the last bits
// of the results differ.
struct HostBlas {
  std::string library;  // "OpenBLAS", "MKL", "BLIS", or the libraries the build linked when it cannot tell
  std::string version;  // "" when unknown
  std::string core;     // OpenBLAS's kernel set ("Haswell", "Zen", "SkylakeX"), else ""
  std::string config;   // OpenBLAS's build configuration, else ""
  int threads = 0;      // 0: unknown
  // "OpenBLAS 0.3.21 (core Zen, 2 threads)"
  std::string describe() const;
};
HostBlas host_blas();

// The GPU this process computes on, as far as its results go: "NVIDIA H100 80GB HBM3 (sm_90)"; "" when
// the build has no CUDA kernels or the machine no GPU.
std::string gpu_model();

// What computes the matrix products of the bf16 paths, jetmoe's CUDA kernels (`gpu_kernels`: the
// job/gpu_kernels value): "jetmoe CUDA kernels (job/gpu_kernels = tuned) on NVIDIA H100 80GB HBM3 (sm_90)".
std::string cuda_kernels_description(const std::string& gpu_kernels);

// What computes the fp32 matrix products of the Kokkos code in this process: "host BLAS OpenBLAS 0.3.21
// (core Zen, 2 threads)", "Kokkos Kernels' own GEMM" (a build without the BLAS TPL) or, when the
// default execution space is a GPU, "Kokkos Cuda on NVIDIA H100 80GB HBM3". Two runs give the same bits
// when this and their decks agree; the Kokkos host backend and its thread count change nothing.
std::string matrix_products_description();

}  // namespace jetmoe
