# Run at every build: writes OUT (generated/jetmoe/revision.hpp) with `git describe` of SOURCE_DIR,
# touching the file only when the revision changed, so --version never reports a stale revision and
# an unchanged tree recompiles nothing.
set(revision "")
find_package(Git QUIET)
if(GIT_FOUND AND EXISTS "${SOURCE_DIR}/.git")
  execute_process(COMMAND "${GIT_EXECUTABLE}" describe --always --dirty --abbrev=10
                  WORKING_DIRECTORY "${SOURCE_DIR}" OUTPUT_VARIABLE revision
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
endif()
set(content "#pragma once\n// Generated at build time by cmake/JetmoeRevision.cmake.\n#define JETMOE_GIT_REVISION \"${revision}\"\n")
if(EXISTS "${OUT}")
  file(READ "${OUT}" old)
  if(old STREQUAL content)
    return()
  endif()
endif()
file(WRITE "${OUT}" "${content}")
