#include <catch2/catch.hpp>

#include "core/deck.hpp"
#include "parallel/comm.hpp"

TEST_CASE("communicator reductions", "[unit][mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  const int p = c.size();
  CHECK(c.sum(1.0) == double(p));
  CHECK(c.max(c.rank()) == p - 1);
  CHECK(c.min(c.rank()) == 0);
  CHECK(c.sum(double(c.rank())) == double(p) * (p - 1) / 2);
  c.barrier();
}

TEST_CASE("every rank reads the same deck", "[unit][mpi][comm]") {
  const jetmoe::Comm c = jetmoe::Comm::world();
  const auto deck = jetmoe::Deck::from_file(std::string(JETMOE_SOURCE_DIR) + "/inputs/tiny.deck");
  const double lr = deck.get_real("optimizer", "lr");
  CHECK(c.max(lr) == lr);
  CHECK(c.min(lr) == lr);
}
