// The end-to-end join of the keel::sync rooms benchmark (bench/sync): one client puts a large Yjs
// document into a room (as one update) and stays; then ROUNDS new clients, one after another,
// each send sync step 1 with an empty state vector and time it until the server's step 2 (the
// whole document) has arrived. The same code against keel and @hocuspocus/server.
//   node sync_join.mjs PROTOCOL URL ROOM DOCUMENT_PATH ROUNDS
// PROTOCOL as in sync_fanout.mjs (`y-websocket` or `hocuspocus`; a hocuspocus client is
// authenticated before its clock starts). An answer smaller than half the document (the server
// had not taken the document in yet) is not counted and the round is retried.
// Prints one JSON line {"peer", "document_bytes", "rounds", "join_ms" (the median), "min_ms",
// "max_ms", "answer_bytes"}.
import { readFileSync } from "node:fs";
import WebSocket from "ws";
import {
  authenticated, messageAuth, messageSync, syncProtocol, syncStep1, syncStep2, syncUpdate,
} from "./sync_protocol.mjs";
import * as decoding from "lib0/decoding";

const [protocol, url, room, documentPath, roundsText] = process.argv.slice(2);
const document = readFileSync(documentPath);
const rounds = Number(roundsText);

const { hocuspocus, syncMessage, authMessage, emptyStateVector, read } = syncProtocol(protocol, room);

// Opens a client, authenticated for hocuspocus; resolves with the socket and a function that
// sends step 1 and resolves with [milliseconds, answer bytes] at the step 2.
const connect = () =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
    ws.binaryType = "nodebuffer";
    let answered = null;
    let sentAt = 0n;
    const join = () =>
      new Promise((done) => {
        answered = done;
        sentAt = process.hrtime.bigint();
        ws.send(syncMessage(syncStep1, emptyStateVector));
      });
    ws.on("error", reject);
    ws.on("open", () => (hocuspocus ? ws.send(authMessage()) : resolve([ws, join])));
    ws.on("message", (data) => {
      const [type, sub, d] = read(data);
      if (hocuspocus && type === messageAuth && sub === authenticated) return resolve([ws, join]);
      if (type !== messageSync || sub !== syncStep2 || answered === null) return;
      const ms = Number(process.hrtime.bigint() - sentAt) / 1e6;
      const bytes = decoding.readVarUint8Array(d).length;
      const done = answered;
      answered = null;
      done([ms, bytes]);
    });
  });

const [owner, ownerJoin] = await connect();
await ownerJoin();
owner.send(syncMessage(syncUpdate, document));
const times = [];
let answerBytes = 0;
for (let attempts = 0; times.length < rounds && attempts < rounds * 20; ++attempts) {
  const [ws, join] = await connect();
  const [ms, bytes] = await join();
  ws.close();
  if (bytes < document.length / 2) {
    await new Promise((r) => setTimeout(r, 50));
    continue;
  }
  times.push(ms);
  answerBytes = bytes;
}
owner.close();
if (times.length === 0) throw new Error("the server never answered with the document");
times.sort((a, b) => a - b);
console.log(JSON.stringify({ peer: protocol, document_bytes: document.length, rounds: times.length,
                             join_ms: times[Math.floor(times.length / 2)], min_ms: times[0],
                             max_ms: times[times.length - 1], answer_bytes: answerBytes }));
process.exit(0);
