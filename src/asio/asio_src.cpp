// Asio's non-template code, compiled once for every keel component that uses Asio
// (BOOST_ASIO_SEPARATE_COMPILATION is a public definition of keel::asio).
#include <boost/asio/impl/src.hpp>
