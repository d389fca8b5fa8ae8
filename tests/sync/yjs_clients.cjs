// Real Yjs clients for keel::sync's tests: npm yjs + y-websocket (unmodified) with the ws package
// as the WebSocket, pinned in tests/clients/package.json and installed into .keel/clients by
// ./keel test. Each scenario prints one JSON line.
//   node yjs_clients.cjs converge URL ROOM CLIENTS SEED   N clients edit one Y.Text at random,
//        dropping and regaining their connection; all end with the same text
//   node yjs_clients.cjs write URL ROOM TEXT              types TEXT into the room, waits for sync
//   node yjs_clients.cjs read URL ROOM                    the room's text as a new client gets it
//   node yjs_clients.cjs awareness URL ROOM               B sees A's cursor; A's socket drops; B
//        sees it removed (by the server: A never says goodbye)
//   node yjs_clients.cjs read_only URL ROOM               a read-only client's edit is dropped
//        and it is told so; it still gets the writer's edits
//   node yjs_clients.cjs denied URL ROOM                  the close code a denied client gets
//   node yjs_clients.cjs malformed URL ROOM               raw bad messages get close codes; a
//        client of the room keeps editing through it
//   node yjs_clients.cjs restart URL ROOM                two clients type; after {"ready":true}
//        it waits for a line on stdin (the test restarts Postgres), types more, and a new client
//        reads both
//   node yjs_clients.cjs processes URL_A URL_B ROOM SEED PID_A   two clients on server process A,
//        one on B, editing at random and dropping their connections; A is SIGKILLed mid-session,
//        its clients move to B; all converge, and what A had stored is still there
'use strict';
const { load, generator } = require('./npm_clients.cjs');
const Y = load('yjs');
const { WebsocketProvider } = load('y-websocket');
const WebSocket = load('ws');

const deadline = 20000;
// Resolves when `condition()` holds, checked on every event-loop turn (no fixed sleeps).
function until(condition, what) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const check = () => {
      if (condition()) return resolve(Date.now() - started);
      if (Date.now() - started > deadline) return reject(new Error('timed out waiting for ' + what));
      setImmediate(check);
    };
    check();
  });
}


function connect(url, room, token, doc = new Y.Doc()) {
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: WebSocket, disableBc: true, params: { token }, maxBackoffTime: 200,
  });
  return { doc, provider, text: doc.getText('text') };
}

const stateVector = (doc) => Buffer.from(Y.encodeStateVector(doc)).toString('hex');

async function converge(url, room, count, seed) {
  const random = generator(seed);
  const clients = [];
  for (let k = 0; k < count; k++) clients.push(connect(url, room, 'w'));
  await until(() => clients.every((c) => c.provider.synced), 'every client to sync');
  const pieces = ['a', 'bc', 'ü', '😀', ' ', 'xyz'];
  const counts = { disconnects: 0 };  // edits go on offline and are sent when a client is back
  for (let step = 0; step < 300; step++) {
    randomStep(clients, random, pieces, counts);
    if (step % 10 === 0) await new Promise((resolve) => setImmediate(resolve));  // let messages flow
  }
  for (const c of clients) c.provider.connect();
  await until(() => clients.every((c) => c.provider.synced), 'every client to sync again');
  const ms = await until(() => clients.every((c) => c.text.toString() === clients[0].text.toString() &&
                                                   stateVector(c.doc) === stateVector(clients[0].doc)),
                         'the clients to converge');
  const out = { text: clients[0].text.toString(), length: clients[0].text.length, equal: true, disconnects: counts.disconnects, converge_ms: ms };
  for (const c of clients) c.provider.destroy();
  return out;
}

async function write(url, room, content) {
  const c = connect(url, room, 'w');
  await until(() => c.provider.synced, 'sync');
  c.text.insert(c.text.length, content);
  // The server holds it once a second client, joining afresh, reads it back.
  const probe = connect(url, room, 'w');
  await until(() => probe.provider.synced && probe.text.toString() === c.text.toString(), 'a second client to see it');
  const out = { text: c.text.toString() };
  c.provider.destroy();
  probe.provider.destroy();
  return out;
}

async function read(url, room) {
  const c = connect(url, room, 'w');
  await until(() => c.provider.synced, 'sync');
  const out = { text: c.text.toString() };
  c.provider.destroy();
  return out;
}

async function awareness(url, room) {
  const a = connect(url, room, 'w');
  const b = connect(url, room, 'w');
  await until(() => a.provider.synced && b.provider.synced, 'sync');
  a.provider.awareness.setLocalStateField('cursor', { user: 'a', index: 3 });
  const seen = await until(() => {
    const s = b.provider.awareness.getStates().get(a.doc.clientID);
    return s !== undefined && s.cursor !== undefined && s.cursor.index === 3;
  }, "b to see a's cursor");
  // A's socket drops without a word (no awareness removal from A), and A stays away.
  a.provider.shouldConnect = false;
  a.provider.ws.terminate();
  const removed = await until(() => !b.provider.awareness.getStates().has(a.doc.clientID), "a's cursor to go");
  const out = { seen_ms: seen, removed_ms: removed, b_states: b.provider.awareness.getStates().size };
  a.provider.destroy();
  b.provider.destroy();
  return out;
}

async function readOnly(url, room) {
  const warnings = [];
  const warn = console.warn;
  console.warn = (...args) => warnings.push(args.join(' '));
  const writer = connect(url, room, 'w');
  const reader = connect(url, room, 'r');
  await until(() => writer.provider.synced && reader.provider.synced, 'sync');
  reader.text.insert(0, 'from the reader ');
  writer.text.insert(writer.text.length, 'from the writer');
  await until(() => reader.text.toString().includes('from the writer'), "the reader to get the writer's edit");
  await until(() => warnings.some((w) => w.includes('read-only')), 'the reader to be told');
  // A fresh client sees what the server kept: the writer's edit only.
  const probe = connect(url, room, 'w');
  await until(() => probe.provider.synced && probe.text.toString().includes('from the writer'), 'a probe');
  const out = { writer: writer.text.toString(), probe: probe.text.toString(), told: warnings.find((w) => w.includes('read-only')) };
  console.warn = warn;
  for (const c of [writer, reader, probe]) c.provider.destroy();
  return out;
}

async function denied(url, room) {
  const warnings = [];
  console.warn = (...args) => warnings.push(args.join(' '));
  const c = connect(url, room, 'x');
  let code = null;
  c.provider.on('connection-close', (event) => {
    if (code === null) code = event.code;
    c.provider.shouldConnect = false;
  });
  await until(() => code !== null, 'the close');
  c.provider.destroy();
  return { code, told: warnings.some((w) => w.includes('Permission denied')) };
}

function rawSocket(url, room) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url + '/' + room + '?token=w');
    ws.binaryType = 'arraybuffer';
    ws.on('open', () => resolve(ws));
    ws.on('error', reject);
  });
}

function closeCodeAfter(ws, message) {
  return new Promise((resolve) => {
    ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
    ws.send(message);
  });
}

async function malformed(url, room) {
  const c = connect(url, room, 'w');
  await until(() => c.provider.synced, 'sync');
  c.text.insert(0, 'before ');
  const results = {};
  // A sync update whose Yjs update is garbage; a truncated message; an unknown message type; text.
  results.bad_update = await closeCodeAfter(await rawSocket(url, room), Buffer.from([0, 2, 3, 9, 9, 9]));
  results.truncated = await closeCodeAfter(await rawSocket(url, room), Buffer.from([0, 2, 200]));
  results.unknown_type = await closeCodeAfter(await rawSocket(url, room), Buffer.from([7]));
  results.text_frame = await closeCodeAfter(await rawSocket(url, room), 'hello');
  results.oversized = await closeCodeAfter(await rawSocket(url, room), Buffer.alloc(300 * 1024, 1));
  // The room goes on: the client's edits still reach a newcomer.
  c.text.insert(c.text.length, 'after');
  const probe = connect(url, room, 'w');
  await until(() => probe.provider.synced && probe.text.toString() === 'before after', 'the room to go on');
  results.text = probe.text.toString();
  c.provider.destroy();
  probe.provider.destroy();
  return results;
}

// One random step of the converge sessions: an insert, a delete, or a dropped or regained connection.
function randomStep(clients, random, pieces, counts) {
  const c = clients[Math.floor(random() * clients.length)];
  const roll = random();
  if (roll < 0.6 || c.text.length === 0) {
    c.text.insert(Math.floor(random() * (c.text.length + 1)), pieces[Math.floor(random() * pieces.length)]);
  } else if (roll < 0.9) {
    const at = Math.floor(random() * c.text.length);
    c.text.delete(at, Math.min(1 + Math.floor(random() * 3), c.text.length - at));
  } else if (c.provider.wsconnected) {
    c.provider.disconnect();
    counts.disconnects++;
  } else {
    c.provider.connect();
  }
}

async function processes(urlA, urlB, room, seed, pidA) {
  const random = generator(seed);
  const pieces = ['a', 'bc', 'ü', '😀', ' ', 'xyz'];
  const counts = { disconnects: 0 };
  const clients = [connect(urlA, room, 'w'), connect(urlA, room, 'w'), connect(urlB, room, 'w')];
  const writer = connect(urlA, room, 'w');
  const [a0, a1, b] = clients;
  await until(() => clients.every((c) => c.provider.synced) && writer.provider.synced, 'every client to sync');
  // Across the processes: a cursor and edits each way.
  a0.provider.awareness.setLocalStateField('cursor', { user: 'a0', index: 1 });
  const awarenessAcross = await until(() => {
    const s = b.provider.awareness.getStates().get(a0.doc.clientID);
    return s !== undefined && s.cursor !== undefined && s.cursor.user === 'a0';
  }, "b (on B) to see a0's cursor (on A)");
  a0.text.insert(0, '[A]');
  b.text.insert(0, '[B]');
  await until(() => b.text.toString().includes('[A]') && a0.text.toString().includes('[B]') &&
                    a1.text.toString().includes('[B]'), 'edits to cross between the processes');
  // Too large for a NOTIFY payload: passed through the relay table, an update and a presence.
  a1.doc.getText('paste').insert(0, 'p'.repeat(12000));
  b.provider.awareness.setLocalStateField('profile', 'q'.repeat(9000));
  await until(() => b.doc.getText('paste').length === 12000, 'a 12 KB paste to cross from A to B');
  await until(() => {
    const s = a0.provider.awareness.getStates().get(b.doc.clientID);
    return s !== undefined && s.profile !== undefined && s.profile.length === 9000;
  }, "a0 (on A) to see b's 9 KB presence");
  // What A stored before it dies: a client of A that never comes back typed it (in a text of
  // its own, which the random edits leave alone).
  const marks = (c) => c.doc.getText('marks').toString();
  writer.doc.getText('marks').insert(0, 'stored by A.');
  await until(() => marks(b) === 'stored by A.', "b to get the writer's text through B");
  writer.provider.shouldConnect = false;
  for (let step = 0; step < 150; step++) {
    randomStep(clients, random, pieces, counts);
    if (step % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  for (const c of clients) c.provider.connect();
  await until(() => clients.every((c) => c.provider.synced), 'every client to sync before the kill');
  a0.provider.awareness.setLocalStateField('cursor', { user: 'a0', index: 2 });
  await until(() => {
    const s = b.provider.awareness.getStates().get(a0.doc.clientID);
    return s !== undefined && s.cursor !== undefined && s.cursor.index === 2;
  }, "b to see a0's cursor move");
  // A dies mid-session; its clients go on editing offline, then move to B.
  process.kill(pidA, 'SIGKILL');
  const killedAt = Date.now();
  a0.doc.getText('marks').insert(0, 'offline on A. ');
  await until(() => !b.provider.awareness.getStates().has(a0.doc.clientID), "a0's cursor to go once A is gone");
  const awarenessGone = Date.now() - killedAt;
  writer.provider.destroy();
  for (const k of [0, 1]) {
    clients[k].provider.destroy();
    clients[k] = connect(urlB, room, 'w', clients[k].doc);
  }
  for (let step = 0; step < 150; step++) {
    randomStep(clients, random, pieces, counts);
    if (step % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  for (const c of clients) c.provider.connect();
  await until(() => clients.every((c) => c.provider.synced), 'every client to sync on B');
  const ms = await until(() => clients.every((c) => c.text.toString() === clients[0].text.toString() &&
                                                   stateVector(c.doc) === stateVector(clients[0].doc)),
                         'the clients to converge');
  const probe = connect(urlB, room, 'w');
  await until(() => probe.provider.synced && probe.text.toString() === clients[0].text.toString() &&
                    marks(probe) === marks(clients[0]), 'a new client to read the same from B');
  probe.provider.destroy();
  const out = {
    equal: clients.every((c) => marks(c) === marks(clients[0])), text: clients[0].text.toString(),
    length: clients[0].text.length, disconnects: counts.disconnects, converge_ms: ms,
    awareness_across_ms: awarenessAcross, awareness_gone_ms: awarenessGone,
    marks: marks(clients[0]),
  };
  for (const c of clients) c.provider.destroy();
  return out;
}

async function restart(url, room) {
  const a = connect(url, room, 'w');
  const b = connect(url, room, 'w');
  await until(() => a.provider.synced && b.provider.synced, 'sync');
  a.text.insert(0, 'before the restart');
  await until(() => b.text.toString() === 'before the restart', 'b to get the first edit');
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  await new Promise((resolve) => process.stdin.once('data', resolve));
  a.text.insert(a.text.length, ', after it');
  await until(() => b.text.toString() === 'before the restart, after it', 'b to get the edit made after the restart');
  const probe = connect(url, room, 'w');
  await until(() => probe.provider.synced && probe.text.toString() === b.text.toString(), 'a new client to read it');
  const out = { text: probe.text.toString() };
  for (const c of [a, b, probe]) c.provider.destroy();
  return out;
}

async function main() {
  const [scenario, url, room, ...rest] = process.argv.slice(2);
  let out;
  if (scenario === 'converge') out = await converge(url, room, Number(rest[0]), Number(rest[1]));
  else if (scenario === 'write') out = await write(url, room, rest[0]);
  else if (scenario === 'read') out = await read(url, room);
  else if (scenario === 'awareness') out = await awareness(url, room);
  else if (scenario === 'read_only') out = await readOnly(url, room);
  else if (scenario === 'denied') out = await denied(url, room);
  else if (scenario === 'malformed') out = await malformed(url, room);
  else if (scenario === 'restart') out = await restart(url, room);
  else if (scenario === 'processes') out = await processes(url, room, rest[0], Number(rest[1]), Number(rest[2]));
  else throw new Error('unknown scenario ' + scenario);
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}
main().catch((error) => {
  process.stderr.write(String(error && error.stack) + '\n');
  process.exit(1);
});
