# Hugging Face -> jetmoe HDF5 -> Hugging Face gives the same checkpoint as Hugging Face -> Hugging Face
# (byte-identical config.json and model.safetensors, in fp32 and bf16), and a model loaded from the
# HDF5 checkpoint gives byte-identical logits.
#   -D CONVERT=jetmoe-convert -D EVAL=jetmoe-eval -D MODEL=hf-dir -D IDS=ids.txt -D SCRATCH=dir
file(REMOVE_RECURSE "${SCRATCH}")
file(MAKE_DIRECTORY "${SCRATCH}")
# A deck of its own: no tokenizer (logits of token ids need none), the shape from the checkpoints.
set(DECK "${SCRATCH}/roundtrip.deck")
file(WRITE "${DECK}" "<job>\nname = convert-roundtrip\n<model>\npreset = tiny\n")

function(run)
  execute_process(COMMAND ${ARGN} WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 120)
  if(NOT rc STREQUAL "0")
    string(REPLACE ";" " " shown "${ARGN}")
    message(FATAL_ERROR "`${shown}` exited with ${rc}.\n--- output ---\n${out}${err}")
  endif()
endfunction()

function(same a b)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${SCRATCH}/${a}" "${SCRATCH}/${b}" RESULT_VARIABLE rc)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "${a} and ${b} differ")
  endif()
endfunction()

foreach(dtype fp32 bf16)
  run("${CONVERT}" -i "${DECK}" "convert/input=${MODEL}" "convert/output=${dtype}.h5" convert/to=hdf5 "convert/dtype=${dtype}")
  run("${CONVERT}" -i "${DECK}" "convert/input=${dtype}.h5" "convert/output=via-hdf5-${dtype}" "convert/dtype=${dtype}")
  run("${CONVERT}" -i "${DECK}" "convert/input=${MODEL}" "convert/output=direct-${dtype}" "convert/dtype=${dtype}")
  same("via-hdf5-${dtype}/model.safetensors" "direct-${dtype}/model.safetensors")
  same("via-hdf5-${dtype}/config.json" "direct-${dtype}/config.json")
endforeach()

run("${EVAL}" -i "${DECK}" "model/weights=${MODEL}" eval/task=logits "eval/input=${IDS}" "eval/output=${SCRATCH}/hf.npy")
run("${EVAL}" -i "${DECK}" model/weights=fp32.h5 eval/task=logits "eval/input=${IDS}" "eval/output=${SCRATCH}/hdf5.npy")
same(hf.npy hdf5.npy)
message(STATUS "ok: HF -> HDF5 -> HF is lossless, and the HDF5 checkpoint gives the same logits")
