// The reference compiler for keel::dsl's differential tests: PRQL's own prqlc (npm's prqlc,
// pinned in tests/clients/package.json, installed into .keel/clients by ./keel test). The tests
// run each query of a corpus through keel::dsl and through this script, execute both SQL texts
// on the same Postgres, and compare the rows.
// Reads a JSON array of PRQL query strings on stdin; writes a JSON array to stdout, one entry
// per query, in order: {"sql": "..."} or {"error": "message"}. Target sql.postgres, unformatted,
// no signature comment. Exits 1 only when the input is not a JSON array of strings, or prqlc
// cannot be loaded.
//   node prqlc_compile.cjs < queries.json
'use strict';
const path = require('node:path');

function loadPrqlc() {
  const dir = process.env.KEEL_TEST_CLIENTS_DIR;
  if (dir) {
    try {
      return require(require.resolve('prqlc', { paths: [path.resolve(dir)] }));
    } catch (error) {
      if (error.code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  return require('prqlc');
}

// prqlc throws an Error whose message is JSON {"inner": [ErrorMessage...]}; keep the reasons.
function errorText(error) {
  const message = error && error.message !== undefined ? error.message : String(error);
  try {
    const parsed = JSON.parse(message);
    const inner = parsed && Array.isArray(parsed.inner) ? parsed.inner : null;
    if (inner && inner.length > 0) {
      return inner
        .map((m) => {
          const code = m.code ? `[${m.code}] ` : '';
          const hints = Array.isArray(m.hints) && m.hints.length > 0 ? ` (${m.hints.join('; ')})` : '';
          return `${code}${m.reason}${hints}`;
        })
        .join('\n');
    }
  } catch (_) {
    // not JSON: use the message as it is
  }
  return message;
}

function main() {
  let prqlc;
  try {
    prqlc = loadPrqlc();
  } catch (error) {
    console.error(`cannot load npm's prqlc (KEEL_TEST_CLIENTS_DIR=${process.env.KEEL_TEST_CLIENTS_DIR || ''}): ${error.message}`);
    process.exit(1);
  }

  const input = require('node:fs').readFileSync(0, 'utf8');
  let queries;
  try {
    queries = JSON.parse(input);
  } catch (error) {
    console.error(`stdin is not JSON: ${error.message}`);
    process.exit(1);
  }
  if (!Array.isArray(queries) || !queries.every((q) => typeof q === 'string')) {
    console.error('stdin must be a JSON array of PRQL query strings');
    process.exit(1);
  }

  const results = queries.map((query) => {
    // compile() takes ownership of the options (wasm-bindgen frees them), so a fresh set each time.
    const options = new prqlc.CompileOptions();
    options.target = 'sql.postgres';
    options.format = false;
    options.signature_comment = false;
    try {
      const sql = prqlc.compile(query, options);
      if (typeof sql !== 'string') return { error: 'prqlc returned no SQL' };
      return { sql: sql.trim() };
    } catch (error) {
      return { error: errorText(error) };
    }
  });
  process.stdout.write(JSON.stringify(results) + '\n');
}

main();
