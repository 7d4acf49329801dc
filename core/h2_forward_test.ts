/**
 * `forwardH2` handing connections to a server in process (`inject`): the
 * same GOAWAY filter and stream tracking as the Unix-socket hop (whose
 * tests are in gateway/listener_test.ts), plus half-close, teardown and
 * backpressure of the in-process stream.
 */
import assert from "node:assert/strict";
import net from "node:net";
import type { Duplex } from "node:stream";
import { FRAME_GOAWAY, FRAME_HEADERS, H2_PREFACE } from "./goaway_filter.ts";
import { forwardH2, type H2Link } from "./h2_forward.ts";
import { waitFor } from "./testing.ts";

function frame(type: number, flags: number, streamId: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(9 + payload.length);
  out[0] = payload.length >> 16;
  out[1] = (payload.length >> 8) & 0xff;
  out[2] = payload.length & 0xff;
  out[3] = type;
  out[4] = flags;
  new DataView(out.buffer).setUint32(5, streamId);
  out.set(payload, 9);
  return out;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

interface Rig {
  /** The client's end of the TCP connection. */
  client: net.Socket;
  /** The accepted end (the gateway's socket). */
  accepted: net.Socket;
  /** What the in-process server was handed. */
  inner: Duplex;
  /** Everything the server read so far. */
  read: Uint8Array[];
  link: H2Link;
  dropped: { n: number };
  close(): Promise<void>;
}

/** A TCP connection whose accepted end is forwarded in process; `preface` bytes sent first. */
async function rig(preface: Uint8Array): Promise<Rig> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const accepted = new Promise<net.Socket>((r) => server.once("connection", r));
  const client = net.connect({
    port: (server.address() as net.AddressInfo).port,
    host: "127.0.0.1",
    allowHalfOpen: true,
  });
  client.on("error", () => {});
  const socket = await accepted;
  let inner!: Duplex;
  const read: Uint8Array[] = [];
  const dropped = { n: 0 };
  const link = forwardH2({
    client: socket,
    innerPath: "/nonexistent/not-dialled.sock",
    inject: (d) => {
      inner = d;
      d.on("data", (c: Uint8Array) => read.push(c));
    },
    onGoawayDropped: (n) => dropped.n += n,
  });
  client.write(preface);
  return {
    client,
    accepted: socket,
    inner,
    read,
    link,
    dropped,
    close: async () => {
      client.destroy();
      link.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

Deno.test("inject: the server reads everything but GOAWAY, in order; streams are counted", async () => {
  const headers = frame(FRAME_HEADERS, 0x4, 1, new Uint8Array([0x82]));
  const ping = frame(0x6, 0, 0, new Uint8Array(8).fill(7));
  const goaway = frame(FRAME_GOAWAY, 0, 0, new Uint8Array(8));
  const r = await rig(H2_PREFACE);
  try {
    r.client.write(concat([headers, goaway, ping]));
    const want = concat([H2_PREFACE, headers, ping]);
    await waitFor("filtered bytes", () => concat(r.read).length >= want.length);
    assert.deepStrictEqual(concat(r.read), want);
    assert.equal(r.dropped.n, 1);
    assert.equal(r.link.openStreams, 1);
    // The server's END_STREAM on stream 1 closes it; its bytes reach the client unchanged.
    const got: Uint8Array[] = [];
    r.client.on("data", (c: Uint8Array) => got.push(c));
    const reply = frame(0x0, 0x1, 1, new Uint8Array([1, 2, 3]));
    r.inner.write(reply);
    await waitFor("reply", () => concat(got).length >= reply.length);
    assert.deepStrictEqual(concat(got), reply);
    assert.equal(r.link.openStreams, 0);
  } finally {
    await r.close();
  }
});

Deno.test("inject: the client's end-of-stream ends the server's side after its last bytes, and frees the socket", async () => {
  const r = await rig(H2_PREFACE);
  try {
    const got: Uint8Array[] = [];
    r.client.on("data", (c: Uint8Array) => got.push(c));
    let clientEnded = false;
    r.client.once("end", () => clientEnded = true);
    const innerEnded = new Promise<void>((res) => r.inner.once("end", () => res()));
    // Bytes the server wrote before the client's FIN arrived still reach it.
    const last = new Uint8Array(256 * 1024).fill(5);
    r.inner.write(last);
    r.client.end();
    await innerEnded;
    await waitFor("the server's side to end the client", () => clientEnded, { timeoutMs: 5_000 });
    assert.equal(concat(got).length, last.length);
    // Both directions ended: the gateway's socket (its fd) is released without a destroy().
    await waitFor("the gateway's socket to close", () => r.accepted.destroyed, {
      timeoutMs: 5_000,
    });
  } finally {
    await r.close();
  }
});

Deno.test("inject: a client that resets the connection destroys the server's stream", async () => {
  const r = await rig(H2_PREFACE);
  try {
    const innerClosed = new Promise<void>((res) => r.inner.once("close", () => res()));
    r.client.resetAndDestroy();
    await innerClosed;
  } finally {
    await r.close();
  }
});

Deno.test("inject: the server destroying its stream closes the client connection", async () => {
  const r = await rig(H2_PREFACE);
  try {
    const closed = new Promise<void>((res) => r.client.once("close", () => res()));
    r.inner.destroy();
    await closed;
  } finally {
    await r.close();
  }
});

Deno.test("inject: a client that does not read holds the server's writes back, then gets every byte", async () => {
  const r = await rig(H2_PREFACE);
  try {
    r.client.pause();
    const chunk = new Uint8Array(64 * 1024).fill(9);
    const total = 16 * 1024 * 1024;
    let written = 0;
    let finished = false;
    const pump = () => {
      while (written < total) {
        written += chunk.length;
        if (!r.inner.write(chunk)) {
          r.inner.once("drain", pump);
          return;
        }
      }
      finished = true;
    };
    pump();
    // The kernel buffers fill, then the in-process stream stops taking writes.
    await waitFor("writes held back", () => r.inner.writableNeedDrain);
    assert.equal(finished, false);
    assert.ok(written < total, `wrote ${written} of ${total} bytes to a client that reads nothing`);
    let received = 0;
    r.client.on("data", (c: Uint8Array) => received += c.length);
    r.client.resume();
    await waitFor("every byte", () => received >= total, { timeoutMs: 30_000 });
    assert.equal(received, total);
    assert.equal(finished, true);
  } finally {
    await r.close();
  }
});
