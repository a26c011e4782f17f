// statehub's session protocol (docs/protocol.md) over WebSocket: each binary message is one
// msgpack-encoded list of messages; requests carry an id, replies come back by id, change
// batches by subscription id. The dashboard uses nothing else.
import { decode, encode, ExtensionCodec } from "@msgpack/msgpack";

// Ints outside 64 bits travel as ext type 1 holding the decimal string.
const extensionCodec = new ExtensionCodec();
extensionCodec.register({
  type: 1,
  encode: () => null,
  decode: (data) => BigInt(new TextDecoder().decode(data)),
});

// A map key "__proto__" is a plain key in statehub's values, but @msgpack/msgpack refuses
// it (assigning it to a JS object would replace the object's prototype), which would throw
// away the whole frame. Keys are decoded here instead: "__proto__" becomes a symbol while
// decoding, and then an own property of that name (defineProperty, which never touches
// the prototype), so the value shows and round-trips like any other.
const utf8 = new TextDecoder();
const PROTO_KEY = Symbol("__proto__ map key");
let protoKeySeen = false;
const keyDecoder = {
  canBeCached: () => true,
  decode(bytes, offset, length) {
    const key = utf8.decode(bytes.subarray(offset, offset + length));
    if (key !== "__proto__") return key;
    protoKeySeen = true;
    return PROTO_KEY;
  },
};
const mapKeyConverter = (key) => {
  if (typeof key === "string" || typeof key === "number" || key === PROTO_KEY) return key;
  throw new Error(`a map key of type ${typeof key}`);
};

function restoreProtoKeys(root) {
  const stack = [root];
  while (stack.length > 0) { // a tree: each node is visited once
    const node = stack.pop();
    if (node === null || typeof node !== "object" || ArrayBuffer.isView(node)) continue;
    if (Array.isArray(node)) {
      for (const item of node) stack.push(item);
      continue;
    }
    if (Object.prototype.hasOwnProperty.call(node, PROTO_KEY)) {
      const value = node[PROTO_KEY];
      delete node[PROTO_KEY];
      Object.defineProperty(node, "__proto__", { value, enumerable: true, writable: true, configurable: true });
    }
    for (const child of Object.values(node)) stack.push(child);
  }
}

export function decodeFrame(frame) {
  protoKeySeen = false;
  const messages = decode(frame, { extensionCodec, keyDecoder, mapKeyConverter });
  if (protoKeySeen) restoreProtoKeys(messages);
  return messages;
}

export class RemoteError extends Error {
  constructor(wire) {
    super(`${wire.type} (${wire.status}): ${wire.message}`);
    this.wire = wire;
  }
}

export class Session {
  constructor(url, clientName, credential = null) {
    this.url = url;
    this.clientName = clientName;
    this.credential = credential;
    this.nextId = 1;
    this.pending = new Map();
    this.subscriptions = new Map();
    this.onclose = () => {};
  }

  async open() {
    this.socket = new WebSocket(this.url);
    this.socket.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => {
      this.socket.onopen = resolve;
      this.socket.onerror = () => reject(new Error(`cannot open ${this.url}`));
    });
    this.socket.onmessage = (event) => this.receive(new Uint8Array(event.data));
    this.socket.onclose = (event) => {
      for (const { reject } of this.pending.values()) reject(new Error("connection lost"));
      this.pending.clear();
      this.onclose(event);
    };
    const hello = { token: null, client: this.clientName };
    if (this.credential) hello.credential = this.credential;
    this.hello = await this.request("hello", hello);
    return this.hello;
  }

  receive(frame) {
    for (const message of decodeFrame(frame)) {
      if (message.id !== undefined && message.id !== null && this.pending.has(message.id)) {
        const { resolve, reject } = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) reject(new RemoteError(message.error));
        else resolve(message.ok ?? {});
      } else if (message.sub !== undefined) {
        this.subscriptions.get(message.sub)?.(message);
      } else if (message.error) {
        console.warn("statehub:", message.error);
      }
    }
  }

  request(op, args = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.send(encode([{ id, op, ...args }], { extensionCodec }));
    });
  }

  async subscribe(prefix, interval, handler) {
    const { sub } = await this.request("subscribe", { prefix, interval, since: null });
    this.subscriptions.set(sub, handler);
    return sub;
  }

  async unsubscribe(sub) {
    this.subscriptions.delete(sub);
    await this.request("unsubscribe", { sub });
  }

  call(name, args = {}) {
    return this.request("call", { name, arguments: args }).then((reply) => reply.result);
  }
}
