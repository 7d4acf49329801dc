import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { Duplex } from "node:stream";
import { Logger } from "../core/log.ts";
import type { GatewayMessage, Sandbox, SandboxPhase, SshSession } from "../core/protocol.ts";
import { type RegistryOptions, SessionRegistry } from "../core/registry.ts";
import { Code, StatusError } from "../core/status.ts";
import { waitFor } from "../core/testing.ts";
import { HttpError, type RequestHead, requestHeadOf } from "./http1.ts";
import {
  ConnectionSlots,
  MAX_CONNECTIONS_PER_SANDBOX,
  MAX_CONNECTIONS_PER_TOKEN,
  SshTunnel,
} from "./ssh_tunnel.ts";
import { SqliteStore, type Store } from "./store.ts";
import { type ConnectReply, sendConnect } from "../testing/gateway.ts";

// ---- ConnectionSlots -------------------------------------------------------------

Deno.test("ConnectionSlots: the per-token cap refuses without touching the sandbox count", () => {
  const slots = new ConnectionSlots();
  for (let i = 0; i < MAX_CONNECTIONS_PER_TOKEN; i++) assert.equal(slots.acquire("t", "s"), true);
  assert.equal(slots.acquire("t", "s"), false);
  assert.equal(slots.tokenCount("t"), MAX_CONNECTIONS_PER_TOKEN);
  assert.equal(slots.sandboxCount("s"), MAX_CONNECTIONS_PER_TOKEN);
  // another token of the same sandbox is still fine
  assert.equal(slots.acquire("t2", "s"), true);
  assert.equal(slots.sandboxCount("s"), MAX_CONNECTIONS_PER_TOKEN + 1);
});

Deno.test("ConnectionSlots: the sandbox cap refuses and takes nothing from the token", () => {
  const slots = new ConnectionSlots();
  let n = 0;
  for (let t = 0; n < MAX_CONNECTIONS_PER_SANDBOX; t++) {
    for (let i = 0; i < MAX_CONNECTIONS_PER_TOKEN && n < MAX_CONNECTIONS_PER_SANDBOX; i++, n++) {
      assert.equal(slots.acquire(`t${t}`, "s"), true);
    }
  }
  assert.equal(slots.sandboxCount("s"), MAX_CONNECTIONS_PER_SANDBOX);
  assert.equal(slots.acquire("fresh", "s"), false);
  assert.equal(slots.tokenCount("fresh"), 0, "the token slot was not kept");
  assert.equal(slots.sandboxCount("s"), MAX_CONNECTIONS_PER_SANDBOX);
  // another sandbox is unaffected
  assert.equal(slots.acquire("fresh", "other"), true);
});

Deno.test("ConnectionSlots: release gives both slots back and never goes negative", () => {
  const slots = new ConnectionSlots(2, 3);
  assert.equal(slots.acquire("a", "s"), true);
  assert.equal(slots.acquire("a", "s"), true);
  assert.equal(slots.acquire("a", "s"), false);
  slots.release("a", "s");
  assert.equal(slots.tokenCount("a"), 1);
  assert.equal(slots.sandboxCount("s"), 1);
  assert.equal(slots.acquire("a", "s"), true);
  slots.release("a", "s");
  slots.release("a", "s");
  assert.equal(slots.tokenCount("a"), 0);
  assert.equal(slots.sandboxCount("s"), 0);
  slots.release("a", "s"); // a stray release
  assert.equal(slots.tokenCount("a"), 0);
  assert.equal(slots.sandboxCount("s"), 0);
  assert.equal(slots.acquire("a", "s"), true);
  assert.equal(slots.acquire("a", "s"), true);
  assert.equal(slots.acquire("a", "s"), false, "the cap still holds after a stray release");
});

// ---- SshTunnel.authorize -----------------------------------------------------------

const NOW = 1_000_000;

function sandbox(id: string, phase: SandboxPhase): Sandbox {
  return {
    id,
    name: `name-${id}`,
    namespace: "default",
    spec: null,
    status: null,
    phase,
    created_at_ms: 1,
    current_policy_version: 0,
  };
}

function session(token: string, sandboxId: string, over: Partial<SshSession> = {}): SshSession {
  return {
    id: token,
    token,
    sandbox_id: sandboxId,
    name: token,
    created_at_ms: 1,
    expires_at_ms: NOW + 1,
    revoked: false,
    ...over,
  };
}

async function fixture(): Promise<{ store: SqliteStore; tunnel: SshTunnel; close(): void }> {
  const store = SqliteStore.open();
  await store.createSandbox({ sandbox: sandbox("ready", "SANDBOX_PHASE_READY"), secrets: {} });
  await store.createSandbox({
    sandbox: sandbox("booting", "SANDBOX_PHASE_PROVISIONING"),
    secrets: {},
  });
  await store.createSshSession(session("good", "ready"));
  await store.createSshSession(session("forever", "ready", { expires_at_ms: 0 }));
  await store.createSshSession(session("revoked", "ready", { revoked: true }));
  await store.createSshSession(session("expired", "ready", { expires_at_ms: NOW - 1 }));
  await store.createSshSession(session("booting-tok", "booting"));
  const registry = new SessionRegistry<Duplex>();
  const tunnel = new SshTunnel({
    store,
    registry,
    log: new Logger({ sink: () => {} }),
    now: () => NOW,
  });
  return {
    store,
    tunnel,
    close() {
      registry.close();
      store.close();
    },
  };
}

function head(headers: Record<string, string>, method = "CONNECT"): RequestHead {
  return {
    method,
    target: "/connect/ssh",
    version: "HTTP/1.1",
    headers: new Map(Object.entries(headers)),
  };
}

async function status(tunnel: SshTunnel, h: RequestHead, message?: RegExp): Promise<number> {
  try {
    await tunnel.authorize(h);
  } catch (err) {
    assert.ok(err instanceof HttpError, `not an HttpError: ${err}`);
    if (message) assert.match(err.message, message);
    return err.status;
  }
  return 200;
}

Deno.test("authorize: every refusal has its status, without a server", async () => {
  const f = await fixture();
  try {
    const t = f.tunnel;
    const ok = { "x-sandbox-id": "ready", "x-sandbox-token": "good" };
    assert.equal(await status(t, head(ok, "GET")), 405);
    assert.equal(await status(t, head(ok, "POST")), 405);
    assert.equal(await status(t, head({ "x-sandbox-id": "ready" }), /required/), 401);
    assert.equal(await status(t, head({ "x-sandbox-token": "good" }), /required/), 401);
    assert.equal(await status(t, head({ ...ok, "x-sandbox-id": "rédy" }), /ASCII/), 400);
    assert.equal(await status(t, head({ ...ok, "x-sandbox-token": "gööd" }), /ASCII/), 400);
    assert.equal(await status(t, head({ ...ok, "x-sandbox-id": "   " }), /blank/), 400);
    assert.equal(await status(t, head({ ...ok, "x-sandbox-token": "" }), /blank/), 400);
    // The token is checked before the sandbox is looked up: no sandbox-id oracle.
    assert.equal(await status(t, head({ ...ok, "x-sandbox-id": "nope" }), /does not belong/), 401);
    assert.equal(
      await status(t, head({ "x-sandbox-id": "nope", "x-sandbox-token": "nope" }), /unknown token/),
      401,
    );
    assert.equal(await status(t, head({ ...ok, "x-sandbox-token": "nope" }), /unknown token/), 401);
    assert.equal(await status(t, head({ ...ok, "x-sandbox-token": "revoked" }), /revoked/), 401);
    assert.equal(await status(t, head({ ...ok, "x-sandbox-token": "expired" }), /expired/), 401);
    assert.equal(
      await status(t, head({ ...ok, "x-sandbox-token": "booting-tok" }), /does not belong/),
      401,
    );
    assert.equal(
      await status(
        t,
        head({ "x-sandbox-id": "booting", "x-sandbox-token": "booting-tok" }),
        /not ready/,
      ),
      412,
    );
  } finally {
    f.close();
  }
});

Deno.test("authorize: a valid token of a READY sandbox passes, values trimmed", async () => {
  const f = await fixture();
  try {
    assert.deepEqual(
      await f.tunnel.authorize(head({ "x-sandbox-id": " ready ", "x-sandbox-token": " good " })),
      { sandboxId: "ready", token: "good", expiresAtMs: NOW + 1 },
    );
    // expires_at_ms 0 never expires
    assert.deepEqual(
      await f.tunnel.authorize(head({ "x-sandbox-id": "ready", "x-sandbox-token": "forever" })),
      { sandboxId: "ready", token: "forever", expiresAtMs: 0 },
    );
    // a revoke through the store takes effect at once
    await f.store.revokeSshSession("good");
    assert.equal(
      await status(f.tunnel, head({ "x-sandbox-id": "ready", "x-sandbox-token": "good" })),
      401,
    );
  } finally {
    f.close();
  }
});

Deno.test("authorize: a token that expires exactly now is still valid, a ms later it is not", async () => {
  const store = SqliteStore.open();
  const registry = new SessionRegistry<Duplex>();
  let now = NOW;
  try {
    await store.createSandbox({ sandbox: sandbox("ready", "SANDBOX_PHASE_READY"), secrets: {} });
    await store.createSshSession(session("tok", "ready", { expires_at_ms: NOW }));
    const tunnel = new SshTunnel({
      store,
      registry,
      log: new Logger({ sink: () => {} }),
      now: () => now,
    });
    const h = head({ "x-sandbox-id": "ready", "x-sandbox-token": "tok" });
    assert.equal(await status(tunnel, h), 200);
    now = NOW + 1;
    assert.equal(await status(tunnel, h, /expired/), 401);
  } finally {
    registry.close();
    store.close();
  }
});

Deno.test("authorize: a failing session lookup is 500 and logged", async () => {
  const inner = SqliteStore.open();
  const registry = new SessionRegistry<Duplex>();
  const lines: string[] = [];
  try {
    await inner.createSandbox({ sandbox: sandbox("ready", "SANDBOX_PHASE_READY"), secrets: {} });
    const store: Store = Object.assign(Object.create(inner), {
      getSandbox: (id: string) => inner.getSandbox(id),
      getSshSession: () => Promise.reject(new Error("database is locked")),
    });
    const tunnel = new SshTunnel({
      store,
      registry,
      log: new Logger({ sink: (l) => lines.push(l) }),
    });
    assert.equal(
      await status(
        tunnel,
        head({ "x-sandbox-id": "ready", "x-sandbox-token": "t" }),
        /lookup failed/,
      ),
      500,
    );
    assert.ok(lines.some((l) => l.includes("database is locked")));
  } finally {
    registry.close();
    inner.close();
  }
});

// ---- SshTunnel.handle, in process on loopback ----------------------------------------

/** Two byte streams wired to each other; destroying one destroys both. */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (other: () => Duplex) =>
    new Duplex({
      allowHalfOpen: true,
      read() {},
      write(chunk, _enc, cb) {
        other().push(chunk);
        cb();
      },
      final(cb) {
        other().push(null);
        cb();
      },
      destroy(err, cb) {
        if (!other().destroyed) other().destroy();
        cb(err);
      },
    });
  ends.push(make(() => ends[1]), make(() => ends[0]));
  return [ends[0], ends[1]];
}

/** What the fake supervisor does with a `relay_open`. */
type OnRelayOpen = (channelId: string, f: TunnelFixture) => void;

interface TunnelFixture {
  port: number;
  store: SqliteStore;
  registry: SessionRegistry<Duplex>;
  tunnel: SshTunnel;
  /** Channel ids of every relay_open sent. */
  opens: string[];
  /** The sandbox ends of claimed relays, in claim order. */
  sandboxEnds: Duplex[];
  /** Sets the clock the tunnel sees. */
  setNow(ms: number): void;
  /** Creates a token for sandbox `sb`. */
  token(over?: Partial<SshSession>): Promise<string>;
  close(): Promise<void>;
}

/** A sandbox side like sshd: greets, and (unless `linger`) ends when the client ends. */
function sshdLike(linger: boolean): OnRelayOpen {
  return (channelId, f) => {
    const [gatewayEnd, sandboxEnd] = duplexPair();
    f.sandboxEnds.push(sandboxEnd);
    sandboxEnd.on("error", () => {});
    sandboxEnd.write("SSH-2.0-fake\r\n");
    sandboxEnd.on("data", (c: Uint8Array) => sandboxEnd.write(c));
    sandboxEnd.on("end", () => {
      if (!linger) sandboxEnd.end();
    });
    queueMicrotask(() => f.registry.claimRelay(channelId, gatewayEnd));
  };
}

async function tunnelFixture(
  onRelayOpen: OnRelayOpen,
  options: { registry?: RegistryOptions; drainMs?: number } = {},
): Promise<TunnelFixture> {
  const store = SqliteStore.open();
  await store.createSandbox({ sandbox: sandbox("sb", "SANDBOX_PHASE_READY"), secrets: {} });
  const registry = new SessionRegistry<Duplex>(options.registry);
  let now = NOW;
  const tunnel = new SshTunnel({
    store,
    registry,
    log: new Logger({ sink: () => {} }),
    now: () => now,
    drainMs: options.drainMs,
  });
  const sockets = new Set<net.Socket>();
  const handled = new Set<Promise<void>>();
  // node:http parses the CONNECT head and hands over the socket, as the gateway's listener does.
  const server = http.createServer({ requireHostHeader: false } as http.ServerOptions);
  server.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  });
  server.on("connect", (req: http.IncomingMessage, socket: net.Socket, rest: Uint8Array) => {
    const p = tunnel.handle(requestHeadOf(req), socket, rest);
    handled.add(p);
    p.finally(() => handled.delete(p));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as net.AddressInfo).port;
  let n = 0;
  const f: TunnelFixture = {
    port,
    store,
    registry,
    tunnel,
    opens: [],
    sandboxEnds: [],
    setNow: (ms) => now = ms,
    token: async (over = {}) => {
      const token = `tok-${++n}`;
      await store.createSshSession(session(token, "sb", { expires_at_ms: 0, ...over }));
      return token;
    },
    close: async () => {
      tunnel.closeAll();
      for (const s of sockets) s.destroy();
      for (const e of f.sandboxEnds) e.destroy();
      await new Promise((r) => server.close(r));
      await Promise.allSettled([...handled]);
      registry.close();
      store.close();
    },
  };
  registry.register("sb", "s1", {
    send: (m: GatewayMessage) => {
      if (m.payload === "relay_open") {
        f.opens.push(m.relay_open.channel_id);
        onRelayOpen(m.relay_open.channel_id, f);
      }
      return true;
    },
    stop: () => {},
  });
  return f;
}

function connect(f: TunnelFixture, token: string): Promise<ConnectReply> {
  return sendConnect(f.port, { "x-sandbox-id": "sb", "x-sandbox-token": token });
}

/** Resolves when `socket` has read its end (resumes it). */
function ended(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.readableEnded || socket.destroyed) return resolve();
    socket.once("end", () => resolve());
    socket.once("close", () => resolve());
    socket.resume();
  });
}

/** Resolves once the fake sshd's greeting line has been read from `socket`. */
function greeting(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    let text = "";
    const onData = (d: Uint8Array) => {
      text += new TextDecoder().decode(d);
      if (!text.includes("\r\n")) return;
      socket.removeListener("data", onData);
      socket.pause();
      resolve();
    };
    socket.on("data", onData);
    socket.resume();
  });
}

/** Resolves once `socket` is closed on this side. */
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once("close", () => resolve());
  });
}

Deno.test("tunnel: back-to-back waves of 17 tunnels see no 429 while sshd lingers", async () => {
  // The sandbox side never finishes after the client leaves (a slow sshd):
  // the slots must come back when the client closes, not when sshd exits.
  const f = await tunnelFixture(sshdLike(true), { drainMs: 60_000 });
  try {
    const tokens: string[] = [];
    for (let i = 0; i < 6; i++) tokens.push(await f.token()); // 6 × 3 ≥ 17
    for (let wave = 0; wave < 5; wave++) {
      const opened = await Promise.all(
        Array.from({ length: 17 }, (_, i) => connect(f, tokens[i % tokens.length])),
      );
      assert.deepEqual(opened.map((t) => t.status), Array(17).fill(200), `wave ${wave}`);
      // Like ssh: read the server's greeting, then go away (FIN, nothing unread).
      await Promise.all(opened.map((t) => greeting(t.socket)));
      for (const t of opened) t.socket.destroy();
      await Promise.all(opened.map((t) => closed(t.socket)));
    }
    assert.equal(f.opens.length, 5 * 17);
    // Every wave's sshd still lingers, yet every slot is back.
    assert.equal(f.tunnel.openTunnels, 5 * 17);
    await waitFor("the slots to come back", () => f.tunnel.slots.sandboxCount("sb") === 0);
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: a finished client frees its slots at once; the sandbox side drains, then goes", async () => {
  const f = await tunnelFixture(sshdLike(true), { drainMs: 100 });
  try {
    const token = await f.token();
    const t = await connect(f, token);
    assert.equal(t.status, 200);
    assert.equal(f.tunnel.slots.tokenCount(token), 1);
    t.socket.end(); // half-close: the client has nothing more to say
    await waitFor("the slot to come back", () => f.tunnel.slots.tokenCount(token) === 0);
    // The lingering sandbox side is torn down after the drain period.
    await closed(f.sandboxEnds[0] as unknown as net.Socket);
    await ended(t.socket);
    assert.equal(f.tunnel.openTunnels, 0);
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: a client that leaves before the tunnel is up cancels its relay request", async () => {
  const f = await tunnelFixture(() => {}); // a supervisor that never answers
  try {
    const token = await f.token();
    const socket = net.connect({ port: f.port, host: "127.0.0.1" });
    socket.on("error", () => {});
    socket.write(
      `CONNECT /connect/ssh HTTP/1.1\r\nx-sandbox-id: sb\r\nx-sandbox-token: ${token}\r\n\r\n`,
    );
    await waitFor("relay_open", () => f.opens.length === 1);
    socket.destroy();
    await waitFor("the slot to come back", () => f.tunnel.slots.tokenCount(token) === 0);
    // The entry still counts (the supervisor was asked) but nobody waits for it.
    assert.equal(f.registry.pendingCount("sb"), 1);
    assert.throws(
      () => f.registry.claimRelay(f.opens[0], new Duplex()),
      (e: StatusError) => e.code === Code.INTERNAL,
    );
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: no relay capacity is 429; any other relay failure is 502", async () => {
  let code: number = Code.RESOURCE_EXHAUSTED;
  const f = await tunnelFixture((channelId, fx) =>
    queueMicrotask(() =>
      fx.registry.failRelay(
        channelId,
        { sandboxId: "sb", sessionId: "s1" },
        new StatusError(code as Code, "the supervisor said no"),
      )
    ), { registry: { maxPendingPerSandbox: 1 } });
  try {
    const token = await f.token();
    const refused = await connect(f, token);
    assert.equal(refused.status, 429);
    code = Code.UNAVAILABLE;
    assert.equal((await connect(f, token)).status, 502);
    assert.equal(f.tunnel.slots.tokenCount(token), 0);
    assert.equal(f.registry.pendingCount(), 0);
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: the gateway's own relay cap answers 429, not 502", async () => {
  const f = await tunnelFixture(() => {}, {
    registry: { maxPendingPerSandbox: 1, reservedPerSandbox: 1 },
  });
  try {
    const token = await f.token();
    const waiting = net.connect({ port: f.port, host: "127.0.0.1" });
    waiting.on("error", () => {});
    waiting.write(
      `CONNECT /connect/ssh HTTP/1.1\r\nx-sandbox-id: sb\r\nx-sandbox-token: ${token}\r\n\r\n`,
    );
    await waitFor("relay_open", () => f.opens.length === 1);
    const t = await connect(f, token);
    assert.equal(t.status, 429);
    assert.match(t.head, /429/);
    assert.equal(f.opens.length, 1, "no second relay_open went out");
    waiting.destroy();
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: revoking a token closes its tunnels; others stay open", async () => {
  const f = await tunnelFixture(sshdLike(false));
  try {
    const revoked = await f.token();
    const kept = await f.token();
    const a = await connect(f, revoked);
    const b = await connect(f, revoked);
    const c = await connect(f, kept);
    assert.deepEqual([a.status, b.status, c.status], [200, 200, 200]);
    assert.equal(f.tunnel.closeToken(revoked), 2);
    await Promise.all([ended(a.socket), ended(b.socket)]);
    assert.equal(f.tunnel.openTunnels, 1);
    assert.equal(f.tunnel.slots.tokenCount(revoked), 0);
    // The other tunnel still carries bytes.
    const echoed = new Promise<void>((resolve) => {
      let text = "";
      c.socket.on("data", (d: Uint8Array) => {
        text += new TextDecoder().decode(d);
        if (text.includes("ping")) resolve();
      });
    });
    c.socket.resume();
    c.socket.write("ping");
    await echoed;
    c.socket.destroy();
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: a token's expiry closes its tunnels (injected clock)", async () => {
  const f = await tunnelFixture(sshdLike(false));
  try {
    const short = await f.token({ expires_at_ms: NOW + 1_000 });
    const long = await f.token({ expires_at_ms: NOW + 60_000 });
    const never = await f.token({ expires_at_ms: 0 });
    const tunnels = await Promise.all([connect(f, short), connect(f, long), connect(f, never)]);
    assert.deepEqual(tunnels.map((t) => t.status), [200, 200, 200]);
    assert.equal(f.tunnel.closeExpired(), 0);
    f.setNow(NOW + 1_001);
    assert.equal(f.tunnel.closeExpired(), 1);
    await ended(tunnels[0].socket);
    assert.equal(f.tunnel.openTunnels, 2);
    f.setNow(NOW + 10 * 365 * 86_400_000);
    assert.equal(f.tunnel.closeExpired(), 1);
    await ended(tunnels[1].socket);
    assert.equal(f.tunnel.openTunnels, 1, "a token without expiry is never swept");
    tunnels[2].socket.destroy();
  } finally {
    await f.close();
  }
});

Deno.test("tunnel: the expiry sweep runs on its own until closeAll", async () => {
  const f = await tunnelFixture(sshdLike(false));
  try {
    const token = await f.token({ expires_at_ms: NOW + 1 });
    const t = await connect(f, token);
    assert.equal(t.status, 200);
    f.setNow(NOW + 2);
    f.tunnel.startExpirySweep(10);
    await ended(t.socket);
    assert.equal(f.tunnel.openTunnels, 0);
  } finally {
    await f.close(); // closeAll stops the sweep (the sanitizer would see a leaked interval)
  }
});
