import assert from "node:assert/strict";
import net from "node:net";
import { waitFor } from "../core/testing.ts";
import {
  egressHeader,
  egressRoute,
  forwarderBindPath,
  gatewayRoute,
  GuestForwarders,
  MAX_DNS_CONNECTIONS,
  MAX_EGRESS_HEADER_BYTES,
  MAX_PROXY_CONNECTIONS,
} from "./guest_forwarder.ts";
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
    routes: [gatewayRoute({ host: "127.0.0.1", port: gw.port }, 2)],
    log,
  });
  try {
    // Opened at once: serialised through the one bind path, distinct sockets.
    const [fa, fb] = await Promise.all([factory.open("a"), factory.open("b")]);
    const [a, b] = [fa.sockets.gateway, fb.sockets.gateway];
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
    await fa.close();
    await waitFor("the held connection is cut", () => heldClosed);
    await assert.rejects(Deno.stat(a.path), Deno.errors.NotFound);
    await fb.close();
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
    routes: [gatewayRoute({ host: "127.0.0.1", port: 9 }, 2)],
    log,
  });
  const f = await factory.open("down");
  const g = f.sockets.gateway;
  try {
    assert.equal(await exchange(g.path, "anyone?"), "");
    await waitFor("the slot is free again", () => g.stats.open === 0);
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
      routes: [gatewayRoute({ host: "127.0.0.1", port: 9 }, 1)],
      log,
      owner,
    });
    const f = await factory.open("owned");
    try {
      const sock = await Deno.stat(f.sockets.gateway.path);
      assert.deepEqual([sock.uid, sock.gid, sock.mode! & 0o777], [65534, 65534, 0o600]);
      const fwd = await Deno.stat(`${dir}/fwd`);
      assert.deepEqual([fwd.gid, fwd.mode! & 0o777], [65534, 0o710]);
    } finally {
      await f.close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// ---- egress routes ------------------------------------------------------------

/**
 * An egress proxy stand-in on a Unix socket: splits each connection's first
 * line off and, once the client half-closed, answers `<first line>|<rest>`.
 * With `hold`, it answers nothing and keeps every connection open until the
 * client closes it.
 */
async function fakeEgress(
  path: string,
  options: { hold?: boolean } = {},
): Promise<{ connections: number; close(): Promise<void> }> {
  const held = new Set<net.Socket>();
  const state = { connections: 0 };
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    state.connections++;
    held.add(s);
    s.on("close", () => held.delete(s));
    s.on("error", () => {});
    if (options.hold) {
      s.on("end", () => s.end());
      s.resume();
      return;
    }
    let got = "";
    s.setEncoding("utf8");
    s.on("data", (d: string) => got += d);
    s.on("end", () => {
      const nl = got.indexOf("\n");
      s.end(`${got.slice(0, nl)}|${got.slice(nl + 1)}`);
    });
  });
  await new Promise<void>((r) => server.listen(path, () => r()));
  return {
    get connections() {
      return state.connections;
    },
    close: () => {
      for (const s of held) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}

Deno.test("egress header: the sandbox id and kind on one line, short enough; odd ids refused", () => {
  assert.equal(egressHeader("sb-1", "http"), "OPENSHELL-EGRESS/1 sb-1 http\n");
  assert.equal(egressHeader("a.b_c", "dns"), "OPENSHELL-EGRESS/1 a.b_c dns\n");
  const longest = egressHeader("x".repeat(128), "http");
  assert.ok(new TextEncoder().encode(longest).length <= MAX_EGRESS_HEADER_BYTES);
  for (const bad of ["", "a b", "a\nOPENSHELL-EGRESS/1 b http", "x".repeat(129), "ü"]) {
    assert.throws(() => egressHeader(bad, "http"), /invalid sandbox id/, JSON.stringify(bad));
  }
});

Deno.test("forwarders: egress routes write the driver's header before any guest byte", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fwd" });
  const sock = `${dir}/guest.sock`;
  const egress = await fakeEgress(sock);
  const gw = await halfCloseEcho();
  const { log } = memoryLogger();
  const factory = new GuestForwarders({
    stateDir: dir,
    routes: [
      gatewayRoute({ host: "127.0.0.1", port: gw.port }),
      egressRoute(sock, "http"),
      egressRoute(sock, "dns"),
    ],
    log,
  });
  const f = await factory.open("sb-1");
  try {
    const { gateway, proxy, dns } = f.sockets;
    assert.equal(new Set([gateway.path, proxy.path, dns.path]).size, 3, "one socket per route");
    assert.equal(await exchange(gateway.path, "hello"), "got hello", "the gateway gets no header");
    assert.equal(
      await exchange(proxy.path, "CONNECT example.com:443 HTTP/1.1\r\n\r\n"),
      "OPENSHELL-EGRESS/1 sb-1 http|CONNECT example.com:443 HTTP/1.1\r\n\r\n",
    );
    assert.equal(
      await exchange(dns.path, "\x00\x1dquery"),
      "OPENSHELL-EGRESS/1 sb-1 dns|\x00\x1dquery",
    );
    // A guest that sends a header of its own only adds bytes after the driver's.
    assert.equal(
      await exchange(proxy.path, "OPENSHELL-EGRESS/1 someone-else http\nGET / HTTP/1.1\r\n\r\n"),
      "OPENSHELL-EGRESS/1 sb-1 http|OPENSHELL-EGRESS/1 someone-else http\nGET / HTTP/1.1\r\n\r\n",
    );
    assert.equal(proxy.stats.accepted, 2);
    assert.equal(dns.stats.accepted, 1);
  } finally {
    await f.close();
    await egress.close();
    await gw.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forwarders: at most 64 proxy and 8 DNS connections per VM; the next is closed at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fwd" });
  const sock = `${dir}/guest.sock`;
  const egress = await fakeEgress(sock, { hold: true });
  const { log, lines } = memoryLogger();
  const factory = new GuestForwarders({
    stateDir: dir,
    routes: [egressRoute(sock, "http"), egressRoute(sock, "dns")],
    log,
  });
  const f = await factory.open("busy");
  const clients: net.Socket[] = [];
  const connect = (path: string) => {
    const c = net.connect({ path });
    c.on("error", () => {});
    clients.push(c);
    return c;
  };
  try {
    const { proxy, dns } = f.sockets;
    for (let i = 0; i < MAX_PROXY_CONNECTIONS; i++) connect(proxy.path);
    for (let i = 0; i < MAX_DNS_CONNECTIONS; i++) connect(dns.path);
    const total = MAX_PROXY_CONNECTIONS + MAX_DNS_CONNECTIONS;
    await waitFor("every allowed connection reaches the proxy", () => egress.connections === total);
    assert.equal(proxy.stats.open, MAX_PROXY_CONNECTIONS);
    assert.equal(dns.stats.open, MAX_DNS_CONNECTIONS);
    // One more of each: closed by the driver, never passed on.
    const closed: string[] = [];
    connect(proxy.path).on("close", () => closed.push("proxy"));
    connect(dns.path).on("close", () => closed.push("dns"));
    await waitFor("both extra connections closed", () => closed.length === 2);
    assert.deepEqual([proxy.stats.refused, dns.stats.refused], [1, 1]);
    assert.equal(egress.connections, total, "the refused ones never reached the proxy");
    assert.ok(lines.some((l) => l.includes("guest connection limit reached")));
    // A slot freed is a slot usable again.
    clients[0].destroy();
    await waitFor("the slot is free again", () => proxy.stats.open === MAX_PROXY_CONNECTIONS - 1);
    connect(proxy.path);
    await waitFor("a new connection passes", () => egress.connections === total + 1);
  } finally {
    for (const c of clients) c.destroy();
    await f.close();
    await egress.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forwarders: an egress proxy that is down closes the guest's connection at once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "fwd" });
  const { log, lines } = memoryLogger();
  const factory = new GuestForwarders({
    stateDir: dir,
    routes: [egressRoute(`${dir}/absent.sock`, "http")],
    log,
  });
  const f = await factory.open("down");
  try {
    // Closed at once: an empty reply, or a reset when the guest's bytes were still unread.
    const reply = await exchange(f.sockets.proxy.path, "GET http://x/ HTTP/1.1\r\n\r\n")
      .catch((err) => err.code);
    assert.ok(reply === "" || reply === "ECONNRESET", reply);
    await waitFor("the slot is free again", () => f.sockets.proxy.stats.open === 0);
    assert.ok(lines.some((l) => l.includes("cannot reach the proxy")), lines.join("\n"));
  } finally {
    await f.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("forwarders: route names must be distinct", () => {
  const { log } = memoryLogger();
  assert.throws(
    () =>
      new GuestForwarders({
        stateDir: "/nonexistent",
        routes: [egressRoute("/x.sock", "http"), egressRoute("/y.sock", "http")],
        log,
      }),
    /distinct names: proxy, proxy/,
  );
});
