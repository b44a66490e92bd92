// jetmoe-convert: Hugging Face safetensors <-> jetmoe HDF5 checkpoints.
#include "core/app.hpp"
#include "core/log.hpp"

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-convert",
                             "Convert checkpoints between Hugging Face (safetensors + config.json) and jetmoe HDF5.",
                             {"job", "model", "convert"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-convert -i inputs/tiny.deck convert/input=runs/tiny/checkpoints/step-001000.h5 "
                             "convert/output=export/ convert/to=hf"};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const std::string input = ctx.deck.get_string("convert", "input");
    const std::string output = ctx.deck.get_string("convert", "output");
    if (input == output) ctx.deck.fail_value("convert", "output", "is the same as convert/input");
    log::info("deck is valid.");
    if (ctx.command_line.check_only) return;
    log::info("this build stops here: conversion is not part of this version yet (see README, 'Status').");
  });
}
