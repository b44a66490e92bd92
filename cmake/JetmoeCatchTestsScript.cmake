cmake_minimum_required(VERSION 3.21)
# Run at build time by jetmoe_add_catch_tests(): writes OUT, a CTest file with one test per Catch2
# test case of EXE (and mpiexec variants of the [mpi] ones).
function(list_cases spec out_var)
  execute_process(COMMAND "${EXE}" ${spec} --list-test-names-only
                  OUTPUT_VARIABLE _text RESULT_VARIABLE _rc ERROR_VARIABLE _err)
  # Catch returns the number of listed tests as its exit status; only a crash is a failure.
  if(_rc MATCHES "[^0-9]")
    message(FATAL_ERROR "${EXE} --list-test-names-only failed: ${_rc}\n${_err}")
  endif()
  string(REPLACE ";" "\\;" _text "${_text}")
  string(REPLACE "\n" ";" _lines "${_text}")
  set(_names "")
  foreach(_line IN LISTS _lines)
    string(STRIP "${_line}" _line)
    if(NOT _line STREQUAL "")
      list(APPEND _names "${_line}")
    endif()
  endforeach()
  set(${out_var} "${_names}" PARENT_SCOPE)
endfunction()

list_cases("" all_cases)
set(labels_known unit mpi slow)
foreach(tag IN LISTS labels_known)
  list_cases("[${tag}]" cases_${tag})
endforeach()

string(REPLACE "|" ";" env "${ENVIRONMENT}")  # JETMOE_MPI_TEST_ENVIRONMENT
set(content "# Generated from ${EXE}; do not edit.\n")
foreach(name IN LISTS all_cases)
  # Catch test specs treat , [ ] * \\ specially: escape them so each name selects exactly itself.
  string(REGEX REPLACE "([],[*\\\\])" "\\\\\\1" spec "${name}")
  set(labels "")
  foreach(tag IN LISTS labels_known)
    if(name IN_LIST cases_${tag})
      list(APPEND labels ${tag})
    endif()
  endforeach()
  string(APPEND content
    "add_test([=[${name}]=] [=[${EXE}]=] [=[${spec}]=])\n"
    "set_tests_properties([=[${name}]=] PROPERTIES LABELS \"${labels}\" WORKING_DIRECTORY [=[${WORKDIR}]=] ENVIRONMENT \"${env}\")\n")
  if(MPIEXEC AND name IN_LIST cases_mpi)
    foreach(n IN LISTS MPI_RANKS)
      set(test "${name} (np=${n})")
      string(APPEND content
        "add_test([=[${test}]=] [=[${MPIEXEC}]=] ${MPIEXEC_NUMPROC_FLAG} ${n} ${MPIEXEC_EXTRA_FLAGS} [=[${EXE}]=] [=[${spec}]=])\n"
        "set_tests_properties([=[${test}]=] PROPERTIES LABELS \"${labels}\" PROCESSORS ${n} WORKING_DIRECTORY [=[${WORKDIR}]=] ENVIRONMENT \"${env}\" TIMEOUT 300)\n")
    endforeach()
  endif()
endforeach()
file(WRITE "${OUT}" "${content}")
