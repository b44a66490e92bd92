#pragma once
// The pretraining loop of jetmoe-train (jetmoe-spec.md section 5): micro-batches from the data
// mixture, forward and backward, gradient accumulation to the global batch, clipping, AdamW on the
// WSD schedule; progress lines, metrics, validation, HDF5 checkpoints with exact restart, and a clean
// stop on SIGTERM/SIGINT (Slurm preemption).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/config.hpp"

namespace jetmoe {

class Deck;
class Comm;
struct TrainConfig;

enum class TrainOutcome { Finished, Stopped };

// Runs the training the deck describes, from `restart` (a checkpoint file) when given.
TrainOutcome run_training(Deck& deck, const Comm& comm, const std::optional<std::string>& restart);

// What a run needs besides the deck, checked before it starts (jetmoe-train does, on every rank, and
// the ranks agree): the restart checkpoint (ErrorKind::Usage), and as deck errors naming the key the
// model and tokenizer files, the prepared data directory and the sources the mixtures name
// (pretraining), the conversation files (SFT, DPO).
void check_training_inputs(const Deck& deck, const TrainConfig& run, const std::optional<std::string>& restart);

// One value per rank (rank order) as one line: the value when every rank has it, else each value once
// with its ranks, "ranks 0-2, 5: A; rank 3: B; ranks 4, 6: C".
std::string describe_per_rank(const std::vector<std::string>& per_rank);

// The restart's note when the run that wrote a checkpoint had another setup than this one (its
// /meta/run_setup: "key = value" lines, the precision, the layout, the micro-batch, what computed the
// matrix products): "note: ..." naming each key that differs with its value then and now, or "" when
// none differs or the checkpoint records no setup. Keys only one side has are not compared.
std::string restart_setup_note(const std::string& theirs, const std::string& ours);

// Installs SIGTERM/SIGINT/SIGUSR1 handlers that ask the loop to stop after the current step.
void install_stop_handlers();
bool stop_requested();
void request_stop();  // as if a signal had arrived (tests)
void clear_stop_request();

}  // namespace jetmoe
