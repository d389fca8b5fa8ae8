// A large Yjs document for the join benchmark of keel::sync's rooms (bench/sync): npm yjs replays
// the sequential editing trace into a Y.Text, one transaction per edit, and goes on replaying it
// again after the text it made (each edit's position moved past it) until EDITS edits are in.
//   node yjs_document.mjs TRACE_JSON_GZ EDITS OUT_PATH
// Writes Y.encodeStateAsUpdate of the document to OUT_PATH and prints one JSON line
// {"peer":"yjs", "edits", "characters", "bytes"}.
import { readFileSync, writeFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import * as Y from "yjs";

const [tracePath, editsText, outPath] = process.argv.slice(2);
const trace = JSON.parse(gunzipSync(readFileSync(tracePath)).toString("utf8"));
const patches = trace.txns.flatMap((txn) => txn.patches);
const edits = Number(editsText);

const doc = new Y.Doc();
doc.clientID = 1;
const text = doc.getText("text");
let done = 0;
for (let offset = 0; done < edits; offset = text.length) {
  for (const [pos, deleted, inserted] of patches) {
    if (done === edits) break;
    doc.transact(() => {
      if (deleted > 0) text.delete(offset + pos, deleted);
      if (inserted.length > 0) text.insert(offset + pos, inserted);
    });
    ++done;
  }
}
const update = Y.encodeStateAsUpdate(doc);
writeFileSync(outPath, update);
console.log(JSON.stringify({ peer: "yjs", edits: done, characters: text.length, bytes: update.length }));
