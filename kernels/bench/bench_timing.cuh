#pragma once
// Timing shared by the kernel benchmarks: the median of cudaEvent-timed launches on one stream.
#include "harness.cuh"

#include <algorithm>
#include <functional>
#include <vector>

namespace jkb {

// Runs `launch` warmup times, then reps times between two events on `stream`; returns the median in ms.
inline double median_ms(const std::function<void()>& launch, cudaStream_t stream, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) launch();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a, stream));
    launch();
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

inline double median_us(const std::function<void()>& launch, cudaStream_t stream, int warmup, int reps) {
  return 1e3 * median_ms(launch, stream, warmup, reps);
}

}  // namespace jkb
