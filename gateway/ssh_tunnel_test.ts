import assert from "node:assert/strict";
import type { Duplex } from "node:stream";
import { Logger } from "../core/log.ts";
import type { Sandbox, SandboxPhase, SshSession } from "../core/protocol.ts";
import { SessionRegistry } from "../core/registry.ts";
import { HttpError, type RequestHead } from "./http1.ts";
import {
  ConnectionSlots,
  MAX_CONNECTIONS_PER_SANDBOX,
  MAX_CONNECTIONS_PER_TOKEN,
  SshTunnel,
} from "./ssh_tunnel.ts";
import { SqliteStore, type Store } from "./store.ts";

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
      { sandboxId: "ready", token: "good" },
    );
    // expires_at_ms 0 never expires
    assert.deepEqual(
      await f.tunnel.authorize(head({ "x-sandbox-id": "ready", "x-sandbox-token": "forever" })),
      { sandboxId: "ready", token: "forever" },
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
