// Self-test of the CUDA emulation (run.sh selftest): CUDA-syntax kernels with known results under the
// CUDA/PTX rules the emulator claims to follow (warp shuffles with widths and masks, ballot, match,
// barriers, shared memory as garbage, launch checks, failure detection). Not a GPU program.
#include <cstdio>

namespace {
int failures = 0;
void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
  failures += !ok;
}

__global__ void shuffles(int* out) {
  const int l = threadIdx.x % 32;
  float v = static_cast<float>(l);
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[0 * 32 + l] = static_cast<int>(v);                          // 496 everywhere
  out[1 * 32 + l] = __shfl_down_sync(0xffffffffu, l, 1, 16);       // l+1, own value at the segment end
  out[2 * 32 + l] = __shfl_up_sync(0xffffffffu, l, 2);             // l-2, own value for lanes 0, 1
  out[3 * 32 + l] = __shfl_sync(0xffffffffu, l, 3, 8);             // lane 3 of each group of 8
  out[4 * 32 + l] = static_cast<int>(__ballot_sync(0xffffffffu, l % 3 == 0));
  out[5 * 32 + l] = static_cast<int>(__match_any_sync(0xffffffffu, l / 4));
  if (l < 16) {  // divergent halves, each with its own mask
    out[6 * 32 + l] = __shfl_xor_sync(0x0000ffffu, l, 1);
  } else {
    out[6 * 32 + l] = __shfl_xor_sync(0xffff0000u, l, 2) + 100;
  }
  out[7 * 32 + l] = __any_sync(0xffffffffu, l == 31) + 2 * __all_sync(0xffffffffu, l < 31);
}

__global__ void undefined_source(int* out) {
  const int l = threadIdx.x % 32;
  if (l < 16) out[l] = __shfl_xor_sync(0x0000ffffu, l, 16);  // source lanes 16..31 are not in the mask
}

__global__ void early_exit_then_barrier(int* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();  // UB: the exited threads never arrive
  out[threadIdx.x] = 1;
}

__global__ void exited_lane_in_mask(int* out) {
  if (threadIdx.x % 32 == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);  // lane 5 has exited: deadlock on a GPU
}

__global__ void shared_garbage(unsigned* out) {
  __shared__ unsigned s[64];
  out[threadIdx.x] = s[threadIdx.x];  // never written: the fill pattern
}

__global__ void missing_barrier(int* out) {
  __shared__ int s;
  if (threadIdx.x == 0) s = 42;
  // no __syncthreads here: a race
  out[threadIdx.x] = s;
}

__global__ void with_barrier(int* out) {
  __shared__ int s;
  if (threadIdx.x == 0) s = 42;
  __syncthreads();
  out[threadIdx.x] = s;
}

__global__ void dynamic_smem(int* out, int n) {
  extern __shared__ int dyn[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = i;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.y * gridDim.x + blockIdx.x] = dyn[n - 1] + static_cast<int>(blockDim.x);
}
}  // namespace

int main() {
  int* d = nullptr;
  cudaMalloc(&d, 4096 * sizeof(int));
  emu::begin_case();
  shuffles<<<1, 64>>>(d);
  bool ok[8] = {true, true, true, true, true, true, true, true};
  for (int t = 0; t < 64; ++t) {
    const int l = t % 32;
    ok[0] &= d[0 * 32 + l] == 496;
    ok[1] &= d[1 * 32 + l] == ((l % 16) == 15 ? l : l + 1);
    ok[2] &= d[2 * 32 + l] == (l < 2 ? l : l - 2);
    ok[3] &= d[3 * 32 + l] == (l / 8) * 8 + 3;
    ok[4] &= static_cast<unsigned>(d[4 * 32 + l]) == 0x49249249u;
    ok[5] &= static_cast<unsigned>(d[5 * 32 + l]) == (0xfu << (l / 4 * 4));
    ok[6] &= d[6 * 32 + l] == (l < 16 ? (l ^ 1) : (l ^ 2) + 100);
    ok[7] &= d[7 * 32 + l] == 1;
  }
  expect(ok[0], "__shfl_xor_sync butterfly sum");
  expect(ok[1], "__shfl_down_sync width 16 keeps the own value at a segment end");
  expect(ok[2], "__shfl_up_sync keeps the own value below delta");
  expect(ok[3], "__shfl_sync width 8 indexes within the segment");
  expect(ok[4], "__ballot_sync");
  expect(ok[5], "__match_any_sync");
  expect(ok[6], "divergent halves with disjoint masks");
  expect(ok[7], "__any_sync/__all_sync");
  expect(cudaDeviceSynchronize() == cudaSuccess, "no error after the valid kernels");

  const auto before = emu::rt().undefined_reads;
  undefined_source<<<1, 32>>>(d);
  expect(emu::rt().undefined_reads - before == 16 && static_cast<std::uint32_t>(d[0]) == static_cast<std::uint32_t>(emu::kPoison),
         "reading a lane outside the mask is undefined (poison, counted)");

  early_exit_then_barrier<<<1, 64>>>(d);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "__syncthreads after some threads exited is reported");
  emu::begin_case();
  exited_lane_in_mask<<<1, 32>>>(d);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "a full-mask shuffle with an exited lane deadlocks (reported)");
  emu::begin_case();

  shared_garbage<<<1, 64>>>(reinterpret_cast<unsigned*>(d));
  bool garbage = true;
  for (int t = 0; t < 64; ++t) garbage &= static_cast<unsigned>(d[t]) == 0x01010101u * emu::cfg().fill;
  expect(garbage, "static shared memory starts as the fill pattern");

  const int saved = emu::cfg().order;
  emu::cfg().order = 0;
  missing_barrier<<<1, 64>>>(d);
  bool fwd = true;
  for (int t = 0; t < 64; ++t) fwd &= d[t] == 42;
  emu::cfg().order = 1;
  missing_barrier<<<1, 64>>>(d);
  bool rev = true;
  for (int t = 0; t < 64; ++t) rev &= d[t] == 42;
  with_barrier<<<1, 64>>>(d);
  bool fixed = true;
  for (int t = 0; t < 64; ++t) fixed &= d[t] == 42;
  emu::cfg().order = saved;
  expect(fwd && !rev && fixed, "a missing __syncthreads shows in reverse order (forward hides it)");

  dynamic_smem<<<dim3(3, 2), 32, 40 * sizeof(int)>>>(d, 40);
  bool dyn = true;
  for (int b = 0; b < 6; ++b) dyn &= d[b] == 39 + 32;
  expect(dyn && cudaGetLastError() == cudaSuccess, "dynamic shared memory as launched, 2D grid");
  dynamic_smem<<<1, 32, 64 * 1024>>>(d, 40);
  expect(cudaGetLastError() == cudaErrorInvalidValue, "dynamic shared memory over 48 KiB without opt-in is refused");
  with_barrier<<<1, 1025>>>(d);
  expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block is refused");
  with_barrier<<<dim3(1, 65536), 32>>>(d);
  expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y 65536 is refused");
  std::printf("%d failed\n", failures);
  return failures != 0;
}
