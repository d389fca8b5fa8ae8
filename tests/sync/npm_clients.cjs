// What keel::sync's node test clients share: loading npm packages from the directory ./keel test
// installs them into (KEEL_TEST_CLIENTS_DIR, from tests/clients/package.json), and a seeded
// random generator (mulberry32) so that a scenario's seed replays it.
'use strict';
const path = require('node:path');

function load(name) {
  const dir = process.env.KEEL_TEST_CLIENTS_DIR;
  if (dir) {
    try {
      return require(require.resolve(name, { paths: [path.resolve(dir)] }));
    } catch (error) {
      if (error.code !== 'MODULE_NOT_FOUND') throw error;
    }
  }
  return require(name);
}

function generator(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

module.exports = { load, generator };
