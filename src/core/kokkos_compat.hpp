#pragma once
// What differs between Kokkos 3.4.01 (Debian, CI) and Kokkos >= 4.7 (Spack, CUDA), wrapped once.
// Everything else in the code base writes plain Kokkos that both accept.
#include <Kokkos_Core.hpp>

#include <string>

namespace jetmoe {

// Math functions live in Kokkos::Experimental in 3.4 and in Kokkos in 4.x.
namespace kmath {
#if KOKKOS_VERSION >= 40000
using Kokkos::cos;
using Kokkos::exp;
using Kokkos::fabs;
using Kokkos::fmax;
using Kokkos::fmin;
using Kokkos::isfinite;
using Kokkos::log;
using Kokkos::pow;
using Kokkos::sin;
using Kokkos::sqrt;
using Kokkos::tanh;
#else
using Kokkos::Experimental::cos;
using Kokkos::Experimental::exp;
using Kokkos::Experimental::fabs;
using Kokkos::Experimental::fmax;
using Kokkos::Experimental::fmin;
using Kokkos::Experimental::isfinite;
using Kokkos::Experimental::log;
using Kokkos::Experimental::pow;
using Kokkos::Experimental::sin;
using Kokkos::Experimental::sqrt;
using Kokkos::Experimental::tanh;
#endif
}  // namespace kmath

// `fence("label")` is 3.5+; labels help Kokkos Tools where they exist.
inline void fence(const char* label) {
#if KOKKOS_VERSION >= 30500
  Kokkos::fence(label);
#else
  (void)label;
  Kokkos::fence();
#endif
}

// "3.4.1"
inline std::string kokkos_version_string() {
  return std::to_string(KOKKOS_VERSION / 10000) + "." + std::to_string(KOKKOS_VERSION / 100 % 100) + "." +
         std::to_string(KOKKOS_VERSION % 100);
}

// Enabled backends, as compiled: "Serial", "OpenMP+Serial", "Cuda+Serial", ...
inline std::string kokkos_backends() {
  std::string s;
  auto add = [&](const char* name) { s += (s.empty() ? "" : "+") + std::string(name); };
#if defined(KOKKOS_ENABLE_CUDA)
  add("Cuda");
#endif
#if defined(KOKKOS_ENABLE_HIP)
  add("HIP");
#endif
#if defined(KOKKOS_ENABLE_SYCL)
  add("SYCL");
#endif
#if defined(KOKKOS_ENABLE_OPENMP)
  add("OpenMP");
#endif
#if defined(KOKKOS_ENABLE_THREADS)
  add("Threads");
#endif
#if defined(KOKKOS_ENABLE_SERIAL)
  add("Serial");
#endif
  return s.empty() ? "none" : s;
}

}  // namespace jetmoe
