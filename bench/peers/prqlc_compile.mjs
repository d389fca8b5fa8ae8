// prqlc (PRQL's own compiler, npm's WebAssembly build) compiling keel's differential corpus,
// for side-by-side figures with keel::dsl's compiler.
//   node prqlc_compile.mjs CORPUS_FILE ROUNDS
// Prints one JSON line: {"peer":"prqlc", "queries", "seconds", "queries_per_second", "us_per_query"}.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const prqlc = require("prqlc");
const [corpusPath, roundsText = "20"] = process.argv.slice(2);
const rounds = Number(roundsText);
// The corpus's blocks, as the tests read them: separated by "# ---" lines, each named.
const queries = readFileSync(corpusPath, "utf8")
  .split("\n# ---\n")
  .filter((block) => block.startsWith("# name: "))
  .map((block) => block.slice(block.indexOf("\n") + 1));
const compileOne = (text) => {
  // compile() takes the options and frees them: a new object each time.
  const options = new prqlc.CompileOptions();
  options.target = "sql.postgres";
  options.format = false;
  options.signature_comment = false;
  return prqlc.compile(text, options);
};
for (const q of queries) compileOne(q);  // warm-up, and proof that every query compiles
const started = process.hrtime.bigint();
for (let r = 0; r < rounds; r++) for (const q of queries) compileOne(q);
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const compiled = rounds * queries.length;
console.log(JSON.stringify({ peer: "prqlc", queries: compiled, seconds, queries_per_second: compiled / seconds,
                             us_per_query: (seconds * 1e6) / compiled }));
