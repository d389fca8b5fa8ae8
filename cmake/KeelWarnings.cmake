# keel_set_warnings(<target>): the warning set every keel target compiles with.
function(keel_set_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE
      -Wall -Wextra -Wpedantic -Wshadow -Wconversion -Wsign-conversion -Wnon-virtual-dtor
      -Wold-style-cast -Woverloaded-virtual -Wimplicit-fallthrough
      # Options are aggregates used with designated initializers; omitted fields keep their
      # defaults on purpose, which g++ 12 would otherwise warn about.
      -Wno-missing-field-initializers)
    # g++'s flow analysis at -O1 under the sanitizers reports uninitialised uses that are not
    # (its false positives there), and g++ 12 warns that TSan does not model
    # atomic_thread_fence; clang needs neither (and would reject the unknown options).
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_FLAGS MATCHES "-fsanitize=")
      target_compile_options(${target} PRIVATE -Wno-maybe-uninitialized)
      if(CMAKE_CXX_FLAGS MATCHES "-fsanitize=thread" AND CMAKE_CXX_COMPILER_VERSION VERSION_GREATER_EQUAL 12)
        target_compile_options(${target} PRIVATE -Wno-tsan)
      endif()
    endif()
    if(KEEL_WARNINGS_AS_ERRORS)
      target_compile_options(${target} PRIVATE -Werror)
    endif()
  endif()
endfunction()
