// Beast's non-template code, compiled once (BOOST_BEAST_SEPARATE_COMPILATION is a public
// definition of keel::net). Asio itself is compiled once in keel::asio.
#include <boost/beast/src.hpp>
