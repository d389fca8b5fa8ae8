// WebSocket clients for keel::sync's live table changes (tests/sync/changes_test.cpp): npm's ws
// package, pinned in tests/clients/package.json and installed into .keel/clients by ./keel test.
// Each scenario prints one JSON line.
//   node changes_clients.cjs collect URL REQUEST UNTIL
//        sends REQUEST (a subscribe message, or any text), then records what the server sends
//        until a change whose row's name is UNTIL arrives ("" stops at the acknowledgement) or
//        the server closes; "@progress" stops at the first progress position
//   node changes_clients.cjs stall URL REQUEST SIGNAL_FILE
//        subscribes, then stops reading its socket until SIGNAL_FILE exists, then reads what is
//        left until the server closes
//   node changes_clients.cjs wander URL REQUEST UNTIL SEED
//        as collect, but drops the connection at random (after the acknowledgement, after a
//        change) and comes back with the last position it was given, until UNTIL arrives
'use strict';
const { load, generator } = require('./npm_clients.cjs');
const WebSocket = load('ws');

const deadline = 60000;


// One connection: sends `request`, calls `onMessage(parsed)` for each message until it returns
// true (stop) or the server closes. Resolves with the close, or null when the client stopped.
function session(url, request, onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    let done = false;
    const timer = setTimeout(() => finish(new Error('timed out')), deadline);
    function finish(outcome) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    }
    ws.on('open', () => ws.send(request));
    ws.on('message', (data) => {
      if (done) return;  // dropped: what was still buffered is lost, as on a real network
      const message = JSON.parse(data.toString());
      if (onMessage(message)) {
        ws.terminate();
        finish(null);
      }
    });
    ws.on('close', (code, reason) => finish({ code, reason: reason.toString() }));
    ws.on('error', (error) => {
      if (!done && ws.readyState !== WebSocket.OPEN) finish(error);
    });
  });
}

async function collect(url, request, until) {
  const out = { subscribed: null, changes: [], progress: [], resync: null, error: null, closed: null };
  out.closed = await session(url, request, (m) => {
    if (m.subscribed !== undefined) {
      out.subscribed = m.position;
      return until === '';
    }
    if (m.progress !== undefined) {
      out.progress.push(m.progress);
      return until === '@progress';
    }
    if (m.resync !== undefined) out.resync = m.resync;
    else if (m.error !== undefined) out.error = m.error;
    else {
      out.changes.push(m);
      const row = m.row || m.old;
      return row && row.name === until;
    }
    return false;
  });
  return out;
}

function stall(url, request, signal) {
  return new Promise((resolve, reject) => {
    const fs = require('node:fs');
    const out = { subscribed: null, changes: 0, resync: null, closed: null };
    const ws = new WebSocket(url);
    const timer = setTimeout(() => reject(new Error('timed out')), deadline);
    ws.on('open', () => ws.send(request));
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m.subscribed !== undefined) {
        out.subscribed = m.position;
        ws.pause();  // a client that stops reading: the server's queue for it fills
        const poll = setInterval(() => {
          if (fs.existsSync(signal)) {
            clearInterval(poll);
            ws.resume();
          }
        }, 5);
      } else if (m.resync !== undefined) out.resync = m.resync;
      else if (m.position !== undefined) out.changes++;
    });
    ws.on('close', (code, reason) => {
      clearTimeout(timer);
      out.closed = { code, reason: reason.toString() };
      resolve(out);
    });
    ws.on('error', () => {});
  });
}

async function wander(url, request, until, seed) {
  const random = generator(seed);
  const base = JSON.parse(request);
  let after = base.after;
  const changes = [];
  let reconnects = 0;
  let finished = false;
  while (!finished) {
    const closed = await session(url, JSON.stringify({ ...base, after }), (m) => {
      if (m.subscribed !== undefined) {
        after = m.position;
        return random() < 0.15;
      }
      if (m.progress !== undefined) {
        after = m.progress;
        return random() < 0.15;
      }
      if (m.resync !== undefined || m.error !== undefined) throw new Error('told: ' + JSON.stringify(m));
      changes.push({ position: m.position, op: m.op, id: (m.row || m.old).id });
      after = m.position;
      const row = m.row || m.old;
      if (row.name === until) {
        finished = true;
        return true;
      }
      return random() < 0.1;
    });
    if (closed !== null) throw new Error('the server closed: ' + JSON.stringify(closed));
    if (!finished) ++reconnects;
  }
  return { changes, reconnects };
}

async function main() {
  const [scenario, url, request, until, seed] = process.argv.slice(2);
  let out;
  if (scenario === 'collect') out = await collect(url, request, until);
  else if (scenario === 'stall') out = await stall(url, request, until);
  else if (scenario === 'wander') out = await wander(url, request, until, Number(seed));
  else throw new Error('unknown scenario ' + scenario);
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
