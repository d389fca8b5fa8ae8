# keel_set_warnings(<target>): the warning set every keel target compiles with.
function(keel_set_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE
      -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
      -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough
      # Options are aggregates used with designated initializers; omitted fields keep their
      # defaults on purpose, which g++ 12 would otherwise warn about.
      -Wno-missing-field-initializers)
    if(KEEL_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
