// placeholder
#include "support.hpp"
