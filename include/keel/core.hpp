#pragma once
/// @file keel/core.hpp
/// @brief keel::core: errors, bytes, hashing, signatures, varints, bit streams, UTF-8, clocks, logging.
#include <keel/core/assert.hpp>
#include <keel/core/backoff.hpp>
#include <keel/core/bits.hpp>
#include <keel/core/bulk_memory.hpp>
#include <keel/core/byte_io.hpp>
#include <keel/core/bytes.hpp>
#include <keel/core/clock.hpp>
#include <keel/core/ed25519.hpp>
#include <keel/core/endian.hpp>
#include <keel/core/error.hpp>
#include <keel/core/hash.hpp>
#include <keel/core/log.hpp>
#include <keel/core/metrics.hpp>
#include <keel/core/result.hpp>
#include <keel/core/time_text.hpp>
#include <keel/core/utf8.hpp>
#include <keel/core/varint.hpp>
#include <keel/core/version.hpp>
#include <keel/core/xxhash.hpp>
