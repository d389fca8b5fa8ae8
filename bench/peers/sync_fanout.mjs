// The load generator of the keel::sync rooms benchmark (bench/sync): CLIENTS raw `ws` WebSocket
// clients in one room, speaking the Yjs sync protocol, the same code against keel and against
// @hocuspocus/server; in one node process, so one clock times sending and receipt.
//   node sync_fanout.mjs PROTOCOL URL ROOM CLIENTS WRITERS RATE SECONDS [WINDOW]
// PROTOCOL: `y-websocket` (keel: URL is the room's URL) or `hocuspocus` (its framing: every
// message starts with the document name ROOM, and the client authenticates first). Every client
// joins (sync step 1 with an empty state vector, answered by step 2); then the first WRITERS
// clients each keep a Y.Doc and send one small Y.Text insert as an update message (message type 0,
// sync type 2, the update as var-bytes) at RATE updates per second in all, open loop (0: as fast
// as possible, each writer keeping at most WINDOW updates, default 16, not yet received by every
// other client), for SECONDS. Every other client timestamps each update's receipt; the update is
// known by its client id and clock (read from the update's first struct).
// Prints one JSON line {"peer", "clients", "writers", "rate", "sent", "delivered" (receipts at the
// other clients), "undelivered" (receipts still missing 5 s after the last send), "seconds"
// (first send to last receipt), "sent_per_s", "delivered_per_s", "p50_ms", "p99_ms", "max_ms",
// "client_cpu" (the node process's CPU time over the run's wall time: 1.0 is one core busy)}.
import WebSocket from "ws";
import * as Y from "yjs";
import { messageSync, syncStep1, syncStep2, syncUpdate, syncProtocol } from "./sync_protocol.mjs";
import * as decoding from "lib0/decoding";

const [protocol, url, room, clientsText, writersText, rateText, secondsText, windowText = "16"] =
  process.argv.slice(2);
const clients = Number(clientsText);
const writers = Number(writersText);
const rate = Number(rateText);
const seconds = Number(secondsText);
const window = Number(windowText);
const { hocuspocus, syncMessage, authMessage, emptyStateVector, read } = syncProtocol(protocol, room);

// An update's identity: the client and clock of its first struct.
const updateKey = (d) => {
  const u = decoding.createDecoder(decoding.readVarUint8Array(d));
  if (decoding.readVarUint(u) === 0) return "";
  decoding.readVarUint(u);  // structs of the first client
  const client = decoding.readVarUint(u);
  return `${client}:${decoding.readVarUint(u)}`;
};

// Latencies in 10 µs buckets up to 5 s.
const bucketUs = 10;
const histogram = new Uint32Array(500_000);
let delivered = 0;
let lastReceipt = 0n;
const pending = new Map();  // key -> {writer, sentAt, remaining}
const outstanding = new Uint32Array(writers);
let wake = () => {};

const sockets = [];
const open = (index) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.binaryType = "nodebuffer";
    let joined = false;
    ws.on("error", reject);
    ws.on("open", () => {
      if (hocuspocus) ws.send(authMessage());
      ws.send(syncMessage(syncStep1, emptyStateVector));
    });
    ws.on("message", (data) => {
      const [type, step, d] = read(data);
      if (type !== messageSync) return;
      if (step === syncStep2 && !joined) {
        joined = true;
        return resolve(ws);
      }
      if (step !== syncUpdate) return;
      const key = updateKey(d);
      const sent = pending.get(key);
      if (sent === undefined || sent.writer === index) return;
      const now = process.hrtime.bigint();
      const us = Number(now - sent.sentAt) / 1e3;
      ++histogram[Math.min(histogram.length - 1, Math.floor(us / bucketUs))];
      ++delivered;
      lastReceipt = now;
      if (--sent.remaining === 0) {
        pending.delete(key);
        --outstanding[sent.writer];
        wake();
      }
    });
  });
for (let k = 0; k < clients; k += 10) {
  const batch = [];
  for (let j = k; j < Math.min(clients, k + 10); ++j) batch.push(open(j));
  sockets.push(...(await Promise.all(batch)));
}

// The writers: one Y.Doc each, one insert per update.
const docs = [];
for (let w = 0; w < writers; ++w) {
  const doc = new Y.Doc();
  const text = doc.getText("text");
  let update;
  doc.on("update", (u) => (update = u));
  docs.push(() => {
    const clock = Y.getState(doc.store, doc.clientID);
    text.insert(text.length, "x");
    pending.set(`${doc.clientID}:${clock}`,
                { writer: w, sentAt: process.hrtime.bigint(), remaining: clients - 1 });
    ++outstanding[w];
    sockets[w].send(syncMessage(syncUpdate, update));
  });
}

let sent = 0;
const cpuStarted = process.cpuUsage();
const started = process.hrtime.bigint();
const endsAt = started + BigInt(Math.round(seconds * 1e9));
let sending = true;
await new Promise((resolve) => {
  if (rate > 0) {
    // Open loop: whatever is due by now, round robin over the writers, every millisecond.
    const tick = () => {
      const now = process.hrtime.bigint();
      if (now >= endsAt) return resolve();
      const due = Math.floor((Number(now - started) / 1e9) * rate);
      for (; sent < due; ++sent) docs[sent % writers]();
      setTimeout(tick, 1);
    };
    tick();
  } else {
    wake = () => {
      if (!sending) return;
      if (process.hrtime.bigint() >= endsAt) {
        sending = false;
        return resolve();
      }
      for (let w = 0; w < writers; ++w) {
        for (; outstanding[w] < window; ++sent) docs[w]();
      }
    };
    wake();
    setTimeout(() => {
      sending = false;
      resolve();
    }, seconds * 1e3);
  }
});
sending = false;
const drainUntil = process.hrtime.bigint() + 5_000_000_000n;
while (pending.size > 0 && process.hrtime.bigint() < drainUntil) await new Promise((r) => setTimeout(r, 5));
const cpu = process.cpuUsage(cpuStarted);
const wallSeconds = Number(process.hrtime.bigint() - started) / 1e9;
const elapsed = Number(lastReceipt - started) / 1e9;
let undelivered = 0;
for (const p of pending.values()) undelivered += p.remaining;

const percentile = (q) => {
  let seen = 0;
  const target = q * delivered;
  for (let b = 0; b < histogram.length; ++b) {
    seen += histogram[b];
    if (seen >= target && seen > 0) return ((b + 0.5) * bucketUs) / 1e3;
  }
  return NaN;
};
let max = 0;
for (let b = histogram.length - 1; b >= 0; --b) {
  if (histogram[b] > 0) {
    max = ((b + 1) * bucketUs) / 1e3;
    break;
  }
}
for (const ws of sockets) ws.terminate();
console.log(JSON.stringify({ peer: protocol, clients, writers, rate, sent, delivered, undelivered, seconds: elapsed,
                             sent_per_s: sent / elapsed, delivered_per_s: delivered / elapsed,
                             p50_ms: percentile(0.5), p99_ms: percentile(0.99), max_ms: max,
                             client_cpu: (cpu.user + cpu.system) / 1e6 / wallSeconds }));
process.exit(0);
