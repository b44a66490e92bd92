// Catch2 v2 main of the kernel-reference tests: plain host C++, no MPI, no Kokkos, no CUDA.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
