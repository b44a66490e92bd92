// The Kokkos and Kokkos Kernels the build found work as the code assumes: parallel patterns, and
// KokkosBlas::gemm on contiguous float views (the system BLAS) against a closed form.
#include <catch2/catch.hpp>

#include <Kokkos_Core.hpp>
#include <KokkosBlas3_gemm.hpp>

#include "core/kokkos_compat.hpp"

TEST_CASE("Kokkos parallel_reduce sums 1..n", "[unit][kokkos]") {
  const long n = 100000;
  long sum = 0;
  Kokkos::parallel_reduce(
      "sum", Kokkos::RangePolicy<>(1, n + 1), KOKKOS_LAMBDA(long i, long& s) { s += i; }, sum);
  CHECK(sum == n * (n + 1) / 2);
  CHECK_FALSE(jetmoe::kokkos_backends().empty());
}

TEST_CASE("KokkosBlas::gemm on LayoutRight float views matches the closed form", "[unit][kokkos]") {
  // A[i][p] = i + p, B[p][j] = p - j  =>  C[i][j] = sum_p (i+p)(p-j), summed in closed form.
  const int m = 37, k = 53, n = 29;
  Kokkos::View<float**, Kokkos::LayoutRight, Kokkos::HostSpace> A("A", m, k), B("B", k, n), C("C", m, n);
  for (int i = 0; i < m; ++i)
    for (int p = 0; p < k; ++p) A(i, p) = float(i + p);
  for (int p = 0; p < k; ++p)
    for (int j = 0; j < n; ++j) B(p, j) = float(p - j);
  KokkosBlas::gemm("N", "N", 1.0f, A, B, 0.0f, C);
  const double S1 = k * (k - 1) / 2.0, S2 = (k - 1) * k * (2.0 * k - 1) / 6.0;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      const double expected = S2 + (i - j) * S1 - double(i) * j * k;
      REQUIRE(C(i, j) == Approx(expected).epsilon(1e-6));
    }
}
