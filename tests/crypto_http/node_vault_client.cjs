// Drives keel's Vault-compatible API with npm's node-vault, unchanged: transit keys, encrypt,
// decrypt, rewrap, data keys, batches, rotation and config; KV version 2 secrets; and tokens
// scoped to paths. Any step that does not answer as Vault would throws, and the process exits 1
// naming it. Prints {"ciphertext": ...} for the C++ side to decrypt.
//   node node_vault_client.cjs <endpoint> <admin token> <limited token>
'use strict';
const assert = require('node:assert/strict');
const nodeVault = require('node-vault');

const [endpoint, adminToken, limitedToken] = process.argv.slice(2);
const admin = nodeVault({ apiVersion: 'v1', endpoint, token: adminToken });
const limited = nodeVault({ apiVersion: 'v1', endpoint, token: limitedToken });
const stranger = nodeVault({ apiVersion: 'v1', endpoint, token: 'not-a-token-anyone-was-given' });

const b64 = (text) => Buffer.from(text).toString('base64');
const text = (base64) => Buffer.from(base64, 'base64').toString('utf8');

async function refused(promise, statusCode, step) {
  try {
    await promise;
  } catch (error) {
    assert.equal(error.response && error.response.statusCode, statusCode, `${step}: ${error.message}`);
    return error;
  }
  throw new Error(`${step}: expected HTTP ${statusCode}, the call succeeded`);
}

async function step(name, fn) {
  try {
    await fn();
  } catch (error) {
    console.error(`step "${name}" failed: ${error.stack || error.message}`);
    process.exit(1);
  }
}

(async () => {
  let v1;
  let cppCiphertext;
  await step('health', async () => {
    const health = await admin.health();
    assert.equal(health.initialized, true);
    assert.equal(health.sealed, false);
  });
  await step('create and read a transit key', async () => {
    await admin.write('transit/keys/orders', {});
    await admin.write('transit/keys/orders', {});  // creating an existing key is not an error, as in Vault
    const key = await admin.read('transit/keys/orders');
    assert.equal(key.data.name, 'orders');
    assert.equal(key.data.type, 'aes256-gcm96');
    assert.equal(key.data.latest_version, 1);
    const listed = await admin.list('transit/keys');
    assert.deepEqual(listed.data.keys, ['orders']);
  });
  await step('encryptData and decryptData', async () => {
    const sealed = await admin.encryptData({ name: 'orders', plaintext: b64('4242 4242 4242 4242') });
    v1 = sealed.data.ciphertext;
    assert.match(v1, /^vault:v1:/);
    const opened = await admin.decryptData({ name: 'orders', ciphertext: v1 });
    assert.equal(text(opened.data.plaintext), '4242 4242 4242 4242');
  });
  await step('context binds a derived key', async () => {
    await admin.write('transit/keys/tenants', { derived: true });
    const context = b64('tenant=acme');
    const sealed = await admin.write('transit/encrypt/tenants', { plaintext: b64('acme only'), context });
    const opened = await admin.write('transit/decrypt/tenants', { ciphertext: sealed.data.ciphertext, context });
    assert.equal(text(opened.data.plaintext), 'acme only');
    await refused(admin.write('transit/decrypt/tenants', { ciphertext: sealed.data.ciphertext, context: b64('tenant=globex') }),
      400, 'another context');
    await refused(admin.write('transit/encrypt/tenants', { plaintext: b64('x') }), 400, 'no context');
  });
  await step('rotate, rewrap, min_decryption_version', async () => {
    const rotated = await admin.write('transit/keys/orders/rotate', {});
    assert.equal(rotated.data.latest_version, 2);
    const v2 = await admin.encryptData({ name: 'orders', plaintext: b64('new') });
    assert.match(v2.data.ciphertext, /^vault:v2:/);
    const rewrapped = await admin.write('transit/rewrap/orders', { ciphertext: v1 });
    assert.match(rewrapped.data.ciphertext, /^vault:v2:/);
    assert.equal(rewrapped.data.key_version, 2);
    const opened = await admin.decryptData({ name: 'orders', ciphertext: rewrapped.data.ciphertext });
    assert.equal(text(opened.data.plaintext), '4242 4242 4242 4242');
    await admin.write('transit/keys/orders/config', { min_decryption_version: 2 });
    const key = await admin.read('transit/keys/orders');
    assert.equal(key.data.min_decryption_version, 2);
    assert.deepEqual(Object.keys(key.data.keys).sort(), ['1', '2']);
    await refused(admin.decryptData({ name: 'orders', ciphertext: v1 }), 400, 'a version below min_decryption_version');
  });
  await step('data keys and batches', async () => {
    const dk = await admin.write('transit/datakey/plaintext/orders', { bits: 256 });
    assert.equal(Buffer.from(dk.data.plaintext, 'base64').length, 32);
    const back = await admin.decryptData({ name: 'orders', ciphertext: dk.data.ciphertext });
    assert.equal(back.data.plaintext, dk.data.plaintext);
    const wrapped = await admin.write('transit/datakey/wrapped/orders', {});
    assert.equal(wrapped.data.plaintext, undefined);
    const batch = await admin.write('transit/encrypt/orders', {
      batch_input: [{ plaintext: b64('one') }, { plaintext: b64('two') }],
    });
    assert.equal(batch.data.batch_results.length, 2);
    const opened = await admin.write('transit/decrypt/orders', {
      batch_input: batch.data.batch_results.map((r) => ({ ciphertext: r.ciphertext })).concat([{ ciphertext: 'garbage' }]),
    });
    assert.deepEqual(opened.data.batch_results.slice(0, 2).map((r) => text(r.plaintext)), ['one', 'two']);
    assert.ok(opened.data.batch_results[2].error, 'a bad item answers its own error');
    cppCiphertext = (await admin.encryptData({ name: 'orders', plaintext: b64('from node-vault') })).data.ciphertext;
  });
  await step('deleting a key needs deletion_allowed', async () => {
    await admin.write('transit/keys/scratch', {});
    await refused(admin.delete('transit/keys/scratch'), 400, 'delete without deletion_allowed');
    await admin.write('transit/keys/scratch/config', { deletion_allowed: true });
    await admin.delete('transit/keys/scratch');
    await refused(admin.read('transit/keys/scratch'), 404, 'read a deleted key');
  });
  await step('KV version 2', async () => {
    const first = await admin.write('secret/data/app/db', { data: { password: 'hunter2' } });
    assert.equal(first.data.version, 1);
    const second = await admin.write('secret/data/app/db', { data: { password: 'hunter3', user: 'app' } });
    assert.equal(second.data.version, 2);
    await admin.write('secret/data/app/cache/redis', { data: { url: 'redis://127.0.0.1' } });
    const latest = await admin.read('secret/data/app/db');
    assert.deepEqual(latest.data.data, { password: 'hunter3', user: 'app' });
    assert.equal(latest.data.metadata.version, 2);
    const old = await admin.read('secret/data/app/db?version=1');
    assert.equal(old.data.data.password, 'hunter2');
    const listed = await admin.list('secret/metadata/app');
    assert.deepEqual(listed.data.keys, ['cache/', 'db']);
    const meta = await admin.read('secret/metadata/app/db');
    assert.equal(meta.data.current_version, 2);
    assert.deepEqual(Object.keys(meta.data.versions), ['1', '2']);
    await admin.delete('secret/data/app/db');
    await refused(admin.read('secret/data/app/db'), 404, 'read a deleted secret');
    await admin.write('secret/undelete/app/db', { versions: [2] });
    assert.equal((await admin.read('secret/data/app/db')).data.data.password, 'hunter3');
    await admin.write('secret/destroy/app/db', { versions: [1] });
    await refused(admin.read('secret/data/app/db?version=1'), 404, 'read a destroyed version');
  });
  await step('a token scoped to paths', async () => {
    const sealed = await limited.encryptData({ name: 'orders', plaintext: b64('limited') });
    assert.match(sealed.data.ciphertext, /^vault:v2:/);
    await refused(limited.decryptData({ name: 'orders', ciphertext: sealed.data.ciphertext }), 403, 'decrypt without the grant');
    await refused(limited.read('transit/keys/orders'), 403, 'read a key without the grant');
    await refused(limited.write('transit/keys/orders/rotate', {}), 403, 'rotate without the grant');
    await refused(limited.read('secret/data/app/db'), 403, 'read outside the grant');
    // Each token's secrets are its tenant's: the same name is two secrets.
    await admin.write('secret/data/reports/q3', { data: { total: 99 } });
    await refused(limited.read('secret/data/reports/q3'), 404, 'another tenant\'s secret is not there');
    await limited.write('secret/data/reports/q3', { data: { total: 12 } });
    assert.equal((await limited.read('secret/data/reports/q3')).data.data.total, 12);
    assert.equal((await admin.read('secret/data/reports/q3')).data.data.total, 99);
    await refused(limited.write('secret/data/app/x', { data: {} }), 403, 'write outside the grant');
    await refused(stranger.read('secret/data/reports/q3'), 403, 'an unknown token');
  });
  console.log(JSON.stringify({ ciphertext: cppCiphertext }));
})();
