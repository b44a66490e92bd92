#pragma once
// The pretraining loop of jetmoe-train (jetmoe-spec.md section 5): micro-batches from the data
// mixture, forward and backward, gradient accumulation to the global batch, clipping, AdamW on the
// WSD schedule; progress lines, metrics, validation, HDF5 checkpoints with exact restart, and a clean
// stop on SIGTERM/SIGINT (Slurm preemption).
#include <cstdint>
#include <optional>
#include <string>

#include "model/config.hpp"

namespace jetmoe {

class Deck;
class Comm;

enum class TrainOutcome { Finished, Stopped };

// Runs the training the deck describes, from `restart` (a checkpoint file) when given.
TrainOutcome run_training(Deck& deck, const Comm& comm, const std::optional<std::string>& restart);

// Installs SIGTERM/SIGINT/SIGUSR1 handlers that ask the loop to stop after the current step.
void install_stop_handlers();
bool stop_requested();
void request_stop();  // as if a signal had arrived (tests)
void clear_stop_request();

}  // namespace jetmoe
