/**
 * Test-only `ProxyCommand` for OpenSSH: joins ssh's stdin/stdout to a
 * sandbox's sshd, either through the gateway's `CONNECT` endpoint or
 * straight to a Unix socket.
 *
 *     connect_proxy.ts connect HOST PORT PATH SANDBOX_ID TOKEN
 *     connect_proxy.ts unix SOCKET_PATH
 *
 * Run it with only the grant it needs (`--allow-net=HOST:PORT`, or read +
 * write + `net=unix:SOCKET_PATH`). Exits 0 when the far side ends, 1 on a
 * refused tunnel (the status line goes to stderr).
 *
 * @module
 */

const encoder = new TextEncoder();
const decoder = new TextDecoder();

async function writeAll(w: { write(p: Uint8Array): Promise<number> }, data: Uint8Array) {
  let off = 0;
  while (off < data.length) off += await w.write(data.subarray(off));
}

async function tunnel(args: string[]): Promise<{ conn: Deno.Conn; rest: Uint8Array }> {
  const [host, port, path, sandboxId, token] = args;
  const conn = await Deno.connect({ hostname: host, port: Number(port) });
  await writeAll(
    conn,
    encoder.encode(
      `CONNECT ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n` +
        `x-sandbox-id: ${sandboxId}\r\nx-sandbox-token: ${token}\r\n\r\n`,
    ),
  );
  let head = new Uint8Array(0);
  const buf = new Uint8Array(4096);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) throw new Error("gateway closed the connection before answering");
    const next = new Uint8Array(head.length + n);
    next.set(head);
    next.set(buf.subarray(0, n), head.length);
    head = next;
    const end = decoder.decode(head).indexOf("\r\n\r\n");
    if (end < 0) continue;
    const headerBytes = encoder.encode(decoder.decode(head).slice(0, end + 4)).length;
    const statusLine = decoder.decode(head).split("\r\n")[0];
    if (!/^HTTP\/1\.[01] 200\b/.test(statusLine)) {
      conn.close();
      throw new Error(`gateway refused the tunnel: ${statusLine}`);
    }
    return { conn, rest: head.subarray(headerBytes) };
  }
}

async function main(args: string[]): Promise<number> {
  let conn: Deno.Conn;
  let rest: Uint8Array = new Uint8Array(0);
  try {
    if (args[0] === "connect" && args.length === 6) {
      ({ conn, rest } = await tunnel(args.slice(1)));
    } else if (args[0] === "unix" && args.length === 2) {
      conn = await Deno.connect({ transport: "unix", path: args[1] });
    } else {
      console.error("usage: connect_proxy.ts connect HOST PORT PATH SANDBOX_ID TOKEN | unix PATH");
      return 2;
    }
  } catch (err) {
    console.error(`proxy: ${err instanceof Error ? err.message : err}`);
    return 1;
  }
  if (rest.length) await writeAll(Deno.stdout, rest);
  (async () => {
    try {
      for await (const chunk of Deno.stdin.readable) await writeAll(conn, chunk);
      await conn.closeWrite();
    } catch {
      // the tunnel is gone; the reader below ends too
    }
  })();
  const buf = new Uint8Array(64 * 1024);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      await writeAll(Deno.stdout, buf.subarray(0, n));
    }
  } catch {
    return 1;
  }
  return 0;
}

Deno.exit(await main(Deno.args));
