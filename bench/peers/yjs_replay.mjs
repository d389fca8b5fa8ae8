// Yjs (npm `yjs`) replaying a sequential editing trace into a Y.Text, one edit per transaction
// (what an editor binding does per keystroke), for side-by-side figures with keel::crdt::text.
//   node yjs_replay.mjs TRACE_JSON_GZ [ROUNDS]
// Prints one JSON line: {"peer":"yjs", "ops", "seconds" (the best round), "ops_per_second",
// "encoded_bytes" (Y.encodeStateAsUpdate of the final document), "load_ms" (applying it to a
// new Y.Doc), "save_ms"}.
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import * as Y from "yjs";

const [tracePath, roundsText = "3"] = process.argv.slice(2);
const trace = JSON.parse(gunzipSync(readFileSync(tracePath)).toString("utf8"));
const patches = trace.txns.flatMap((txn) => txn.patches);

// Trace positions count code points; Y.Text counts UTF-16 units. The traces have nothing
// beyond U+FFFF, so the two agree (checked below against endContent).
const replay = () => {
  const doc = new Y.Doc();
  doc.clientID = 1;
  const text = doc.getText("text");
  for (const [pos, deleted, inserted] of patches) {
    if (deleted > 0) text.delete(pos, deleted);
    if (inserted.length > 0) text.insert(pos, inserted);
  }
  return doc;
};

let best = Infinity;
let doc;
for (let round = 0; round < Number(roundsText); round++) {
  const started = process.hrtime.bigint();
  doc = replay();
  best = Math.min(best, Number(process.hrtime.bigint() - started) / 1e9);
}
if (doc.getText("text").toString() !== trace.endContent) throw new Error("yjs replayed to a different text");
const timed = (fn) => {
  const started = process.hrtime.bigint();
  const out = fn();
  return [out, Number(process.hrtime.bigint() - started) / 1e6];
};
const [update, saveMs] = timed(() => Y.encodeStateAsUpdate(doc));
const [, loadMs] = timed(() => Y.applyUpdate(new Y.Doc(), update));
console.log(JSON.stringify({ peer: "yjs", ops: patches.length, seconds: best, ops_per_second: patches.length / best,
                             encoded_bytes: update.length, save_ms: saveMs, load_ms: loadMs }));
