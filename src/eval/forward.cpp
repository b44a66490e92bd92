// The fp32 evaluation forward (eval/forward.hpp).
#include "eval/forward.hpp"

#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"
#include "core/tensor.hpp"
#include "io/collective.hpp"
#include "model/model.hpp"
#include "parallel/comm.hpp"

namespace jetmoe::eval {

std::vector<std::vector<double>> run_batches_over_ranks(const Comm& comm, std::size_t batches,
                                                        const std::function<std::vector<double>(std::size_t)>& run) {
  std::vector<std::uint64_t> index;
  std::vector<std::vector<double>> mine;
  collectively(comm, [&] {
    for (std::size_t k = std::size_t(comm.rank()); k < batches; k += std::size_t(comm.size())) {
      index.push_back(k);
      mine.push_back(run(k));
    }
  });
  return all_gather_parts(comm, index, mine, batches);
}

namespace {

// Host memory of the caller seen by Kokkos.
template <class Shape>
using HostView = Kokkos::View<Shape, Kokkos::LayoutRight, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;

// Logits [n T, V] of the batch.
View2 forward(Model& model, const TokenBatch& batch) {
  IntView2 ids("eval_ids", batch.n, batch.T);
  Kokkos::deep_copy(ids, HostView<const std::int32_t**>(batch.ids.data(), batch.n, batch.T));
  KvCache cache(model.config(), batch.n, batch.T);
  View2 logits("eval_logits", batch.n * batch.T, model.config().vocab_size);
  model.forward(ids, cache, logits);
  return logits;
}

}  // namespace

void check_batch(const ModelConfig& c, const TokenBatch& batch, const std::vector<std::int32_t>* targets) {
  JETMOE_ASSERT(batch.n >= 1 && batch.T >= 1 && batch.T <= c.max_position_embeddings &&
                    batch.ids.size() == std::size_t(batch.n * batch.T),
                "eval: a batch of " + std::to_string(batch.ids.size()) + " ids is not n x T with 1 <= T <= context");
  if (!targets) return;
  JETMOE_ASSERT(targets->size() == batch.ids.size(), "eval: one target per row");
  for (const std::int32_t t : *targets) JETMOE_ASSERT(t < c.vocab_size, "eval: a target outside the vocabulary");
}

const ModelConfig& ModelForward::config() const { return model_.config(); }
std::string ModelForward::matrix_products() const { return matrix_products_description(); }

void ModelForward::logits(const TokenBatch& batch, float* out) {
  check_batch(config(), batch, nullptr);
  const View2 logits = forward(model_, batch);
  Kokkos::deep_copy(HostView<float**>(out, logits.extent(0), logits.extent(1)), logits);
}

std::vector<double> ModelForward::target_logprobs(const TokenBatch& batch, const std::vector<std::int32_t>& targets) {
  check_batch(config(), batch, &targets);
  const std::int64_t V = config().vocab_size, N = batch.n * batch.T;
  const View2 logits = forward(model_, batch);
  IntView1 d_targets("eval_targets", N);
  Kokkos::deep_copy(d_targets, HostView<const std::int32_t*>(targets.data(), std::size_t(N)));
  Kokkos::View<double*, Kokkos::LayoutRight, MemSpace> d_logp("eval_logp", N);
  // log_softmax(logits[row])[target], in double
  Kokkos::parallel_for(
      "eval_log_softmax", Range(0, N), KOKKOS_LAMBDA(std::int64_t row) {
        const std::int32_t target = d_targets(row);
        if (target < 0) {
          d_logp(row) = 0;
          return;
        }
        double m = logits(row, 0);
        for (std::int64_t v = 1; v < V; ++v) m = logits(row, v) > m ? double(logits(row, v)) : m;
        double z = 0;
        for (std::int64_t v = 0; v < V; ++v) z += kmath::exp(double(logits(row, v)) - m);
        d_logp(row) = double(logits(row, target)) - m - kmath::log(z);
      });
  std::vector<double> logp(static_cast<std::size_t>(N));
  Kokkos::deep_copy(HostView<double*>(logp.data(), std::size_t(N)), d_logp);
  return logp;
}

}  // namespace jetmoe::eval
