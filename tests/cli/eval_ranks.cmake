# jetmoe-eval over two MPI ranks (the batches dealt out) writes the results file of one rank, byte for
# byte: perplexity of a text and multiple choice on the HellaSwag sample, both with OpenBLAS on one
# thread (mpiexec binds each rank to a core, so its OpenBLAS runs one thread whatever it is told).
#   -D EVAL_APP=jetmoe-eval -D DECK=all-apps.deck -D MODEL=fixtures/eval/model -D EVAL=fixtures/eval
#   -D TEXT=short.txt -D MPIEXEC=mpiexec|flag|... -D MPIEXEC_NUMPROC_FLAG=-n -D SCRATCH=dir
file(REMOVE_RECURSE "${SCRATCH}")
file(MAKE_DIRECTORY "${SCRATCH}")
set(ENV{OPENBLAS_NUM_THREADS} 1)
string(REPLACE "|" ";" mpiexec "${MPIEXEC}")
set(perplexity eval/task=perplexity "eval/input=${TEXT}" eval/context=16 eval/batch_size=2)
set(mc eval/task=multiple-choice "eval/input=${EVAL}/hellaswag.jsonl" eval/num_fewshot=2
       "eval/fewshot_input=${EVAL}/hellaswag_fewshot.jsonl" eval/batch_size=3)
foreach(task perplexity mc)
  foreach(ranks 1 2)
    execute_process(COMMAND ${mpiexec} ${MPIEXEC_NUMPROC_FLAG} ${ranks} "${EVAL_APP}" -i "${DECK}" "model/weights=${MODEL}"
                            ${${task}} "eval/output=${task}-${ranks}.json" job/output_dir=out
                    WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
    if(NOT rc STREQUAL "0")
      message(FATAL_ERROR "jetmoe-eval ${task} on ${ranks} rank(s) exited with ${rc}.\n--- output ---\n${out}${err}")
    endif()
    if(ranks EQUAL 2 AND NOT out MATCHES "the batches dealt out over 2 ranks")
      message(FATAL_ERROR "jetmoe-eval ${task} on 2 ranks does not deal its batches out.\n--- output ---\n${out}${err}")
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${SCRATCH}/out/${task}-1.json" "${SCRATCH}/out/${task}-2.json"
                  RESULT_VARIABLE rc)
  if(NOT rc STREQUAL "0")
    file(READ "${SCRATCH}/out/${task}-1.json" one)
    file(READ "${SCRATCH}/out/${task}-2.json" two)
    message(FATAL_ERROR "${task}: 2 ranks wrote other results than 1.\n--- 1 rank ---\n${one}\n--- 2 ranks ---\n${two}")
  endif()
  message(STATUS "${task}: 2 ranks wrote the results of 1, byte for byte")
endforeach()
