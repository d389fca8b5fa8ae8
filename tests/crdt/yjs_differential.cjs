// The reference for keel::crdt::yjs's differential tests: npm's yjs (pinned in
// tests/clients/package.json, installed into .keel/clients by ./keel test).
//
//   node yjs_differential.cjs generate SEED
//     Simulates an editing session of several Yjs clients (seeded): text with formatting and
//     embeds, arrays of every value kind, maps with nested types and a subdocument, XML; the
//     clients sync now and then, so edits are concurrent. Writes JSON to stdout:
//     {"updates": n, "cases": [{"kind": "merge", "inputs": [hex...], "yjs": hex},
//                              {"kind": "state_vector", "input": hex, "yjs": hex},
//                              {"kind": "diff", "input": hex, "base": hex, "sv": hex, "yjs": hex}]}
//     where `yjs` is Y.mergeUpdates / Y.encodeStateVectorFromUpdate / Y.diffUpdate's answer, and a
//     diff's `sv` is the state vector of a document holding `base`.
//   node yjs_differential.cjs check < cases.json
//     The same cases with keel's answer added ("keel": hex). Loads keel's and Yjs's answers into
//     documents (a diff on top of `base`) and compares what they hold and their state vectors;
//     a state vector is checked by diffing its input against it. Writes
//     {"checked": n, "mismatches": [...]}.
'use strict';
const path = require('node:path');

function loadYjs() {
  const dir = process.env.KEEL_TEST_CLIENTS_DIR;
  if (dir) {
    try {
      return require(require.resolve('yjs', { paths: [path.resolve(dir)] }));
    } catch (error) {
      if (error.code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  return require('yjs');
}
const Y = loadYjs();

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const unhex = (text) => new Uint8Array(Buffer.from(text, 'hex'));

// mulberry32: a small seeded generator, so that a seed names a session.
function generator(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    below: (n) => Math.floor(next() * n),
    pick: (list) => list[Math.floor(next() * list.length)],
  };
}

const pieces = ['a', 'bc', 'hello ', 'é', 'über', '世界', '😀', 'x😀y', '🎉🎉', '\n', 'long run of text '];
const values = [1, -7, 0, 2 ** 31, 2 ** 40 + 3, 1.5, -0.25, 1e300, 'str', '', 'ü😀', true, false, null,
  { a: 1, b: [1, 'two', { c: null }] }, [1, [2, [3]]]];

function randomValue(rng) {
  const v = rng.pick(values);
  return rng.below(8) === 0 ? new Uint8Array([rng.below(256), 1, 2]) : v;
}

function generate(seed) {
  const rng = generator(seed);
  const clients = 2 + rng.below(3);
  const docs = [];
  const updates = [];
  for (let c = 0; c < clients; c++) {
    const doc = new Y.Doc({ gc: seed % 3 !== 0 });
    doc.clientID = 1 + rng.below(2 ** 32 - 1);
    doc.on('update', (update, origin, d, tr) => {
      if (tr.local) updates.push(update);
    });
    docs.push(doc);
  }
  const sync = (from, to) => Y.applyUpdate(to, Y.encodeStateAsUpdate(from, Y.encodeStateVector(to)), 'sync');
  const steps = 60 + rng.below(60);
  for (let step = 0; step < steps; step++) {
    const doc = rng.pick(docs);
    const text = doc.getText('text');
    const array = doc.getArray('array');
    const map = doc.getMap('map');
    const xml = doc.getXmlFragment('xml');
    const action = rng.below(20);
    doc.transact(() => {
      if (action < 6 || text.length === 0) {
        const piece = rng.pick(pieces);
        // Trace positions in UTF-16 units may fall inside a surrogate pair: Yjs allows it.
        text.insert(rng.below(text.length + 1), piece, rng.below(5) === 0 ? { bold: true } : undefined);
      } else if (action < 9) {
        const at = rng.below(text.length);
        text.delete(at, 1 + rng.below(Math.min(6, text.length - at)));
      } else if (action < 10) {
        const at = rng.below(text.length);
        text.format(at, 1 + rng.below(Math.min(5, text.length - at)), { italic: rng.below(2) === 0 ? true : null });
      } else if (action < 11) {
        text.insertEmbed(rng.below(text.length + 1), { image: 'x.png', n: rng.below(100) });
      } else if (action < 14) {
        const list = [];
        for (let k = 0, n = 1 + rng.below(4); k < n; k++) list.push(randomValue(rng));
        array.insert(rng.below(array.length + 1), list);
      } else if (action < 15 && array.length > 0) {
        const at = rng.below(array.length);
        array.delete(at, 1 + rng.below(Math.min(3, array.length - at)));
      } else if (action < 17) {
        const key = rng.pick(['k1', 'k2', 'k3', 'nested', 'note']);
        if (key === 'nested') {
          const nested = new Y.Map();
          map.set(key, nested);
          nested.set('inner', randomValue(rng));
          const t = new Y.Text();
          nested.set('t', t);
          t.insert(0, 'nested text');
        } else if (key === 'note' && rng.below(2) === 0) {
          map.delete(key);
        } else {
          map.set(key, randomValue(rng));
        }
      } else if (action < 18) {
        if (rng.below(3) === 0) {
          map.set('sub', new Y.Doc({ guid: 'sub-' + seed + '-' + step }));
        } else {
          const p = new Y.XmlElement('p');
          xml.insert(Math.min(xml.length, rng.below(2)), [p]);
          p.setAttribute('class', 'c' + rng.below(3));
          const t = new Y.XmlText();
          p.insert(0, [t, new Y.XmlHook('hook')]);
          t.insert(0, 'xml text');
        }
      } else if (xml.length > 0) {
        xml.delete(0, 1);
      }
    });
    if (rng.below(6) === 0) {
      const from = rng.pick(docs);
      const to = rng.pick(docs);
      if (from !== to) sync(from, to);
    }
  }
  // Whole states too: updates that overlap the small ones.
  for (const doc of docs) updates.push(Y.encodeStateAsUpdate(doc));

  const subset = (max) => {
    const chosen = [];
    for (let k = 0, n = 1 + rng.below(max); k < n; k++) chosen.push(rng.pick(updates));
    return chosen;
  };
  const cases = [];
  const everything = Y.mergeUpdates(updates);
  cases.push({ kind: 'merge', inputs: updates.map(hex), yjs: hex(everything) });
  for (let k = 0; k < 25; k++) {
    const inputs = subset(k < 5 ? 3 : 12);
    const merged = Y.mergeUpdates(inputs);
    cases.push({ kind: 'merge', inputs: inputs.map(hex), yjs: hex(merged) });
    cases.push({ kind: 'state_vector', input: hex(merged), yjs: hex(Y.encodeStateVectorFromUpdate(merged)) });
  }
  for (const u of updates.slice(0, 10)) {
    cases.push({ kind: 'state_vector', input: hex(u), yjs: hex(Y.encodeStateVectorFromUpdate(u)) });
  }
  for (let k = 0; k < 20; k++) {
    const base = Y.mergeUpdates(subset(8));
    const baseDoc = new Y.Doc();
    Y.applyUpdate(baseDoc, base);
    const sv = Y.encodeStateVector(baseDoc);
    const input = k % 4 === 0 ? Y.mergeUpdates(subset(10)) : everything;
    cases.push({ kind: 'diff', input: hex(input), base: hex(base), sv: hex(sv), yjs: hex(Y.diffUpdate(input, sv)) });
  }
  return { updates: updates.length, cases };
}

// What a document holds, comparable as JSON.
function describe(value) {
  if (value instanceof Y.Doc) return { subdoc: value.guid };
  if (value instanceof Uint8Array) return { bytes: hex(value) };
  if (value instanceof Y.XmlElement || value instanceof Y.XmlFragment || value instanceof Y.XmlHook) {
    return { xml: value.toString() };
  }
  if (value instanceof Y.Text) return { delta: value.toDelta().map((op) => ({ ...op, insert: describe(op.insert) })) };
  if (value instanceof Y.Array) return value.toArray().map(describe);
  if (value instanceof Y.Map) {
    return Object.fromEntries([...value.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, v]) => [k, describe(v)]));
  }
  if (typeof value === 'bigint') return { bigint: value.toString() };
  if (Array.isArray(value)) return value.map(describe);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, describe(v)]));
  }
  return value;
}

function contents(updates) {
  const doc = new Y.Doc();
  for (const u of updates) Y.applyUpdate(doc, u);
  const held = {
    text: describe(doc.getText('text')),
    array: describe(doc.getArray('array')),
    map: describe(doc.getMap('map')),
    xml: describe(doc.getXmlFragment('xml')),
    state: [...Y.decodeStateVector(Y.encodeStateVector(doc)).entries()].sort((a, b) => a[0] - b[0]),
  };
  return JSON.stringify(held);
}

function check(input) {
  const mismatches = [];
  let checked = 0;
  input.cases.forEach((c, index) => {
    const keel = unhex(c.keel);
    const yjs = unhex(c.yjs);
    let ours;
    let theirs;
    try {
      if (c.kind === 'merge') {
        ours = contents([keel]);
        theirs = contents([yjs]);
        const direct = contents(c.inputs.map(unhex));
        if (direct !== theirs) mismatches.push({ index, kind: c.kind, what: 'yjs merge differs from its inputs' });
      } else if (c.kind === 'diff') {
        const base = unhex(c.base);
        ours = contents([base, keel]);
        theirs = contents([base, yjs]);
      } else {
        const update = unhex(c.input);
        ours = contents([Y.diffUpdate(update, keel)]);
        theirs = contents([Y.diffUpdate(update, yjs)]);
      }
    } catch (error) {
      mismatches.push({ index, kind: c.kind, what: 'yjs refused: ' + String(error && error.stack) });
      return;
    }
    checked++;
    if (ours !== theirs) mismatches.push({ index, kind: c.kind, what: 'documents differ', ours, theirs });
  });
  return { checked, mismatches };
}

const [mode, seed] = process.argv.slice(2);
if (mode === 'generate') {
  process.stdout.write(JSON.stringify(generate(Number(seed))));
} else if (mode === 'check') {
  const chunks = [];
  process.stdin.on('data', (chunk) => chunks.push(chunk));
  process.stdin.on('end', () => process.stdout.write(JSON.stringify(check(JSON.parse(Buffer.concat(chunks).toString('utf8'))))));
} else {
  process.stderr.write('usage: node yjs_differential.cjs generate SEED | check < cases.json\n');
  process.exit(2);
}
