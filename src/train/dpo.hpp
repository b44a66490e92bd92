#pragma once
// The sigmoid DPO loss (jetmoe-spec.md section 6; [P] eq. 17) with conservative label smoothing, per
// preference pair, from the summed response log-probabilities of the policy and the frozen reference:
//   h = (pc - rc) - (pr - rr),   loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
// Rewards (as TRL logs them): chosen = beta (pc - rc), rejected = beta (pr - rr), margin = their
// difference, accuracy = share of pairs with chosen > rejected.
#include <cstdint>
#include <vector>

namespace jetmoe {

struct DpoPair {
  double loss = 0;
  double d_chosen = 0, d_rejected = 0;  // d loss / d pc and d loss / d pr
  double chosen_reward = 0, rejected_reward = 0;
};

// log sigmoid evaluated without overflow; at h = 0 the loss is exactly ln 2.
DpoPair dpo_pair(double policy_chosen, double policy_rejected, double ref_chosen, double ref_rejected, double beta,
                 double label_smoothing);

struct DpoStats {
  double loss = 0, accuracy = 0, margin = 0, chosen_reward = 0, rejected_reward = 0;
  std::int64_t pairs = 0;
  void add(const DpoPair& p);
  DpoStats mean() const;  // the sums divided by `pairs`
};

}  // namespace jetmoe
