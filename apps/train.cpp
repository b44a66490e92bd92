// jetmoe-train: pretraining (the paper's WSD recipe), SFT and DPO.
#include "core/app.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "io/collective.hpp"
#include "model/config.hpp"
#include "parallel/comm.hpp"
#include "train/config.hpp"
#include "train/trainer.hpp"

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{
      "jetmoe-train",
      "Train a JetMoE model: pretraining, SFT or DPO (<train>/mode).",
      {"job", "model", "tokenizer", "data", "train", "optimizer", "schedule", "dpo", "checkpoint", "parallel"},
      /*takes_restart=*/true,
      "Examples:\n"
      "  jetmoe-train -i inputs/tiny.deck\n"
      "  jetmoe-train -i inputs/tiny.deck optimizer/lr=1e-3 job/output_dir=runs/lr1e-3\n"
      "  jetmoe-train -i inputs/tiny.deck -r runs/tiny/checkpoints/step-000000100.h5\n"
      "SIGTERM, SIGINT or SIGUSR1 make it write a checkpoint after the current step and exit with status 0."};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    // Every rank checks the deck alike; they agree on the outcome, so an error is printed once.
    ModelConfig model;
    TrainConfig run;
    collectively(ctx.comm, [&] {
      model = ModelConfig::from_deck(ctx.deck);
      run = TrainConfig::from_deck(ctx.deck, model, ctx.comm.size());
    });
    log::info("model: %s", model.summary().c_str());
    log::info("run: %s, %lld optimizer steps of %lld tokens (%lld x %lld tokens x %lld accumulation x %lld data-parallel), "
              "pipeline stages %lld",
              run.mode.c_str(), (long long)run.total_steps, (long long)run.global_batch_tokens,
              (long long)run.micro_batch_size, (long long)run.seq_len, (long long)run.grad_accum_steps,
              (long long)run.data_parallel, (long long)run.pipeline_stages);
    log::info("deck is valid.");
    if (ctx.command_line.check_only) return;  // the deck alone: no files, no GPU (a login node checks a GPU job's deck)
    collectively(ctx.comm, [&] { check_training_inputs(ctx.deck, run, ctx.command_line.restart); });
    install_stop_handlers();
    const TrainOutcome outcome = run_training(ctx.deck, ctx.comm, ctx.command_line.restart);
    log::info(outcome == TrainOutcome::Finished ? "training finished." : "training stopped; restart with -r.");
  });
}
