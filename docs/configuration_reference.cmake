# cmake -DGENERATOR=<config_reference> -DREFERENCE=docs/configuration.md -DGENERATED_COPY=<file in the build tree>
#       -DMODE=check|update -P this
# update: writes the reference generated from the options schema.
# check:  fails when the checked-in reference differs from the generated one, or when a key that
#         --help lists is missing from it (both come from one schema: this guards the generator).
execute_process(COMMAND ${GENERATOR} --markdown OUTPUT_VARIABLE generated RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${GENERATOR} --markdown failed (${status})")
endif()
if(MODE STREQUAL "update")
  file(WRITE ${REFERENCE} "${generated}")
  message(STATUS "wrote ${REFERENCE}")
  return()
endif()

file(READ ${REFERENCE} checked_in)
if(NOT checked_in STREQUAL generated)
  file(WRITE ${GENERATED_COPY} "${generated}")
  message(FATAL_ERROR "${REFERENCE} is out of date (the generated one is ${GENERATED_COPY}; "
                      "diff them, then run: cmake --build build --target configuration-reference)")
endif()

execute_process(COMMAND ${GENERATOR} --help OUTPUT_VARIABLE help RESULT_VARIABLE status)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${GENERATOR} --help failed (${status})")
endif()
string(REGEX MATCHALL "\n  [a-z_]+(\\.[a-z_]+)* " help_keys "${help}")
list(LENGTH help_keys count)
if(count LESS 10)
  message(FATAL_ERROR "found only ${count} keys in --help:\n${help}")
endif()
foreach(key ${help_keys})
  string(STRIP "${key}" key)
  string(FIND "${checked_in}" "| `${key}` |" at)
  if(at EQUAL -1)
    message(FATAL_ERROR "--help lists '${key}' but ${REFERENCE} does not")
  endif()
endforeach()
message(STATUS "${REFERENCE} matches the schema (${count} keys of --help)")
