#pragma once
/// @file keel/ledger.hpp
/// @brief keel::ledger: a double-entry ledger (in memory or in Postgres) with point-in-time queries
/// and Merkle proofs.
#include <keel/ledger/engine.hpp>
#include <keel/ledger/error.hpp>
#include <keel/ledger/journal.hpp>
#include <keel/ledger/merkle.hpp>
#include <keel/ledger/pg_engine.hpp>
#include <keel/ledger/types.hpp>
