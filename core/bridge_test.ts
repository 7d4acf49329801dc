import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Duplex, duplexPair, PassThrough, Writable } from "node:stream";
import { bridge, type FrameCall, relayFrameDuplex } from "./bridge.ts";
import type { RelayFrame } from "./protocol.ts";
import { Code, StatusError } from "./status.ts";
import { waitFor } from "./testing.ts";

function collect(stream: Duplex): Promise<Buffer> {
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    stream.once("end", () => resolve(Buffer.concat(chunks)));
    stream.once("error", reject);
  });
}

Deno.test("bridge carries bytes both ways and forwards each half-close", async () => {
  const [left, leftInner] = duplexPair();
  const [right, rightInner] = duplexPair();
  const done = bridge(leftInner, rightInner);

  const atRight = collect(right);
  left.write("hello ");
  left.end("world");
  assert.equal((await atRight).toString(), "hello world");

  // The left side half-closed; the right side can still answer.
  const atLeft = collect(left);
  right.write("still ");
  right.end("open");
  assert.equal((await atLeft).toString(), "still open");

  const result = await done;
  assert.equal(result.aToB, 11);
  assert.equal(result.bToA, 10);
  assert.equal(result.error, undefined);
  left.destroy();
  right.destroy();
});

Deno.test("bridge applies backpressure: a stalled writer pauses its reader", async () => {
  const [producer, a] = duplexPair();
  let release!: () => void;
  const gate = new Promise<void>((r) => release = r);
  let received = 0;
  const sink = new Writable({
    highWaterMark: 1024,
    write(chunk, _enc, cb) {
      received += chunk.length;
      gate.then(() => cb());
    },
  });
  const b = Duplex.from({ readable: new PassThrough(), writable: sink } as never);
  const done = bridge(a, b);

  const block = Buffer.alloc(4096, 7);
  const total = 64 * block.length;
  for (let i = 0; i < 64; i++) producer.write(block);
  producer.end();
  // The pump stops reading `a` once the sink is full: `a`'s buffer then fills
  // to its mark and stays there (a pump without backpressure keeps it empty).
  await waitFor("the pump to stop reading", () => a.readableLength >= a.readableHighWaterMark, {
    timeoutMs: 2_000,
    intervalMs: 1,
  });
  // The sink holds one chunk in progress and at most its buffer; the rest
  // stays upstream because the pump paused its reader.
  assert.equal(received, block.length);
  assert.ok(sink.writableLength <= 2 * block.length, `sink buffered ${sink.writableLength}`);
  assert.ok(producer.writableLength + a.readableLength > total / 2, "data held upstream");
  release();
  await new Promise((r) => sink.once("finish", r));
  assert.equal(received, total);
  b.destroy();
  producer.destroy();
  await done;
});

Deno.test("bridge tears both sides down when one side errors", async () => {
  const [left, leftInner] = duplexPair();
  const [right, rightInner] = duplexPair();
  const done = bridge(leftInner, rightInner);
  leftInner.destroy(new Error("boom"));
  const result = await done;
  assert.equal(result.error?.message, "boom");
  assert.ok(rightInner.destroyed);
  left.destroy();
  right.destroy();
});

Deno.test("bridge treats an abrupt close as an error", async () => {
  const [left, leftInner] = duplexPair();
  const [right, rightInner] = duplexPair();
  const done = bridge(leftInner, rightInner);
  rightInner.destroy();
  const result = await done;
  assert.ok(result.error instanceof StatusError);
  assert.ok(leftInner.destroyed);
  left.destroy();
  right.destroy();
});

/** An object-mode stand-in for a grpc-js bidi call: `peer` sees what the call writes. */
function fakeCall(): { call: FrameCall & Duplex; peer: Duplex; aborted: (Error | null)[] } {
  const [call, peer] = duplexPair({ objectMode: true, highWaterMark: 4 });
  return { call: call as unknown as FrameCall & Duplex, peer, aborted: [] };
}

Deno.test("relayFrameDuplex reads data frames as bytes and writes bytes as data frames", async () => {
  const { call, peer, aborted } = fakeCall();
  const bytes = relayFrameDuplex(call, { abort: (e) => aborted.push(e), chunkBytes: 4 });
  const frames: RelayFrame[] = [];
  peer.on("data", (f: RelayFrame) => frames.push(f));

  const read = collect(bytes);
  peer.write({ payload: "data", data: Buffer.from("abc") });
  peer.write({ payload: "data", data: Buffer.from("def") });
  peer.end();
  assert.equal((await read).toString(), "abcdef");

  const peerEnded = new Promise((r) => peer.once("end", r));
  bytes.end(Buffer.from("0123456789"));
  await peerEnded;
  assert.deepEqual(
    frames.map((f) => f.payload === "data" ? Buffer.from(f.data).toString() : f.payload),
    ["0123", "4567", "89"],
  );
  assert.deepEqual(aborted, []);
});

Deno.test("relayFrameDuplex rejects a non-data frame with INVALID_ARGUMENT", async () => {
  const { call, peer, aborted } = fakeCall();
  const bytes = relayFrameDuplex(call, { abort: (e) => aborted.push(e) });
  const failed = new Promise<Error>((r) => bytes.once("error", r));
  peer.write({ payload: "init", init: { channel_id: "x" } });
  const err = await failed;
  assert.ok(err instanceof StatusError);
  assert.equal(err.code, Code.INVALID_ARGUMENT);
  assert.equal(aborted.length, 1);
  peer.destroy();
});

Deno.test("relayFrameDuplex pauses the call while its reader is full", async () => {
  const { call, peer } = fakeCall();
  const bytes = relayFrameDuplex(call, { abort: () => {} });
  let paused = 0;
  const origPause = call.pause.bind(call);
  (call as { pause: () => unknown }).pause = () => {
    paused++;
    return origPause();
  };
  const big = Buffer.alloc(32 * 1024, 1);
  for (let i = 0; i < 8; i++) peer.write({ payload: "data", data: big });
  await waitFor("the call to be paused", () => paused > 0, { timeoutMs: 2_000, intervalMs: 1 });
  const read = collect(bytes);
  peer.end();
  assert.equal((await read).length, 8 * big.length);
});

Deno.test("client role: an empty data frame from the gateway is end-of-stream", async () => {
  const { call, peer } = fakeCall();
  const bytes = relayFrameDuplex(call, { abort: () => {} });
  const read = collect(bytes);
  peer.write({ payload: "data", data: Buffer.from("last words") });
  peer.write({ payload: "data", data: Buffer.alloc(0) });
  peer.write({ payload: "data", data: Buffer.from("ignored") });
  assert.equal((await read).toString(), "last words");
  // Our direction is still open: the gateway only half-closed.
  const frames: RelayFrame[] = [];
  peer.on("data", (f: RelayFrame) => frames.push(f));
  const peerEnded = new Promise((r) => peer.once("end", r));
  bytes.end(Buffer.from("reply"));
  await peerEnded;
  assert.deepEqual(frames.map((f) => f.payload === "data" ? Buffer.from(f.data).toString() : ""), [
    "reply",
  ]);
});

Deno.test("server role: half-close sends an empty frame and completes the call after the peer ends", async () => {
  const { call, peer, aborted } = fakeCall();
  const bytes = relayFrameDuplex(call, { abort: (e) => aborted.push(e), role: "server" });
  const frames: RelayFrame[] = [];
  const twoFrames = new Promise<void>((resolve) =>
    peer.on("data", (f: RelayFrame) => frames.push(f) === 2 && resolve())
  );
  let callEnded = false;
  const peerEnded = new Promise<void>((r) => peer.once("end", () => r(void (callEnded = true))));
  const read = collect(bytes);
  bytes.end(Buffer.from("request"));
  await twoFrames;
  assert.deepEqual(frames.map((f) => f.payload === "data" ? f.data.length : -1), [7, 0]);
  assert.equal(callEnded, false, "the call stays open for the answer");
  peer.write({ payload: "data", data: Buffer.from("answer") });
  peer.end();
  assert.equal((await read).toString(), "answer");
  await peerEnded; // the call completes once both directions ended
  assert.deepEqual(aborted, []);
});
