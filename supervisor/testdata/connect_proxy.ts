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

import http from "node:http";
import net from "node:net";
import { once } from "node:events";
import { writeAll } from "../../core/io.ts";

/** Sends the CONNECT through node:http's client; the socket after a 200, with the bytes that came along. */
function tunnel(args: string[]): Promise<{ socket: net.Socket; rest: Uint8Array }> {
  const [host, port, path, sandboxId, token] = args;
  return new Promise((resolve, reject) => {
    const req = http.request({
      method: "CONNECT",
      path,
      headers: { Host: `${host}:${port}`, "x-sandbox-id": sandboxId, "x-sandbox-token": token },
      createConnection: () => net.connect({ host, port: Number(port), allowHalfOpen: true }),
    });
    req.once("connect", (res: http.IncomingMessage, socket: net.Socket, rest: Uint8Array) => {
      if (res.statusCode === 200) return resolve({ socket, rest });
      socket.destroy();
      reject(
        new Error(
          `gateway refused the tunnel: HTTP/${res.httpVersion} ${res.statusCode} ${res.statusMessage}`,
        ),
      );
    });
    req.once("error", reject);
    req.end();
  });
}

function connectUnix(path: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path, allowHalfOpen: true });
    socket.once("error", reject);
    socket.once("connect", () => {
      socket.removeListener("error", reject);
      resolve(socket);
    });
  });
}

async function main(args: string[]): Promise<number> {
  let socket: net.Socket;
  let rest: Uint8Array = new Uint8Array(0);
  try {
    if (args[0] === "connect" && args.length === 6) {
      ({ socket, rest } = await tunnel(args.slice(1)));
    } else if (args[0] === "unix" && args.length === 2) {
      socket = await connectUnix(args[1]);
    } else {
      console.error("usage: connect_proxy.ts connect HOST PORT PATH SANDBOX_ID TOKEN | unix PATH");
      return 2;
    }
  } catch (err) {
    console.error(`proxy: ${err instanceof Error ? err.message : err}`);
    return 1;
  }
  socket.on("error", () => {}); // the reader below ends (or throws) too
  if (rest.length) await writeAll(Deno.stdout, rest);
  (async () => {
    try {
      for await (const chunk of Deno.stdin.readable) {
        if (!socket.write(chunk)) await once(socket, "drain");
      }
      socket.end();
    } catch {
      // the tunnel is gone; the reader below ends too
    }
  })();
  try {
    for await (const chunk of socket) await writeAll(Deno.stdout, chunk);
  } catch {
    return 1;
  }
  return 0;
}

Deno.exit(await main(Deno.args));
