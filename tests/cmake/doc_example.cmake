# cmake -DDOC=<docs/x.md> -DEXAMPLE=<examples/x/y.cpp> -P doc_example.cmake
# Fails unless the doc quotes the example verbatim, so the code in docs/ is code that compiles.
file(READ "${DOC}" doc)
file(READ "${EXAMPLE}" example)
string(FIND "${doc}" "${example}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "${DOC} does not quote ${EXAMPLE} verbatim; paste the example file into the doc's code block")
endif()
