# What a bit-for-bit run depends on, end to end with jetmoe-train and jetmoe-convert:
# - a restart on the setup the checkpoint was written with says nothing and continues bit for bit;
# - a restart with another host BLAS thread count (OpenBLAS) or another micro-batch says so, naming
#   the value then and now;
# - with Kokkos' OpenMP backend (THREADS_FLAG given), the Kokkos thread count changes no bit of a
#   training run nor of jetmoe-eval's logits.
#   -D TRAIN=jetmoe-train -D CONVERT=jetmoe-convert -D EVAL=jetmoe-eval -D DECK=inputs/tiny.deck
#   -D CHAT=sft_tiny.jsonl -D IDS=token-ids.txt -D TOKENIZER=tokenizer.model -D SCRATCH=dir
#   [-D THREADS_FLAG=--kokkos-num-threads] [-D MPIEXEC=mpiexec|flag|... -D MPIEXEC_NUMPROC_FLAG=-n]
# - with MPIEXEC, two data-parallel ranks with different OpenBLAS thread counts (a job over nodes of two
#   kinds) name each rank's BLAS in the log and in the checkpoint's setup.
file(REMOVE_RECURSE "${SCRATCH}")
file(MAKE_DIRECTORY "${SCRATCH}")

# Four SFT steps of the tiny model on two conversations, checkpoints at steps 2 and 4.
set(run_keys train/mode=sft "data/chat_train=${CHAT}" "tokenizer/model=${TOKENIZER}" schedule/total=4
    schedule/warmup=0 schedule/decay=0 train/sample_tokens=0 train/eval_interval=0
    train/global_batch_tokens=512 checkpoint/interval=2)
set(step2 "a/checkpoints/step-000000002.h5")

# train(NAME BLAS_THREADS MICRO_BATCH [args...]): runs jetmoe-train with OPENBLAS_NUM_THREADS =
# BLAS_THREADS and train/micro_batch_size = MICRO_BATCH into job/output_dir = NAME; its output is in
# ${NAME}_out.
function(train name blas micro_batch)
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env "OPENBLAS_NUM_THREADS=${blas}" "${TRAIN}" -i "${DECK}" ${run_keys}
                          "train/micro_batch_size=${micro_batch}" "job/output_dir=${name}" ${ARGN}
                  WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "run ${name} exited with ${rc}.\n--- output ---\n${out}${err}")
  endif()
  set(${name}_out "${out}${err}" PARENT_SCOPE)
endfunction()

# compare_params(A B VAR): VAR is TRUE when the step-4 checkpoints of runs A and B hold the same
# parameters, bit for bit (both exported in fp32 by jetmoe-convert, byte-compared).
function(compare_params a b var)
  foreach(r IN ITEMS ${a} ${b})
    if(NOT EXISTS "${SCRATCH}/${r}-fp32")
      execute_process(COMMAND "${CONVERT}" -i "${DECK}" "convert/input=${r}/checkpoints/step-000000004.h5"
                              "convert/output=${r}-fp32" convert/dtype=fp32
                      WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
      if(NOT rc STREQUAL "0")
        message(FATAL_ERROR "converting run ${r}'s checkpoint exited with ${rc}.\n--- output ---\n${out}${err}")
      endif()
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${SCRATCH}/${a}-fp32/model.safetensors"
                          "${SCRATCH}/${b}-fp32/model.safetensors" RESULT_VARIABLE rc)
  if(rc STREQUAL "0")
    set(${var} TRUE PARENT_SCOPE)
  else()
    set(${var} FALSE PARENT_SCOPE)
  endif()
endfunction()

function(same_params a b)
  compare_params(${a} ${b} same)
  if(NOT same)
    message(FATAL_ERROR "runs ${a} and ${b} end with different parameters")
  endif()
endfunction()

function(expect name regex)
  if(NOT "${${name}_out}" MATCHES "${regex}")
    message(FATAL_ERROR "run ${name}: output does not match /${regex}/.\n--- output ---\n${${name}_out}")
  endif()
endfunction()

function(reject name regex)
  if("${${name}_out}" MATCHES "${regex}")
    message(FATAL_ERROR "run ${name}: output matches /${regex}/, which it must not.\n--- output ---\n${${name}_out}")
  endif()
endfunction()

train(a 1 2)
if(NOT a_out MATCHES "matrix products: ([^\n]*)\n")
  message(FATAL_ERROR "run a does not say what computes its matrix products.\n--- output ---\n${a_out}")
endif()
set(products "${CMAKE_MATCH_1}")
message(STATUS "matrix products: ${products}")

# The same setup: no note, and the same parameters as the uninterrupted run.
train(same 1 2 -r "${step2}")
expect(same "restarted from ${step2}: step 2")
reject(same "note: the checkpoint was written with another setup")
same_params(a same)

# Another micro-batch (the same global batch): the note names it.
train(batch 1 1 -r "${step2}")
expect(batch "note: the checkpoint was written with another setup \\(micro_batch_size: 2 then, 1 now\\): the run continues from it, but not bit for bit")
compare_params(a batch same)
if(same)
  message(FATAL_ERROR "run batch (micro-batch 1 after step 2) ends with the parameters of run a (micro-batch 2)")
endif()

# Another OpenBLAS thread count: the note names both (OpenBLAS's GEMMs differ in their last bits).
if(products MATCHES "^host BLAS OpenBLAS ")
  train(threads 2 2 -r "${step2}")
  expect(threads "note: the checkpoint was written with another setup \\(matrix products: host BLAS OpenBLAS [^(]+\\(core [^,]+, 1 thread\\) then, host BLAS OpenBLAS [^(]+\\(core [^,]+, 2 threads\\) now\\)")
  compare_params(a threads same)  # OpenBLAS's behaviour, not ours: reported, not required
  if(same)
    message(STATUS "OpenBLAS with 2 threads gave the bits of 1 thread at these sizes")
  else()
    message(STATUS "OpenBLAS with 2 threads changed the last bits of the parameters, as the note says")
  endif()
else()
  message(STATUS "the matrix products are not OpenBLAS's: OPENBLAS_NUM_THREADS changes nothing to check")
endif()

# Two data-parallel ranks on "nodes of two kinds": rank 1's OpenBLAS runs the kernels of another CPU
# (OPENBLAS_CORETYPE, which OpenBLAS builds for several CPUs follow; MPMD: "A : B"). The log names each
# rank's BLAS, and a restart of its checkpoint on ranks that agree names the change. (Not the thread
# count: under mpiexec's default binding of a rank to a core, OpenBLAS runs one thread whatever it is
# told, and says so.)
if(DEFINED MPIEXEC AND products MATCHES "^host BLAS OpenBLAS [^(]+\\(core ([^,]+),")
  set(other_core Prescott)  # any x86-64; the probe below tells whether this OpenBLAS can switch to it
  if(CMAKE_MATCH_1 STREQUAL "Prescott")
    set(other_core Nehalem)
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E env OPENBLAS_NUM_THREADS=1 "OPENBLAS_CORETYPE=${other_core}" "${TRAIN}" --version
                  OUTPUT_VARIABLE probe ERROR_VARIABLE probe)
  if(probe MATCHES "\\(core ${other_core}, ")
    string(REPLACE "|" ";" mpiexec "${MPIEXEC}")
    set(mpi_keys ${run_keys} train/micro_batch_size=1 parallel/data_parallel=2)
    function(train_mpi name core1)
      execute_process(COMMAND ${mpiexec} ${MPIEXEC_NUMPROC_FLAG} 1 env OPENBLAS_NUM_THREADS=1
                              "${TRAIN}" -i "${DECK}" ${mpi_keys} "job/output_dir=${name}" ${ARGN}
                              : ${MPIEXEC_NUMPROC_FLAG} 1 env OPENBLAS_NUM_THREADS=1 "OPENBLAS_CORETYPE=${core1}"
                              "${TRAIN}" -i "${DECK}" ${mpi_keys} "job/output_dir=${name}" ${ARGN}
                      WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 180)
      if(NOT rc STREQUAL "0")
        message(FATAL_ERROR "2-rank run ${name} exited with ${rc}.\n--- output ---\n${out}${err}")
      endif()
      set(${name}_out "${out}${err}" PARENT_SCOPE)
    endfunction()
    string(REGEX REPLACE "([()])" "\\\\\\1" products_regex "${products}")
    set(other "host BLAS OpenBLAS [^(]+\\(core ${other_core}, 1 thread\\)")
    train_mpi(mixed ${other_core})
    expect(mixed "matrix products: rank 0: ${products_regex}; rank 1: ${other}\n")
    # Rank 1 now has rank 0's kernels (OPENBLAS_CORETYPE names them).
    string(REGEX MATCH "\\(core ([^,]+)," _ "${products}")
    train_mpi(agreed "${CMAKE_MATCH_1}" -r mixed/checkpoints/step-000000002.h5)
    expect(agreed "matrix products: ${products_regex}\n")
    expect(agreed "note: the checkpoint was written with another setup \\(matrix products: rank 0: ${products_regex}; rank 1: ${other} then, ${products_regex} now\\)")
  else()
    message(STATUS "this OpenBLAS cannot switch to the kernels of ${other_core}: no 2-rank job over two kinds of CPU")
  endif()
endif()

# Kokkos' OpenMP backend: 2 threads give the bits of 1 (run a), and the setup is the same.
if(DEFINED THREADS_FLAG)
  train(kokkos2 1 2 "${THREADS_FLAG}=2" --kokkos-print-configuration)
  expect(kokkos2 "OpenMP thread_pool_topology\\[ 1 x 2 x 1 \\]")
  same_params(a kokkos2)
  train(kokkos2restart 1 2 "${THREADS_FLAG}=2" -r "${step2}")
  reject(kokkos2restart "note: the checkpoint was written with another setup")
  same_params(a kokkos2restart)
  # jetmoe-eval's fp32 logits of run a's final model, with 1 and with 2 threads.
  foreach(n 1 2)
    execute_process(COMMAND "${CMAKE_COMMAND}" -E env OPENBLAS_NUM_THREADS=1 "${EVAL}" "${THREADS_FLAG}=${n}" -i "${DECK}"
                            "tokenizer/model=${TOKENIZER}"
                            model/weights=a/final eval/task=logits "eval/input=${IDS}" eval/output=logits.npy
                            "job/output_dir=eval${n}"
                    WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
    if(NOT rc STREQUAL "0" OR NOT out MATCHES "wrote logits")
      message(FATAL_ERROR "jetmoe-eval with ${n} thread(s) exited with ${rc}.\n--- output ---\n${out}${err}")
    endif()
  endforeach()
  execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${SCRATCH}/eval1/logits.npy" "${SCRATCH}/eval2/logits.npy"
                  RESULT_VARIABLE rc)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "jetmoe-eval's logits with 1 and with 2 Kokkos threads differ")
  endif()
endif()
