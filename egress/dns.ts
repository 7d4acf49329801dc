/**
 * The guest's resolver: DNS over TCP (RFC 1035 §4.2.2, a two-byte length
 * before each message; the guest's resolv.conf says `options use-vc`).
 *
 * - A/AAAA for a name some rule of the sandbox names (any port): the
 *   addresses the proxy resolves, after the SSRF filter (so a guest never
 *   learns an address it could not reach anyway); none left, or a name that
 *   does not resolve: an empty NOERROR answer.
 * - Other types for such a name: an empty NOERROR answer.
 * - Every other name (and every name of a sandbox without a policy): NXDOMAIN.
 * - Malformed: FORMERR when the header can be read, else the connection
 *   closes; not a query (QR set), or longer than {@link MAX_DNS_MESSAGE}:
 *   the connection closes.
 *
 * Messages are parsed with the npm `dns-packet` library (compression loops,
 * truncation and overlong names are its errors).
 *
 * @module
 */
import dnsPacketModule from "dns-packet";
import type net from "node:net";
import { Buffer } from "node:buffer";
import { dnsAddresses, hostAllowed, normalizeHost } from "../core/policy.ts";
import { errorMessage } from "../core/log.ts";
import { type ProxyContext, validTarget } from "./authorize.ts";
import { ResolveError } from "./resolve.ts";

/** Longest query accepted (a question plus EDNS options fit easily). */
export const MAX_DNS_MESSAGE = 1024;
/** Most unanswered bytes held per connection. */
export const MAX_DNS_BUFFER = 16 * 1024;
/** TTL of the answers (short: policies change live). */
export const ANSWER_TTL_SECS = 30;

/** DNS response codes used here. */
export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
} as const;

interface Question {
  name: string;
  type: string;
  class: string;
}

interface Answer {
  name: string;
  type: string;
  class: string;
  ttl: number;
  data: string;
}

interface Packet {
  id: number;
  type: "query" | "response";
  flags: number;
  opcode: string;
  questions: Question[];
  answers?: Answer[];
}

const dnsPacket = dnsPacketModule as unknown as {
  decode(buf: Buffer): Packet;
  encode(packet: Partial<Packet> & { answers?: Answer[] }): Buffer;
  RECURSION_DESIRED: number;
  RECURSION_AVAILABLE: number;
};

const QR = 0x8000;
const OPCODE_MASK = 0x7800;
const RD = 0x0100;
const RA = 0x0080;

function header(id: number, flags: number): Uint8Array {
  const h = new Uint8Array(12);
  h[0] = id >> 8;
  h[1] = id & 255;
  h[2] = flags >> 8;
  h[3] = flags & 255;
  return h;
}

/** What answering a query needs. */
export type DnsContext = Pick<ProxyContext, "policies" | "resolve" | "hostAddrs" | "log">;

/**
 * The response to one DNS message from a sandbox, or undefined when the
 * connection should close (unreadable header, a response instead of a
 * query).
 */
export async function answerQuery(
  ctx: DnsContext,
  sandboxId: string,
  message: Uint8Array,
): Promise<Uint8Array | undefined> {
  if (message.length < 12 || message.length > MAX_DNS_MESSAGE) return undefined;
  const id = (message[0] << 8) | message[1];
  const flags = (message[2] << 8) | message[3];
  if (flags & QR) return undefined;
  const keep = flags & (OPCODE_MASK | RD);
  if ((flags & OPCODE_MASK) !== 0) return header(id, QR | keep | RA | Rcode.NOTIMP);
  let q: Packet;
  try {
    q = dnsPacket.decode(Buffer.from(message));
  } catch {
    return header(id, QR | keep | RA | Rcode.FORMERR);
  }
  if (q.questions.length !== 1) return header(id, QR | keep | RA | Rcode.FORMERR);
  const question = q.questions[0];
  const respond = (rcode: number, answers: Answer[] = []) =>
    new Uint8Array(dnsPacket.encode({
      type: "response",
      id,
      flags: keep | RA | rcode,
      questions: [question],
      answers,
    }));
  if (question.class !== "IN") return respond(Rcode.REFUSED);
  const name = normalizeHost(question.name);
  const applied = ctx.policies.get(sandboxId);
  if (!applied || !validTarget(name) || !hostAllowed(applied.policy, name)) {
    ctx.log.debug("dns: not allowed", { sandbox_id: sandboxId, name, type: question.type });
    return respond(Rcode.NXDOMAIN);
  }
  if (question.type !== "A" && question.type !== "AAAA") return respond(Rcode.NOERROR);
  let found: string[];
  try {
    found = await ctx.resolve(name, question.type === "A" ? 4 : 6);
  } catch (err) {
    ctx.log.debug("dns: resolution failed", {
      sandbox_id: sandboxId,
      name,
      error: errorMessage(err),
    });
    return respond(err instanceof ResolveError && err.timedOut ? Rcode.SERVFAIL : Rcode.NOERROR);
  }
  // The policy may have changed meanwhile: the newest one filters.
  const now = ctx.policies.get(sandboxId);
  if (!now) return respond(Rcode.NXDOMAIN);
  const family = question.type === "A" ? /^[0-9.]+$/ : /:/;
  const vetted = dnsAddresses(now.policy, name, found, ctx.hostAddrs())
    .filter((a) => family.test(a));
  return respond(
    Rcode.NOERROR,
    vetted.map((data) => ({
      name: question.name,
      type: question.type,
      class: "IN",
      ttl: ANSWER_TTL_SECS,
      data,
    })),
  );
}

/**
 * Serves DNS over TCP on one guest connection: one message at a time (the
 * socket pauses while a name resolves), at most {@link MAX_DNS_MESSAGE}
 * bytes each.
 */
export function serveDns(
  ctx: DnsContext,
  socket: net.Socket,
  sandboxId: string,
  first: Uint8Array = new Uint8Array(0),
): void {
  let buffered = first;
  let busy = false;
  const pump = async () => {
    if (busy) return;
    busy = true;
    try {
      while (!socket.destroyed && buffered.length >= 2) {
        const len = (buffered[0] << 8) | buffered[1];
        if (len === 0 || len > MAX_DNS_MESSAGE) return void socket.destroy();
        if (buffered.length < 2 + len) break;
        const message = buffered.slice(2, 2 + len);
        buffered = buffered.slice(2 + len);
        socket.pause();
        const reply = await answerQuery(ctx, sandboxId, message);
        if (!reply) return void socket.destroy();
        if (socket.destroyed) return;
        const framed = new Uint8Array(2 + reply.length);
        framed[0] = reply.length >> 8;
        framed[1] = reply.length & 255;
        framed.set(reply, 2);
        socket.write(framed);
        socket.resume();
      }
    } catch (err) {
      ctx.log.warn("dns: failed", { sandbox_id: sandboxId, error: errorMessage(err) });
      socket.destroy();
    } finally {
      busy = false;
    }
  };
  socket.on("data", (chunk: Uint8Array) => {
    // A guest pipelining faster than it reads gets cut off past this.
    if (buffered.length + chunk.length > MAX_DNS_BUFFER) return void socket.destroy();
    const next = new Uint8Array(buffered.length + chunk.length);
    next.set(buffered);
    next.set(chunk, buffered.length);
    buffered = next;
    pump();
  });
  socket.on("end", () => socket.end());
  socket.on("error", () => socket.destroy());
  if (buffered.length) pump();
}
