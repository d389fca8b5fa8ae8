// Yjs (npm `yjs`) making the updates keel::crdt::yjs's codec benchmark works on, and its own
// differential-update functions timed on them, for side-by-side figures.
//   node yjs_updates.mjs TRACE_JSON_GZ OUT_PREFIX GROUP
// Replays the trace into a Y.Text (one transaction per edit) and writes OUT_PREFIX.updates (each
// edit's update: a 4-byte little-endian length, then the bytes), OUT_PREFIX.final (the whole
// document, Y.encodeStateAsUpdate) and OUT_PREFIX.half (the state vector after half the edits).
// Prints one JSON line: {"peer":"yjs", "updates", "update_bytes", "final_bytes",
// "merge_bytes_per_second" (Y.mergeUpdates over runs of GROUP consecutive updates),
// "diff_bytes_per_second" (Y.diffUpdate(final, half)), "state_vector_bytes_per_second"
// (Y.encodeStateVectorFromUpdate(final)); bytes counted as the input's, the best of 5 rounds}.
import { readFileSync, writeFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import * as Y from "yjs";

const [tracePath, outPrefix, groupText = "64"] = process.argv.slice(2);
const group = Number(groupText);
const trace = JSON.parse(gunzipSync(readFileSync(tracePath)).toString("utf8"));
const patches = trace.txns.flatMap((txn) => txn.patches);

const doc = new Y.Doc();
doc.clientID = 1;
const updates = [];
doc.on("update", (update) => updates.push(update));
const text = doc.getText("text");
let half;
patches.forEach(([pos, deleted, inserted], k) => {
  doc.transact(() => {
    if (deleted > 0) text.delete(pos, deleted);
    if (inserted.length > 0) text.insert(pos, inserted);
  });
  if (k === Math.floor(patches.length / 2)) half = Y.encodeStateVector(doc);
});
const final = Y.encodeStateAsUpdate(doc);
const updateBytes = updates.reduce((sum, u) => sum + u.length, 0);
const packed = Buffer.alloc(updateBytes + 4 * updates.length);
let at = 0;
for (const u of updates) {
  packed.writeUInt32LE(u.length, at);
  packed.set(u, at + 4);
  at += 4 + u.length;
}
writeFileSync(outPrefix + ".updates", packed);
writeFileSync(outPrefix + ".final", final);
writeFileSync(outPrefix + ".half", half);

const best = (fn) => {
  let seconds = Infinity;
  for (let round = 0; round < 5; round++) {
    const started = process.hrtime.bigint();
    fn();
    seconds = Math.min(seconds, Number(process.hrtime.bigint() - started) / 1e9);
  }
  return seconds;
};
const groups = [];
for (let k = 0; k < updates.length; k += group) groups.push(updates.slice(k, k + group));
const mergeSeconds = best(() => {
  for (const g of groups) Y.mergeUpdates(g);
});
const diffSeconds = best(() => Y.diffUpdate(final, half));
const svSeconds = best(() => Y.encodeStateVectorFromUpdate(final));
console.log(JSON.stringify({ peer: "yjs", updates: updates.length, update_bytes: updateBytes, final_bytes: final.length,
                             merge_bytes_per_second: updateBytes / mergeSeconds,
                             diff_bytes_per_second: final.length / diffSeconds,
                             state_vector_bytes_per_second: final.length / svSeconds }));
