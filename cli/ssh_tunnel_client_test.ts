import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import tls from "node:tls";
import { createCa, issueCertificate } from "../core/pki.ts";
import { fingerprintOfPublicKey } from "../core/ssh_keys.ts";
import { parseGatewayUrl } from "./config.ts";
import { CliError } from "./errors.ts";
import { HostKeyMismatchError, HostKeyVerifier } from "./ssh_hostkey.ts";
import {
  type ByteReader,
  connectFailureMessage,
  connectHeaders,
  openTunnel,
  pumpTunnel,
  type TunnelTarget,
  tunnelTargetOf,
  validateTarget,
} from "./ssh_tunnel_client.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A fake gateway: for each connection, reads the request head and lets `handle` answer. */
function fakeGateway(
  handle: (conn: Deno.Conn, head: string, n: number) => Promise<void>,
): { port: number; heads: string[]; close: () => Promise<void> } {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const heads: string[] = [];
  const tasks: Promise<void>[] = [];
  const accepting = (async () => {
    let n = 0;
    for await (const conn of listener) {
      const index = n++;
      tasks.push((async () => {
        try {
          let buf = "";
          const chunk = new Uint8Array(1);
          // Byte by byte, so nothing after the head is consumed here.
          while (!buf.endsWith("\r\n\r\n")) {
            const r = await conn.read(chunk);
            if (r === null) return;
            buf += dec.decode(chunk.subarray(0, r));
          }
          heads.push(buf);
          await handle(conn, buf, index);
        } catch {
          // client went away
        } finally {
          try {
            conn.close();
          } catch {
            // closed by the handler
          }
        }
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    heads,
    close: async () => {
      listener.close();
      await accepting.catch(() => {});
      await Promise.all(tasks);
    },
  };
}

function target(port: number, over: Partial<TunnelTarget> = {}): TunnelTarget {
  return {
    scheme: "http",
    host: "127.0.0.1",
    port,
    path: "/connect/ssh",
    sandboxId: "sb-1",
    token: "tok-123",
    ...over,
  };
}

/** A reader fed by the test; `end()` makes it return EOF. */
function feed(): ByteReader & { push(b: Uint8Array): void; end(): void } {
  const queue: (Uint8Array | null)[] = [];
  let wake: (() => void) | undefined;
  return {
    push(b) {
      queue.push(b);
      wake?.();
    },
    end() {
      queue.push(null);
      wake?.();
    },
    async read(p) {
      while (queue.length === 0) await new Promise<void>((r) => wake = r);
      const next = queue.shift()!;
      if (next === null) {
        queue.unshift(null);
        return null;
      }
      p.set(next);
      return next.length;
    },
  };
}

function sink(): { write(p: Uint8Array): Promise<number>; bytes(): Uint8Array } {
  const parts: Uint8Array[] = [];
  return {
    write(p) {
      parts.push(p.slice());
      return Promise.resolve(p.length);
    },
    bytes: () => new Uint8Array(Buffer.concat(parts)),
  };
}

async function readAll(conn: Deno.Conn): Promise<string> {
  let out = "";
  const buf = new Uint8Array(4096);
  for (let n = await conn.read(buf); n !== null; n = await conn.read(buf)) {
    out += dec.decode(buf.subarray(0, n));
  }
  return out;
}

Deno.test("CONNECT request carries Host, X-Sandbox-Id and X-Sandbox-Token", async () => {
  assert.deepEqual(connectHeaders(target(8080)), {
    "Host": "127.0.0.1:8080",
    "X-Sandbox-Id": "sb-1",
    "X-Sandbox-Token": "tok-123",
  });
  assert.equal(connectHeaders(target(1, { host: "::1" })).Host, "[::1]:1");
  assert.throws(() => validateTarget(target(1, { token: "a b" })), /invalid SSH session token/);
  assert.throws(() => validateTarget(target(1, { sandboxId: "x\r\ny" })), /invalid sandbox id/);
  assert.throws(() => validateTarget(target(1, { path: "nope" })), /invalid connect path/);
  const gw = fakeGateway(async (conn) => {
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\n"));
  });
  try {
    (await openTunnel(target(gw.port))).conn.close();
    assert.match(
      gw.heads[0],
      /^CONNECT \/connect\/ssh HTTP\/1\.1\r\nHost: 127\.0\.0\.1:\d+\r\nX-Sandbox-Id: sb-1\r\nX-Sandbox-Token: tok-123\r\n/,
    );
  } finally {
    await gw.close();
  }
});

Deno.test("reply heads: bytes after the head kept; not HTTP, HTTP/2, oversized, TLS are one line", async () => {
  const replies: Record<string, Uint8Array> = {
    "tok-early": enc.encode("HTTP/1.1 200 Connection Established\r\nX-A: b\r\n\r\nSSH-2.0-x"),
    "tok-ssh": enc.encode("SSH-2.0-OpenSSH\r\n"),
    "tok-h2": enc.encode("HTTP/2 200\r\n\r\n"),
    "tok-big": enc.encode("HTTP/1.1 200 " + "x".repeat(9000)),
    "tok-tls": new Uint8Array([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32]),
  };
  const gw = fakeGateway(async (conn, head) => {
    await conn.write(replies[head.match(/X-Sandbox-Token: (\S+)/)![1]]);
  });
  try {
    const early = await openTunnel(target(gw.port, { token: "tok-early" }));
    assert.equal(dec.decode(early.early), "SSH-2.0-x");
    early.conn.close();
    const expect: [string, RegExp][] = [
      ["tok-ssh", /^CliError: the gateway did not answer with HTTP \(wrong port or scheme\?\)$/],
      ["tok-h2", /^CliError: the gateway did not answer with HTTP/],
      ["tok-big", /^CliError: the gateway sent an oversized reply$/],
      ["tok-tls", /^CliError: the gateway answered in TLS: use an https:\/\/ URL for it$/],
    ];
    for (const [token, pattern] of expect) {
      await assert.rejects(openTunnel(target(gw.port, { token })), pattern, token);
    }
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: early bytes kept, both directions pumped, half-close passed on", async () => {
  const gw = fakeGateway(async (conn) => {
    // The reply head and the first SSH bytes in one write.
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\nSSH-2.0-fake\r\n"));
    const got = await readAll(conn); // until the client half-closes
    await conn.write(enc.encode(`echo:${got}`));
  });
  try {
    const tunnel = await openTunnel(target(gw.port));
    assert.equal(dec.decode(tunnel.early), "SSH-2.0-fake\r\n");
    const input = feed();
    const output = sink();
    const pumping = pumpTunnel(tunnel, { input, output });
    input.push(enc.encode("hello "));
    input.push(enc.encode("world"));
    input.end();
    const { upstream } = await pumping;
    await upstream;
    tunnel.conn.close();
    assert.equal(dec.decode(output.bytes()), "SSH-2.0-fake\r\necho:hello world");
    assert.match(gw.heads[0], /^CONNECT \/connect\/ssh HTTP\/1\.1\r\n/);
    assert.match(gw.heads[0], /\r\nX-Sandbox-Token: tok-123\r\n/);
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: a client that stops reading ends the pump without an error", async () => {
  const gw = fakeGateway(async (conn) => {
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\nSSH-2.0-fake\r\n"));
    await readAll(conn);
  });
  try {
    const tunnel = await openTunnel(target(gw.port));
    const input = feed();
    const { upstream } = await pumpTunnel(tunnel, {
      input,
      output: { write: () => Promise.reject(new Deno.errors.BrokenPipe("gone")) },
    });
    input.end();
    await upstream;
    tunnel.conn.close();
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: 412 is retried with growing delays until 200", async () => {
  const gw = fakeGateway(async (conn, _head, n) => {
    if (n < 2) {
      await conn.write(enc.encode("HTTP/1.1 412 Precondition Failed\r\n\r\n"));
      return;
    }
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\n"));
  });
  try {
    const delays: number[] = [];
    const tunnel = await openTunnel(target(gw.port), {
      initialDelayMs: 5,
      onRetry: (d) => delays.push(d),
    });
    tunnel.conn.close();
    assert.deepEqual(delays, [5, 10]);
    assert.equal(gw.heads.length, 3);
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: 412 past the wait limit, and 401/404/429/502 fail with clear messages", async () => {
  const statuses: Record<string, string> = {
    "tok-412": "412 Precondition Failed",
    "tok-401": "401 Unauthorized",
    "tok-404": "404 Not Found",
    "tok-429": "429 Too Many Requests",
    "tok-502": "502 Bad Gateway",
  };
  const gw = fakeGateway(async (conn, head) => {
    const token = head.match(/X-Sandbox-Token: (\S+)/)![1];
    await conn.write(enc.encode(`HTTP/1.1 ${statuses[token]}\r\n\r\n`));
  });
  try {
    const expect: [string, RegExp][] = [
      ["tok-412", /did not become ready in time/],
      ["tok-401", /refused the SSH session token/],
      ["tok-404", /sandbox does not exist/],
      ["tok-429", /too many SSH connections/],
      ["tok-502", /could not reach the sandbox/],
    ];
    for (const [token, pattern] of expect) {
      await assert.rejects(
        openTunnel(target(gw.port, { token }), { initialDelayMs: 5, maxWaitMs: 30 }),
        (e) => e instanceof CliError && pattern.test(e.message),
      );
    }
    assert.equal(gw.heads.filter((h) => h.includes("tok-412")).length > 1, true, "412 retried");
  } finally {
    await gw.close();
  }
  assert.match(connectFailureMessage(418, "teapot"), /HTTP 418 \(teapot\)/);
});

Deno.test("tunnel: refused connection and a closed connection are clear errors", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  await assert.rejects(
    openTunnel(target(port)),
    /^CliError: cannot reach the gateway at http:\/\/127\.0\.0\.1:\d+: connection refused$/,
  );
  const gw = fakeGateway(() => Promise.resolve());
  try {
    await assert.rejects(openTunnel(target(gw.port)), /closed the connection before answering/);
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel: the host key is checked on the way; a mismatch stops the stream", async () => {
  const t = JSON.parse(
    await Deno.readTextFile(new URL("./testdata/kex_transcripts.json", import.meta.url)),
  )[0];
  const server = new Uint8Array(Buffer.from(t.server_to_client, "base64"));
  const gw = fakeGateway(async (conn) => {
    await conn.write(enc.encode("HTTP/1.1 200 OK\r\n\r\n"));
    for (let i = 0; i < server.length; i += 100) await conn.write(server.subarray(i, i + 100));
  });
  try {
    const good = await openTunnel(target(gw.port));
    const input = feed();
    const out = sink();
    const verifier = new HostKeyVerifier(fingerprintOfPublicKey(t.host_key));
    const { upstream } = await pumpTunnel(good, { input, output: out, verifier });
    input.end();
    await upstream;
    good.conn.close();
    assert.deepEqual(out.bytes(), server);

    const bad = await openTunnel(target(gw.port));
    const input2 = feed();
    const out2 = sink();
    await assert.rejects(
      pumpTunnel(bad, {
        input: input2,
        output: out2,
        verifier: new HostKeyVerifier("SHA256:9TuMax+jc70j8hFvcAg2gDcUJChX4iU37tYGbqOAyyQ"),
      }),
      HostKeyMismatchError,
    );
    input2.end();
    assert.ok(out2.bytes().length < 1500, "the reply and what follows never reached the client");
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel target: a loopback or unspecified gateway_host means the CLI's endpoint", () => {
  const session = {
    sandbox_id: "sb-1",
    token: "t",
    gateway_host: "0.0.0.0",
    gateway_port: 8080,
    gateway_scheme: "http",
    connect_path: "",
    host_key_fingerprint: "",
    expires_at_ms: 0,
  };
  const endpoint = parseGatewayUrl("http://10.1.2.3:9000");
  assert.deepEqual(tunnelTargetOf(session, endpoint), {
    scheme: "http",
    host: "10.1.2.3",
    port: 9000,
    path: "/connect/ssh",
    sandboxId: "sb-1",
    token: "t",
  });
  const remote = tunnelTargetOf(
    { ...session, gateway_host: "gw.example", gateway_scheme: "https", connect_path: "/c" },
    endpoint,
  );
  assert.deepEqual([remote.scheme, remote.host, remote.port, remote.path], [
    "https",
    "gw.example",
    8080,
    "/c",
  ]);
});

const CA = await createCa();
const OTHER_CA = await createCa({ commonName: "another gateway CA" });
const SERVER = await issueCertificate(CA, {
  kind: "server",
  commonName: "gw",
  names: ["127.0.0.1", "localhost"],
});
const CLIENT = await issueCertificate(CA, { kind: "client", commonName: "op" });
const FOREIGN = await issueCertificate(OTHER_CA, { kind: "client", commonName: "op" });

/**
 * A TLS gateway like the real listener (client certificates from `CA`
 * required): answers the CONNECT head with 200 and echoes what follows.
 */
async function tlsGateway(): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<tls.TLSSocket>();
  const server = tls.createServer({
    cert: SERVER.cert,
    key: SERVER.key,
    ca: CA.cert,
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ["http/1.1"],
  }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    let head = "";
    const onData = (d: Buffer) => {
      head += d.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.removeListener("data", onData);
      socket.write("HTTP/1.1 200 OK\r\n\r\n" + head.slice(end + 4));
      socket.on("data", (more: Buffer) => socket.write(more));
      socket.on("end", () => socket.end());
    };
    socket.on("data", onData);
  });
  server.on("tlsClientError", () => {});
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

function tlsTarget(port: number, over: Partial<TunnelTarget> = {}): TunnelTarget {
  return target(port, {
    scheme: "https",
    tls: { ca: enc.encode(CA.cert), cert: enc.encode(CLIENT.cert), key: enc.encode(CLIENT.key) },
    gatewayName: "gw",
    ...over,
  });
}

Deno.test("tunnel over TLS: the bundle's CA and client certificate, an IP host, half-close", async () => {
  const gw = await tlsGateway();
  try {
    const tunnel = await openTunnel(tlsTarget(gw.port));
    const input = feed();
    const output = sink();
    const pumped = pumpTunnel(tunnel, { input, output });
    input.push(enc.encode("ping over TLS"));
    input.end();
    const result = await pumped;
    await result.upstream;
    tunnel.conn.close();
    assert.equal(dec.decode(output.bytes()), "ping over TLS");
  } finally {
    await gw.close();
  }
});

Deno.test("tunnel over TLS: every failure is one line saying what to do", async () => {
  const gw = await tlsGateway();
  const url = `https://127.0.0.1:${gw.port}`;
  const fix = `openshell gateway add gw ${url} --mtls-dir DIR --force, DIR being the gateway's ` +
    "<state-dir>/pki)";
  const refused = new RegExp(
    `^CliError: the gateway at ${url} closed the TLS connection: it may not accept this ` +
      `client's certificate \\(import the gateway's current client bundle: ` +
      `${fix.replace(/[.()/]/g, "\\$&")}$`,
  );
  try {
    const noCert = tlsTarget(gw.port, { tls: { ca: enc.encode(CA.cert) } });
    await assert.rejects(
      openTunnel(noCert),
      /^CliError: the gateway at \S+ closed the TLS connection: it may require a client certificate, and none is configured \(import the gateway's client bundle: openshell gateway add gw \S+ --mtls-dir DIR --force, DIR being the gateway's <state-dir>\/pki\)$/,
    );
    const foreign = tlsTarget(gw.port, {
      tls: {
        ca: enc.encode(CA.cert),
        cert: enc.encode(FOREIGN.cert),
        key: enc.encode(FOREIGN.key),
      },
    });
    await assert.rejects(openTunnel(foreign), refused);
    const wrongTrust = tlsTarget(gw.port, {
      tls: {
        ca: enc.encode(OTHER_CA.cert),
        cert: enc.encode(CLIENT.cert),
        key: enc.encode(CLIENT.key),
      },
    });
    await assert.rejects(
      openTunnel(wrongTrust),
      new RegExp(
        `^CliError: the gateway at ${url.replace(/[.]/g, "\\.")} presented a certificate ` +
          "that the trusted CA did not sign \\(import",
      ),
    );
    await assert.rejects(
      openTunnel(target(gw.port)),
      /^CliError: the gateway answered in TLS: use an https:\/\/ URL for it$/,
    );
  } finally {
    await gw.close();
  }
  // https:// to a plaintext server (it answers the ClientHello with an HTTP error).
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const answering = (async () => {
    for await (const conn of listener) {
      await conn.read(new Uint8Array(4096)).catch(() => null);
      await conn.write(enc.encode("HTTP/1.1 400 Bad Request\r\n\r\n")).catch(() => 0);
      conn.close();
    }
  })();
  try {
    const port = (listener.addr as Deno.NetAddr).port;
    await assert.rejects(
      openTunnel(tlsTarget(port)),
      new RegExp(
        `^CliError: the gateway at https://127\\.0\\.0\\.1:${port} does not speak TLS ` +
          "\\(use an http:// URL for a plaintext gateway\\)$",
      ),
    );
  } finally {
    listener.close();
    await answering.catch(() => {});
  }
});
