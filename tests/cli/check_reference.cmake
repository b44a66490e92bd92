# Fails when docs/deck-reference.md is not what `jetmoe-train --deck-reference` prints.
execute_process(COMMAND "${APP}" --deck-reference OUTPUT_FILE "${OUT}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${APP} --deck-reference failed (${rc})")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" -E compare_files "${OUT}" "${DOC}" RESULT_VARIABLE same)
if(NOT same EQUAL 0)
  message(FATAL_ERROR "${DOC} is out of date with the deck schema (src/core/deck_schema.cpp).\n"
                      "Regenerate it: jetmoe-train --deck-reference > docs/deck-reference.md")
endif()
