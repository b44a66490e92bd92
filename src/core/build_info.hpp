#pragma once
#include <string>

namespace jetmoe {

// The `--version` text: project version and revision, Kokkos version and backends, Kokkos Kernels,
// BLAS, MPI, HDF5, CUDA kernels (compiled architectures, runtime, driver, devices) and NCCL, each
// as this binary was built and as the machine it runs on reports.
std::string version_report(const std::string& app_name);
// One line for logs: "jetmoe 0.1.0 (abc1234, Release) Kokkos 3.4.1 Serial, MPI, HDF5, CUDA kernels sm_90a".
std::string build_summary();

}  // namespace jetmoe
