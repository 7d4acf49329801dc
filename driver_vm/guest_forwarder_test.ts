import assert from "node:assert/strict";
import net from "node:net";
import { waitFor } from "../core/testing.ts";
import { forwarderBindPath, GuestForwarders } from "./guest_forwarder.ts";
import { memoryLogger } from "./testing.ts";

/** A gateway stand-in: answers each connection with its bytes once the client half-closed. */
async function halfCloseEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    let got = "";
    s.setEncoding("utf8");
    s.on("error", () => {});
    s.on("data", (d: string) => got += d);
    s.on("end", () => s.end(`got ${got}`));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

function exchange(path: string, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ path, allowHalfOpen: true });
    let reply = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => reply += d);
    s.on("end", () => resolve(reply));
    s.on("error", reject);
    s.end(text); // half-close: the reply still comes back
  });
}

Deno.test("forwarders: one socket per VM, half-close carried, closed and removed on close", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fwd" });
  const gw = await halfCloseEcho();
  const { log } = memoryLogger();
  const factory = new GuestForwarders({
    stateDir: dir,
    gateway: { host: "127.0.0.1", port: gw.port },
    maxConnections: 2,
    log,
  });
  try {
    // Opened at once: serialised through the one bind path, distinct sockets.
    const [a, b] = await Promise.all([factory.open("a"), factory.open("b")]);
    assert.notEqual(a.path, b.path);
    assert.ok(a.path.startsWith(`${dir}/fwd/`) && b.path.startsWith(`${dir}/fwd/`));
    await assert.rejects(Deno.stat(forwarderBindPath(dir)), Deno.errors.NotFound);
    assert.equal((await Deno.stat(a.path)).mode! & 0o777, 0o600);
    assert.equal(await exchange(a.path, "from a"), "got from a");
    assert.equal(await exchange(b.path, "from b"), "got from b");
    assert.equal(a.stats.accepted, 1);
    await waitFor("a's connection closed", () => a.stats.open === 0);

    // A held connection is cut by close(), and the socket file goes.
    const held = net.connect({ path: a.path });
    let heldClosed = false;
    held.on("error", () => {});
    held.on("close", () => heldClosed = true);
    await waitFor("held accepted", () => a.stats.open === 1);
    await a.close();
    await waitFor("the held connection is cut", () => heldClosed);
    await assert.rejects(Deno.stat(a.path), Deno.errors.NotFound);
    await b.close();
  } finally {
    await gw.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forwarders: a gateway that is down closes the guest's connection at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fwd" });
  const { log, lines } = memoryLogger();
  const factory = new GuestForwarders({
    stateDir: dir,
    gateway: { host: "127.0.0.1", port: 9 },
    maxConnections: 2,
    log,
  });
  const f = await factory.open("down");
  try {
    assert.equal(await exchange(f.path, "anyone?"), "");
    await waitFor("the slot is free again", () => f.stats.open === 0);
    assert.ok(lines.some((l) => l.includes("cannot reach the gateway")));
  } finally {
    await f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "forwarders: given an owner, its sockets are the owner's and fwd/ is shared with its group",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "fwd" });
    const { log } = memoryLogger();
    const owner = { uid: 65534, gid: 65534 };
    const factory = new GuestForwarders({
      stateDir: dir,
      gateway: { host: "127.0.0.1", port: 9 },
      maxConnections: 1,
      log,
      owner,
    });
    const f = await factory.open("owned");
    try {
      const sock = await Deno.stat(f.path);
      assert.deepEqual([sock.uid, sock.gid, sock.mode! & 0o777], [65534, 65534, 0o600]);
      const fwd = await Deno.stat(`${dir}/fwd`);
      assert.deepEqual([fwd.gid, fwd.mode! & 0o777], [65534, 0o710]);
    } finally {
      await f.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
