/**
 * The listener's connection limits, in process: an HTTP/2 server (node:http2
 * on a Unix socket) stands in for the internal grpc-js server, and small
 * limits make every cap and timeout quick to reach.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { H2_PREFACE } from "../core/goaway_filter.ts";
import { Logger } from "../core/log.ts";
import { waitFor } from "../core/testing.ts";
import { httpResponse, MAX_HEAD_BYTES, type RequestHead } from "./http1.ts";
import { type ConnectionLimits, GatewayListener, isLoopback, peerOf } from "./listener.ts";

const log = new Logger({ level: "error", target: "listener-test" });

interface Fixture {
  port: number;
  listener: GatewayListener;
  /** Streams of `/hold` requests, by request id, still open. */
  held: Map<string, http2.ServerHttp2Stream>;
  /** HTTP/1.1 sockets the handler holds open. */
  tunnels: net.Socket[];
  /** The bytes each tunnel's client sent after its head. */
  early: Uint8Array[];
  close(): Promise<void>;
}

async function fixture(
  limits: Partial<ConnectionLimits>,
  extra: { tls?: { cert: string; key: string }; onHead?: (head: RequestHead) => void } = {},
): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "lsn" });
  const inner = `${dir}/h2.sock`;
  const held = new Map<string, http2.ServerHttp2Stream>();
  const h2 = http2.createServer();
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
    stream.on("error", () => {});
    if (headers[":path"] === "/hold") {
      held.set(String(headers["x-id"]), stream);
      stream.respond({ ":status": 200 });
      stream.write("held\n");
    } else {
      stream.respond({ ":status": 200 });
      stream.end("ok\n");
    }
  });
  await new Promise<void>((r) => h2.listen(inner, () => r()));
  const tunnels: net.Socket[] = [];
  const early: Uint8Array[] = [];
  const listener = new GatewayListener({
    bind: "127.0.0.1",
    port: 0,
    grpcSocketPath: inner,
    tls: extra.tls,
    log,
    limits,
    http: (head, socket, rest) => {
      extra.onHead?.(head);
      if (head.method === "CONNECT") {
        tunnels.push(socket);
        early.push(rest);
        socket.write("HTTP/1.1 200 OK\r\n\r\n");
        socket.on("error", () => {});
      } else {
        socket.end(httpResponse(200, { body: "ok" }));
      }
      return Promise.resolve();
    },
  });
  const { port } = await listener.listen();
  return {
    port,
    listener,
    held,
    tunnels,
    early,
    async close() {
      const stopped = listener.stopAccepting();
      listener.destroyAll();
      await stopped;
      for (const s of tunnels) s.destroy();
      await new Promise<void>((r) => h2.close(() => r()));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** A raw TCP client from `from` (a loopback address) that tells when the server closed it. */
function raw(port: number, from = "127.0.0.1"): Promise<{ socket: net.Socket; closed: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ port, host: "127.0.0.1", localAddress: from });
    const state = { socket, closed: false };
    socket.on("close", () => state.closed = true);
    socket.on("error", () => {});
    socket.on("data", () => {});
    socket.once("connect", () => resolve(state));
    socket.once("error", reject);
  });
}

function h2client(port: number): http2.ClientHttp2Session {
  const s = http2.connect(`http://127.0.0.1:${port}`);
  s.on("error", () => {});
  return s;
}

function get(session: http2.ClientHttp2Session, path: string, id = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = session.request({ ":path": path, "x-id": id });
    req.setEncoding("utf8");
    let body = "";
    req.on("data", (c: string) => {
      body += c;
      if (path === "/hold") resolve(body);
    });
    req.on("end", () => resolve(body));
    req.on("error", reject);
    req.end();
  });
}

function closeSession(s: http2.ClientHttp2Session): Promise<void> {
  if (s.destroyed) return Promise.resolve();
  return new Promise((r) => {
    s.once("close", () => r());
    s.destroy();
  });
}

Deno.test("peers: loopback is exempt by default; IPv4-mapped addresses are unwrapped", () => {
  assert.equal(isLoopback("127.0.0.1"), true);
  assert.equal(isLoopback("127.4.5.6"), true);
  assert.equal(isLoopback("::1"), true);
  assert.equal(isLoopback("10.0.0.1"), false);
  assert.equal(peerOf({ remoteAddress: "::ffff:10.1.2.3" } as net.Socket), "10.1.2.3");
  assert.equal(peerOf({ remoteAddress: "fe80::1" } as net.Socket), "fe80::1");
});

Deno.test("per-peer cap: a new connection evicts that peer's longest-idle one; other peers keep theirs", async () => {
  const f = await fixture({
    maxConnections: 100,
    maxConnectionsPerPeer: 3,
    perPeerExempt: () => false,
  });
  const conns: { socket: net.Socket; closed: boolean }[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      conns.push(await raw(f.port, "127.0.0.2"));
      await waitFor("accepted", () => f.listener.stats.open === i + 1);
    }
    const other = await raw(f.port, "127.0.0.3");
    conns.push(other);
    await waitFor("other peer accepted", () => f.listener.stats.open === 4);
    const fourth = await raw(f.port, "127.0.0.2");
    conns.push(fourth);
    await waitFor("the oldest of 127.0.0.2 closed", () => conns[0].closed);
    assert.equal(conns[1].closed || conns[2].closed || other.closed || fourth.closed, false);
    assert.equal(f.listener.stats.evicted, 1);
    assert.equal(f.listener.stats.open, 4);
    assert.equal(f.listener.stats.peers, 2);
  } finally {
    for (const c of conns) c.socket.destroy();
    await f.close();
  }
});

Deno.test("caps full of busy connections: a newcomer is refused; once one is idle it makes room", async () => {
  const f = await fixture({ maxConnections: 3, maxConnectionsPerPeer: 0 });
  const sessions: http2.ClientHttp2Session[] = [];
  const conns: { socket: net.Socket; closed: boolean }[] = [];
  try {
    // Two HTTP/2 connections with an open stream each, one CONNECT tunnel: all busy.
    for (const id of ["a", "b"]) {
      const s = h2client(f.port);
      sessions.push(s);
      assert.equal(await get(s, "/hold", id), "held\n");
    }
    const tunnel = await raw(f.port);
    conns.push(tunnel);
    tunnel.socket.write("CONNECT /x HTTP/1.1\r\nHost: g\r\n\r\n");
    await waitFor("the tunnel is held", () => f.tunnels.length === 1);
    const refused = await raw(f.port);
    conns.push(refused);
    await waitFor("the newcomer closed", () => refused.closed);
    assert.equal(f.listener.stats.refused, 1);
    assert.equal(sessions.some((s) => s.destroyed), false, "busy connections are kept");

    // Stream "a" ends: its connection is now idle and gives way to a newcomer.
    f.held.get("a")!.end("bye\n");
    await waitFor("stream a ended", () => f.held.get("a")!.closed);
    const next = h2client(f.port);
    sessions.push(next);
    assert.equal(await get(next, "/quick"), "ok\n");
    await waitFor("the idle connection was evicted", () => sessions[0].destroyed);
    assert.equal(f.listener.stats.evicted, 1);
    assert.equal(sessions[1].destroyed, false);
  } finally {
    await Promise.all(sessions.map(closeSession));
    for (const c of conns) c.socket.destroy();
    await f.close();
  }
});

Deno.test("handshake timeout: silence gets 408, a partial HTTP/2 preface is closed", async () => {
  const f = await fixture({ handshakeTimeoutMs: 150 });
  const conns: { socket: net.Socket; closed: boolean }[] = [];
  try {
    const silent = await raw(f.port);
    conns.push(silent);
    let reply = "";
    silent.socket.on("data", (c: Uint8Array) => reply += new TextDecoder().decode(c));
    const partial = await raw(f.port);
    conns.push(partial);
    partial.socket.write(H2_PREFACE.subarray(0, 10));
    await waitFor("both closed", () => silent.closed && partial.closed);
    assert.match(reply, /^HTTP\/1\.1 408 /);
    assert.equal(f.listener.stats.handshakeTimeouts, 2);
    // The client may see its close before the listener has forgotten the connection.
    await waitFor("the listener to forget both", () => f.listener.stats.open === 0);
  } finally {
    for (const c of conns) c.socket.destroy();
    await f.close();
  }
});

Deno.test("idle timeout: an HTTP/2 connection without streams is closed, one with a stream is kept", async () => {
  const f = await fixture({ idleTimeoutMs: 300 });
  const busy = h2client(f.port);
  const idle = h2client(f.port);
  try {
    assert.equal(await get(busy, "/hold", "long"), "held\n");
    assert.equal(await get(idle, "/quick"), "ok\n");
    await waitFor("the idle connection closed", () => idle.destroyed || idle.closed, {
      timeoutMs: 5_000,
    });
    assert.equal(busy.destroyed, false, "a connection with an open stream is not idle");
    assert.equal(f.listener.stats.idleClosed, 1);
    // The stream ends: the connection becomes idle and goes too.
    f.held.get("long")!.end("bye\n");
    await waitFor("the formerly busy connection closed", () => busy.destroyed || busy.closed, {
      timeoutMs: 5_000,
    });
    assert.equal(f.listener.stats.idleClosed, 2);
  } finally {
    await closeSession(busy);
    await closeSession(idle);
    await f.close();
  }
});

Deno.test("HTTP/2 through the listener: GOAWAY on close is removed; HTTP/1.1 still served", async () => {
  const f = await fixture({});
  try {
    const s = h2client(f.port);
    assert.equal(await get(s, "/quick"), "ok\n");
    await new Promise<void>((r) => s.close(() => r())); // graceful: sends GOAWAY
    await waitFor("GOAWAY removed", () => f.listener.goawaysDropped >= 1);
    const c = await raw(f.port);
    let reply = "";
    c.socket.on("data", (d: Uint8Array) => reply += new TextDecoder().decode(d));
    c.socket.write("GET /x HTTP/1.1\r\nHost: g\r\n\r\n");
    await waitFor("reply", () => c.closed);
    assert.match(reply, /^HTTP\/1\.1 200 /);
  } finally {
    await f.close();
  }
});

async function selfSigned(dir: string): Promise<{ cert: string; key: string }> {
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:P-256",
      "-nodes",
      "-keyout",
      `${dir}/k.pem`,
      "-out",
      `${dir}/c.pem`,
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return {
    cert: await Deno.readTextFile(`${dir}/c.pem`),
    key: await Deno.readTextFile(`${dir}/k.pem`),
  };
}

Deno.test("TLS: caps count TCP connections before the handshake; a silent one times out", async () => {
  const dir = await Deno.makeTempDir({ prefix: "lsntls" });
  const f = await fixture(
    { maxConnections: 2, handshakeTimeoutMs: 300, perPeerExempt: () => false },
    { tls: await selfSigned(dir) },
  );
  const conns: { socket: net.Socket; closed: boolean }[] = [];
  try {
    conns.push(await raw(f.port));
    conns.push(await raw(f.port));
    await waitFor("two accepted", () => f.listener.stats.open === 2);
    // A TLS client evicts the oldest silent connection and is served.
    const c = tls.connect({ port: f.port, host: "127.0.0.1", rejectUnauthorized: false });
    c.on("error", () => {});
    let reply = "";
    c.on("data", (d: Uint8Array) => reply += new TextDecoder().decode(d));
    await new Promise((r) => c.once("secureConnect", r));
    c.write("GET /x HTTP/1.1\r\nHost: g\r\n\r\n");
    await new Promise((r) => c.once("close", r));
    assert.match(reply, /^HTTP\/1\.1 200 /);
    assert.equal(conns[0].closed, true, "the oldest silent connection made room");
    await waitFor("the other silent one timed out", () => conns[1].closed);
    assert.ok(f.listener.stats.handshakeTimeouts >= 1);
  } finally {
    for (const c of conns) c.socket.destroy();
    await f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** Sends `bytes` (then half-closes with `end`) and returns everything the listener answered. */
async function exchange(port: number, bytes: string | Uint8Array, end = false): Promise<string> {
  const c = await raw(port);
  let reply = "";
  c.socket.on("data", (d: Uint8Array) => reply += new TextDecoder().decode(d));
  c.socket.write(bytes);
  if (end) c.socket.end();
  await waitFor("the listener closed the connection", () => c.closed);
  return reply;
}

/** The status codes in a reply, in order (more than one means more than one response). */
function statuses(reply: string): number[] {
  return [...reply.matchAll(/HTTP\/1\.1 (\d{3}) /g)].map((m) => Number(m[1]));
}

Deno.test("HTTP/1.1 heads: the node:http parser caps the head at MAX_HEAD_BYTES with one 431", async () => {
  const f = await fixture({});
  try {
    const head = (pad: number) => `GET /x HTTP/1.1\r\nHost: g\r\nX-Pad: ${"a".repeat(pad)}\r\n\r\n`;
    assert.deepEqual(statuses(await exchange(f.port, head(MAX_HEAD_BYTES - 200))), [200]);
    const big = await exchange(f.port, head(MAX_HEAD_BYTES + 1));
    assert.deepEqual(statuses(big), [431]);
    assert.match(big, /request head too large/);
    // No line end at all: the cap still applies to the request line.
    const endless = await exchange(f.port, `GET /${"a".repeat(MAX_HEAD_BYTES + 1)}`);
    assert.deepEqual(statuses(endless), [431]);
    assert.equal(f.listener.stats.open, 0);
  } finally {
    await f.close();
  }
});

Deno.test("HTTP/1.1 heads: malformed heads get one 400 saying why, other versions 505", async () => {
  const f = await fixture({});
  try {
    for (
      const bad of [
        "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
        "GET / HTTP/1.1\r\nX-A: one\r\n two\r\n\r\n", // obsolete line folding
        "GET / HTTP/1.1\r\nX: \x01\r\n\r\n",
        "GET / HTTP/1.1\nHost: g\n\n", // bare LFs
        "G(T / HTTP/1.1\r\n\r\n",
        "GET / FOO\r\n\r\n",
      ]
    ) {
      const reply = await exchange(f.port, bad);
      assert.deepEqual(statuses(reply), [400], JSON.stringify(bad));
      assert.match(reply, /malformed request head: \S/, JSON.stringify(bad));
    }
    const v2 = await exchange(f.port, "GET / HTTP/2.0\r\n\r\n");
    assert.deepEqual(statuses(v2), [505]);
  } finally {
    await f.close();
  }
});

Deno.test("HTTP/1.1 heads: headers reach the handler; one answer even to pipelined requests", async () => {
  const seen: RequestHead[] = [];
  const f = await fixture({}, { onHead: (h) => seen.push(h) });
  try {
    const reply = await exchange(
      f.port,
      "GET /a?q=1 HTTP/1.1\r\nHost: g\r\nX-Token: one\r\nx-token: two\r\n\r\n" +
        "GET /b HTTP/1.1\r\nHost: g\r\n\r\n",
    );
    assert.deepEqual(statuses(reply), [200]);
    assert.equal(seen.length, 1);
    assert.equal(seen[0].method, "GET");
    assert.equal(seen[0].target, "/a?q=1");
    assert.equal(seen[0].version, "HTTP/1.1");
    assert.equal(seen[0].headers.get("x-token"), "one, two");
    // Garbage after a complete request changes nothing: one answer, the first.
    const trailing = await exchange(
      f.port,
      "GET /d HTTP/1.1\r\nHost: g\r\n\r\n\x01\x02 junk\r\n\r\n",
    );
    assert.deepEqual(statuses(trailing), [200]);
    assert.equal(seen.length, 2);
    // A client that half-closes right after its head is still answered.
    assert.deepEqual(statuses(await exchange(f.port, "GET /c HTTP/1.0\r\n\r\n", true)), [200]);
  } finally {
    await f.close();
  }
});

Deno.test("HTTP/1.1 heads: a CONNECT gets the bytes sent after its head; a partial head gets 408", async () => {
  const f = await fixture({ handshakeTimeoutMs: 300 });
  try {
    const c = await raw(f.port);
    let reply = "";
    c.socket.on("data", (d: Uint8Array) => reply += new TextDecoder().decode(d));
    c.socket.write("CONNECT /x HTTP/1.1\r\nHost: g\r\n\r\nSSH-2.0-early");
    await waitFor("the tunnel is held", () => f.tunnels.length === 1);
    assert.equal(new TextDecoder().decode(f.early[0]), "SSH-2.0-early");
    await waitFor("200", () => reply.startsWith("HTTP/1.1 200 "));
    c.socket.destroy();

    const partial = await exchange(f.port, "GET /x HTTP/1.1\r\nHost: g\r\n");
    assert.deepEqual(statuses(partial), [408]);
    assert.ok(f.listener.stats.handshakeTimeouts >= 1);
  } finally {
    await f.close();
  }
});
