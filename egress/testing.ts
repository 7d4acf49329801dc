/**
 * Test helpers for the egress proxy: an in-process proxy in a temp dir with
 * a resolver the test decides, a guest connection as the VM driver opens
 * one, a control client, and byte-level readers.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Logger } from "../core/log.ts";
import {
  type EgressEvent,
  EgressProxyClient,
  type SandboxPolicy,
  unaryCall,
  type UnaryMethod,
  type Wire,
} from "../core/protocol.ts";
import { type Egress, type EgressOptions, startEgress } from "./server.ts";
import { ResolveError } from "./resolve.ts";

/** A resolver from a fixed table: unknown names fail like NXDOMAIN. */
export function tableResolver(
  table: Record<string, string[]>,
): (host: string, family: 0 | 4 | 6) => Promise<string[]> {
  return (host, family) => {
    const all = table[host];
    if (!all) return Promise.reject(new ResolveError(`cannot resolve ${host} (ENOTFOUND)`));
    const v4 = (a: string) => /^[0-9.]+$/.test(a);
    return Promise.resolve(
      all.filter((a) => family === 0 || (family === 4 ? v4(a) : !v4(a))),
    );
  };
}

/** An in-process egress proxy, its temp dir and its log lines. */
export interface TestEgress extends Egress {
  dir: string;
  lines: string[];
  client: EgressProxyClient;
  /** ApplyPolicy over the control socket. */
  apply(sandboxId: string, version: number, policy: Wire<SandboxPolicy>): Promise<unknown>;
  /** A unary call of {@link client}, e.g. `eg.call(eg.client.RemoveSandbox, {...})`. */
  call<Req, Res>(method: UnaryMethod<Req, Res>, req: NoInfer<Req>): Promise<Res>;
  /** Stops everything and removes the dir. */
  stop(): Promise<void>;
}

/** Starts a proxy with `options` (state dir and log filled in). */
export async function startTestEgress(
  options: Partial<EgressOptions> = {},
): Promise<TestEgress> {
  const dir = await Deno.makeTempDir({ prefix: "oseg" });
  const lines: string[] = [];
  const log = new Logger({ level: "debug", sink: (l) => lines.push(l) });
  const egress = await startEgress({
    stateDir: `${dir}/state`,
    log,
    resolve: tableResolver({}),
    ...options,
  });
  const client = new EgressProxyClient(
    `unix:${egress.controlSocket}`,
    grpc.credentials.createInsecure(),
  );
  return {
    ...egress,
    dir,
    lines,
    client,
    call: (method, req) => unaryCall(client, method, req),
    apply: (sandbox_id, version, policy) =>
      unaryCall(client, client.ApplyPolicy, { sandbox_id, version, policy }),
    async stop() {
      client.close();
      await egress.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Events of a WatchEvents stream, as they arrive. */
export interface EventWatch {
  events: EgressEvent[];
  /** Resolves with the first event (already seen or future) matching `pred`. */
  next(pred: (e: EgressEvent) => boolean, what?: string): Promise<EgressEvent>;
  close(): void;
}

/** Opens WatchEvents; resolves once the proxy has the watch in place. */
export async function watchEvents(client: EgressProxyClient): Promise<EventWatch> {
  const stream = client.WatchEvents({});
  const events: EgressEvent[] = [];
  const waiters: { pred: (e: EgressEvent) => boolean; resolve: (e: EgressEvent) => void }[] = [];
  stream.on("data", (e: EgressEvent) => {
    events.push(e);
    for (const w of [...waiters]) {
      if (w.pred(e)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(e);
      }
    }
  });
  stream.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    stream.once("metadata", () => resolve());
    stream.once("error", reject);
  });
  return {
    events,
    next(pred, what = "an event") {
      const seen = events.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ${what} within 10 s`)), 10_000);
        waiters.push({
          pred,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
    close: () => stream.cancel(),
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** A guest connection as the VM driver opens it: header line first (unless `header` is given). */
export async function openGuest(
  path: string,
  sandboxId: string,
  kind: "http" | "dns",
  header?: string,
): Promise<Deno.UnixConn> {
  const conn = await Deno.connect({ transport: "unix", path });
  await writeAll(conn, header ?? `OPENSHELL-EGRESS/1 ${sandboxId} ${kind}\n`);
  return conn;
}

/** Writes all of `data`. */
export async function writeAll(conn: Deno.Conn, data: string | Uint8Array): Promise<void> {
  let bytes = typeof data === "string" ? enc.encode(data) : data;
  while (bytes.length) bytes = bytes.subarray(await conn.write(bytes));
}

/** Reads until EOF (or `max` bytes); the connection stays open. */
export async function readToEnd(conn: Deno.Conn, max = 64 * 1024 * 1024): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  while (total < max) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break; // reset: what came is what there is
    }
    if (n === null) break;
    parts.push(buf.slice(0, n));
    total += n;
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Reads an HTTP response head (through the blank line); the rest read stays in `rest`. */
export async function readHead(
  conn: Deno.Conn,
): Promise<{ head: string; status: number; rest: Uint8Array }> {
  let data = new Uint8Array(0);
  const buf = new Uint8Array(16 * 1024);
  for (let i = 0; i < 1000; i++) {
    const end = indexOfSeq(data, enc.encode("\r\n\r\n"));
    if (end >= 0) {
      const head = dec.decode(data.subarray(0, end));
      return { head, status: Number(head.split(" ")[1]), rest: data.subarray(end + 4) };
    }
    const n = await conn.read(buf);
    if (n === null) {
      throw new Error(`connection closed before a response head: ${dec.decode(data)}`);
    }
    const next = new Uint8Array(data.length + n);
    next.set(data);
    next.set(buf.subarray(0, n), data.length);
    data = next;
  }
  throw new Error("no response head");
}

function dechunk(data: Uint8Array): Uint8Array {
  const parts: Uint8Array[] = [];
  let at = 0;
  while (at < data.length) {
    const eol = indexOfSeq(data.subarray(at), enc.encode("\r\n"));
    if (eol < 0) break;
    const size = parseInt(dec.decode(data.subarray(at, at + eol)), 16);
    at += eol + 2;
    if (!size) break;
    parts.push(data.subarray(at, at + size));
    at += size + 2;
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Reads one whole HTTP/1.1 response (Content-Length, chunked, or until EOF). */
export async function readResponse(
  conn: Deno.Conn,
): Promise<{ status: number; head: string; body: string }> {
  const { head, status, rest } = await readHead(conn);
  const m = /\r\ncontent-length: *(\d+)/i.exec(head);
  const want = m ? Number(m[1]) : -1;
  let body = rest;
  if (want < 0) {
    const more = await readToEnd(conn);
    let all: Uint8Array = new Uint8Array(body.length + more.length);
    all.set(body);
    all.set(more, body.length);
    if (/\r\ntransfer-encoding: *chunked/i.test(head)) all = dechunk(all);
    return { status, head, body: dec.decode(all) };
  }
  const buf = new Uint8Array(64 * 1024);
  while (body.length < want) {
    const n = await conn.read(buf);
    if (n === null) break;
    const next = new Uint8Array(body.length + n);
    next.set(body);
    next.set(buf.subarray(0, n), body.length);
    body = next;
  }
  return { status, head, body: dec.decode(body.subarray(0, want)) };
}

/** Whether the peer closed the connection (EOF or reset) rather than sending data. */
export async function closedByPeer(conn: Deno.Conn): Promise<boolean> {
  try {
    return (await conn.read(new Uint8Array(1024))) === null;
  } catch {
    return true;
  }
}

function indexOfSeq(hay: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
