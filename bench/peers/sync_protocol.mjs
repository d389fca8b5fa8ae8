// The Yjs sync protocol as bench/sync's node clients speak it, to keel's rooms (y-websocket's
// framing) and to @hocuspocus/server (every message after the document name; an auth message
// first): message types, sync steps, and the encoders and the reader both scripts use.
import * as Y from "yjs";
import * as encoding from "lib0/encoding";
import * as decoding from "lib0/decoding";

export const messageSync = 0;
export const messageAuth = 2;
export const syncStep1 = 0;
export const syncStep2 = 1;
export const syncUpdate = 2;
export const authenticated = 2;  // hocuspocus's auth message subtype for "authenticated"

// PROTOCOL `y-websocket` or `hocuspocus`; ROOM is the document name hocuspocus frames with.
export function syncProtocol(protocol, room) {
  const hocuspocus = protocol === "hocuspocus";
  if (!hocuspocus && protocol !== "y-websocket") throw new Error(`unknown protocol ${protocol}`);
  const frame = (type, write) => {
    const e = encoding.createEncoder();
    if (hocuspocus) encoding.writeVarString(e, room);
    encoding.writeVarUint(e, type);
    write(e);
    return encoding.toUint8Array(e);
  };
  return {
    hocuspocus,
    syncMessage: (step, payload) =>
      frame(messageSync, (e) => {
        encoding.writeVarUint(e, step);
        encoding.writeVarUint8Array(e, payload);
      }),
    authMessage: () =>
      frame(messageAuth, (e) => {
        encoding.writeVarUint(e, 0);  // a token
        encoding.writeVarString(e, "");
      }),
    emptyStateVector: Y.encodeStateVector(new Y.Doc()),
    // What a message is: [type, sync step or auth subtype (-1 for others), the decoder at the
    // payload] (hocuspocus's document name skipped).
    read: (data) => {
      const d = decoding.createDecoder(data);
      if (hocuspocus) decoding.readVarString(d);
      const type = decoding.readVarUint(d);
      return [type, type === messageSync || type === messageAuth ? decoding.readVarUint(d) : -1, d];
    },
  };
}
