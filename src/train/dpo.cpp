#include "train/dpo.hpp"

#include <cmath>

namespace jetmoe {

namespace {
// log(sigmoid(x)) = -log1p(exp(-x)), stable for both signs.
double log_sigmoid(double x) { return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x)); }
double sigmoid(double x) { return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x)); }
}  // namespace

DpoPair dpo_pair(double pc, double pr, double rc, double rr, double beta, double eps) {
  DpoPair p;
  const double h = (pc - rc) - (pr - rr);
  p.loss = -(1.0 - eps) * log_sigmoid(beta * h) - eps * log_sigmoid(-beta * h);
  // d loss / d h = -(1 - eps) beta sigmoid(-beta h) + eps beta sigmoid(beta h)
  const double dh = -(1.0 - eps) * beta * sigmoid(-beta * h) + eps * beta * sigmoid(beta * h);
  p.d_chosen = dh;
  p.d_rejected = -dh;
  p.chosen_reward = beta * (pc - rc);
  p.rejected_reward = beta * (pr - rr);
  return p;
}

void DpoStats::add(const DpoPair& p) {
  loss += p.loss;
  accuracy += p.chosen_reward > p.rejected_reward ? 1.0 : 0.0;
  margin += p.chosen_reward - p.rejected_reward;
  chosen_reward += p.chosen_reward;
  rejected_reward += p.rejected_reward;
  ++pairs;
}

DpoStats DpoStats::mean() const {
  DpoStats m = *this;
  if (pairs == 0) return m;
  const double n = double(pairs);
  m.loss /= n, m.accuracy /= n, m.margin /= n, m.chosen_reward /= n, m.rejected_reward /= n;
  return m;
}

}  // namespace jetmoe
