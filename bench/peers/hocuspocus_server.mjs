// @hocuspocus/server, in memory (no extensions, no persistence), on a free loopback port: the peer
// the keel::sync rooms benchmark (bench/sync) runs the same clients against.
//   node hocuspocus_server.mjs
// Prints one JSON line {"peer":"hocuspocus","port":N,"pid":N} once it listens, then serves until
// it is sent SIGTERM.
import { Server } from "@hocuspocus/server";

const server = new Server({ port: 0, address: "127.0.0.1", quiet: true, stopOnSignals: true });
await server.listen();
console.log(JSON.stringify({ peer: "hocuspocus", port: server.address.port, pid: process.pid }));
