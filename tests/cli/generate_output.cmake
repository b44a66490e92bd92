# jetmoe-generate's results file (generate/output), end to end: a batch of prompts from a file, greedy,
# written as JSON under job/output_dir. Checked: the file parses; one generation per prompt, in order,
# with the prompt's text as given; each stopped at EOS or at max_new_tokens, as its finish_reason says;
# and each prompt + completion is what standard output printed for it.
# With MPIEXEC: two ranks, the prompts dealt out over them, print and write what one rank does (seeded
# sampling included: each prompt samples from its own stream).
#   -D GENERATE=jetmoe-generate -D DECK=inputs/tiny.deck -D TOKENIZER=tokenizer.model -D SCRATCH=dir
#   [-D MPIEXEC=mpiexec|flag|... -D MPIEXEC_NUMPROC_FLAG=-n]
file(REMOVE_RECURSE "${SCRATCH}")
file(MAKE_DIRECTORY "${SCRATCH}")
set(prompts "Once upon a time" "A \"quoted\" \\ path" "café au lait")
string(JOIN "\n" text ${prompts})
file(WRITE "${SCRATCH}/prompts.txt" "${text}\n\n")  # an empty line is not a prompt
set(max_new 6)

# run(NAME [keys...]): generates the prompts into out/NAME/generations.json and checks it; `sep` is what
# standard output puts between a prompt and its completion. Sets ${NAME}_tokens to the prompts' token
# counts.
function(run name sep)
  # The prompts from generate/prompt_file, or with `stdin` set from standard input.
  set(args ${ARGN})
  set(source "")
  if(stdin)
    set(source INPUT_FILE "${SCRATCH}/prompts.txt")
  else()
    list(APPEND args generate/prompt_file=prompts.txt)
  endif()
  execute_process(COMMAND ${launch} "${GENERATE}" -i "${DECK}" model/vocab_size=400 "tokenizer/model=${TOKENIZER}"
                          generate/max_new_tokens=${max_new}
                          generate/output=${name}/generations.json job/output_dir=out ${args}
                  ${source}
                  WORKING_DIRECTORY "${SCRATCH}" RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 120)
  if(NOT rc STREQUAL "0")
    message(FATAL_ERROR "jetmoe-generate (${name}) exited with ${rc}.\n--- output ---\n${out}${err}")
  endif()
  set(file "${SCRATCH}/out/${name}/generations.json")
  if(NOT out MATCHES "wrote out/${name}/generations.json \\(3 generation\\(s\\)\\)")
    message(FATAL_ERROR "jetmoe-generate does not say it wrote ${file}.\n--- output ---\n${out}${err}")
  endif()
  file(READ "${file}" json)
  string(JSON task ERROR_VARIABLE bad GET "${json}" task)
  if(bad OR NOT task STREQUAL "generate")
    message(FATAL_ERROR "${file} is not the results of jetmoe-generate (${bad}):\n${json}")
  endif()
  string(JSON n LENGTH "${json}" generations)
  list(LENGTH prompts want)
  if(NOT n EQUAL want)
    message(FATAL_ERROR "${file}: ${n} generations for ${want} prompts")
  endif()
  string(JSON eos GET "${json}" eos_id)
  set(tokens "")
  math(EXPR last "${n} - 1")
  foreach(i RANGE ${last})
    list(GET prompts ${i} prompt)
    string(JSON got GET "${json}" generations ${i} prompt)
    string(JSON completion GET "${json}" generations ${i} completion)
    string(JSON count GET "${json}" generations ${i} completion_tokens)
    string(JSON ids LENGTH "${json}" generations ${i} completion_ids)
    string(JSON reason GET "${json}" generations ${i} finish_reason)
    string(JSON prompt_tokens GET "${json}" generations ${i} prompt_tokens)
    list(APPEND tokens ${prompt_tokens})
    if(NOT got STREQUAL prompt)
      message(FATAL_ERROR "${file}: generation ${i} has the prompt '${got}', expected '${prompt}'")
    endif()
    if(NOT ids EQUAL count OR count LESS 1 OR count GREATER max_new)
      message(FATAL_ERROR "${file}: generation ${i}: ${ids} ids, completion_tokens ${count}, at most ${max_new}")
    endif()
    math(EXPR at "${ids} - 1")
    string(JSON final GET "${json}" generations ${i} completion_ids ${at})
    if(final EQUAL eos)
      set(expected eos)
    elseif(count EQUAL max_new)
      set(expected length)
    else()
      message(FATAL_ERROR "${file}: generation ${i} stopped after ${count} tokens without EOS")
    endif()
    if(NOT reason STREQUAL expected)
      message(FATAL_ERROR "${file}: generation ${i}: finish_reason ${reason}, expected ${expected}")
    endif()
    # Standard output prints "--- i ---", then the prompt and its completion.
    math(EXPR k "${i} + 1")
    string(FIND "${out}" "--- ${k} ---\n${prompt}${sep}${completion}\n" where)
    if(where EQUAL -1)
      message(FATAL_ERROR "standard output does not print generation ${k} as ${file} records it: "
                          "'${prompt}${sep}${completion}'.\n--- output ---\n${out}")
    endif()
  endforeach()
  set(${name}_tokens "${tokens}" PARENT_SCOPE)
  string(JSON generations GET "${json}" generations)
  set(${name}_generations "${generations}" PARENT_SCOPE)
  message(STATUS "${name}: ${n} generations, each as standard output printed it")
endfunction()

run(plain "")
run(chat "\n" generate/chat=true "generate/system=Be brief.")
# The chat template's tokens count as the prompt's.
foreach(i 0 1 2)
  list(GET plain_tokens ${i} p)
  list(GET chat_tokens ${i} c)
  if(NOT c GREATER p)
    message(FATAL_ERROR "prompt ${i}: ${c} tokens in chat mode, ${p} without the template")
  endif()
endforeach()

if(DEFINED MPIEXEC)
  # OpenBLAS on one thread in both runs (mpiexec binds a rank to a core): the same matrix products.
  set(ENV{OPENBLAS_NUM_THREADS} 1)
  set(sampling generate/temperature=1.0 generate/top_k=50 job/seed=77)
  run(one "" ${sampling})
  string(REPLACE "|" ";" launch "${MPIEXEC}")
  list(APPEND launch ${MPIEXEC_NUMPROC_FLAG} 2)
  run(two "" ${sampling})
  if(NOT one_generations STREQUAL two_generations)
    message(FATAL_ERROR "2 ranks generated otherwise than 1:\n--- 1 rank ---\n${one_generations}\n--- 2 ranks ---\n${two_generations}")
  endif()
  if(one_generations STREQUAL plain_generations)
    message(FATAL_ERROR "sampling at temperature 1 generated the greedy tokens: the comparison shows nothing")
  endif()
  message(STATUS "2 ranks generated what 1 rank did, sampling included")
  # Prompts from standard input, which mpiexec gives rank 0 only: rank 0 reads them for every rank.
  set(stdin ON)
  run(two-stdin "" ${sampling})
  unset(stdin)
  if(NOT one_generations STREQUAL two-stdin_generations)
    message(FATAL_ERROR "2 ranks with the prompts on standard input generated otherwise than 1")
  endif()
endif()
