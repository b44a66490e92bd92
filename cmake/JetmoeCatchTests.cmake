# jetmoe_add_catch_tests(TARGET): registers every Catch2 test case of TARGET as its own CTest test.
#
# Catch tags become CTest labels ([unit], [mpi], [slow], [gpu]). Test cases tagged [mpi] are also
# registered at 2 and 4 ranks through mpiexec (oversubscribed, allowed as root), named "<case> (np=N)".
# The list is read from the built executable after each build (like Catch's catch_discover_tests,
# which cannot launch through mpiexec), so adding a TEST_CASE needs no CMake change.
set(_JETMOE_CATCH_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/JetmoeCatchTestsScript.cmake")

set(JETMOE_MPI_TEST_RANKS "2;4" CACHE STRING "Rank counts at which [mpi] test cases also run")
set(_jetmoe_default_mpiexec_flags "")
if(JETMOE_HAVE_MPI)
  execute_process(COMMAND "${MPIEXEC_EXECUTABLE}" --version OUTPUT_VARIABLE _jetmoe_mpiexec_version
                  ERROR_VARIABLE _jetmoe_mpiexec_version RESULT_VARIABLE _rc)
  if(_jetmoe_mpiexec_version MATCHES "Open MPI|OpenRTE")
    set(_jetmoe_default_mpiexec_flags "--oversubscribe")
  endif()
endif()
set(JETMOE_MPIEXEC_EXTRA_FLAGS "${_jetmoe_default_mpiexec_flags}" CACHE STRING
    "Extra mpiexec flags for tests (Open MPI: --oversubscribe, as the tests run more ranks than cores)")

# The environment of the tests (every test that runs mpiexec, and the Catch2 cases): Open MPI allowed
# to run as root (CI machines and containers do), oversubscribed (more ranks than cores), and without
# the shared-memory single-copy mechanism, which containers without ptrace rights refuse. Other MPI
# implementations ignore these variables.
set(JETMOE_MPI_TEST_ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1"
    "OMPI_MCA_btl_vader_single_copy_mechanism=none;OMPI_MCA_rmaps_base_oversubscribe=1")

function(jetmoe_add_catch_tests target)
  set(_out "${CMAKE_CURRENT_BINARY_DIR}/${target}_ctest.cmake")
  set(_ranks "")
  set(_mpiexec "")
  if(JETMOE_HAVE_MPI)
    set(_ranks "${JETMOE_MPI_TEST_RANKS}")
    set(_mpiexec "${MPIEXEC_EXECUTABLE}")
  endif()
  string(REPLACE ";" "|" _environment "${JETMOE_MPI_TEST_ENVIRONMENT}")  # one argument of the command
  add_custom_command(TARGET ${target} POST_BUILD
    COMMAND "${CMAKE_COMMAND}"
            -D "EXE=$<TARGET_FILE:${target}>"
            -D "OUT=${_out}"
            -D "WORKDIR=${CMAKE_CURRENT_BINARY_DIR}"
            -D "MPIEXEC=${_mpiexec}"
            -D "MPIEXEC_NUMPROC_FLAG=${MPIEXEC_NUMPROC_FLAG}"
            -D "MPIEXEC_EXTRA_FLAGS=${JETMOE_MPIEXEC_EXTRA_FLAGS}"
            -D "MPI_RANKS=${_ranks}"
            -D "ENVIRONMENT=${_environment}"
            -P "${_JETMOE_CATCH_SCRIPT}"
    BYPRODUCTS "${_out}"
    COMMENT "Listing the Catch2 test cases of ${target} for CTest"
    VERBATIM)
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${_out}")
endfunction()
