/**
 * One guest connection's way out: the decision (policy, resolution, SSRF
 * rules, event) and the dial to a vetted address, shared by the CONNECT
 * tunnel and the forward proxy.
 *
 * The proxy connects to the address it vetted, never to the name again, so
 * a name that resolves differently a moment later (DNS rebinding) cannot
 * move the connection.
 *
 * @module
 */
import net, { isIP } from "node:net";
import {
  type AddressDecision,
  decide,
  decideAddresses,
  hostPatternError,
  normalizeHost,
} from "../core/policy.ts";
import type { Logger } from "../core/log.ts";
import type { EventHub } from "./events.ts";
import type { PolicyTable } from "./policies.ts";
import type { HostAddresses, Resolver } from "./resolve.ts";

/** How long one dial may take before the next address is tried. */
export const CONNECT_TIMEOUT_MS = 10_000;

/** What the proxy's handlers share. */
export interface ProxyContext {
  policies: PolicyTable;
  events: EventHub;
  resolve: Resolver;
  hostAddrs: HostAddresses;
  log: Logger;
  /** Per-dial timeout; default {@link CONNECT_TIMEOUT_MS}. */
  connectTimeoutMs?: number;
  /** A connection quiet both ways this long is closed; default 300 s. */
  idleMs?: number;
}

/** The outcome of {@link authorize}. */
export type Authorization =
  | (AddressDecision & { decision: "allowed" | "audit" })
  | { decision: "denied"; reason: string; rule?: string }
  | { decision: "error"; reason: string };

/** Whether `host` is something a guest may name: a host name or an IP literal. */
export function validTarget(host: string): boolean {
  if (host.length === 0 || host.length > 253) return false;
  const h = normalizeHost(host);
  if (h.includes("*")) return false;
  return hostPatternError(h) === undefined;
}

/** Decides `(host, port)` for a sandbox, resolving the name, and publishes the event. */
export async function authorize(
  ctx: ProxyContext,
  o: { sandboxId: string; host: string; port: number; via: "connect" | "http" },
): Promise<Authorization> {
  const host = normalizeHost(o.host);
  const event = (
    decision: "allowed" | "denied" | "audit",
    extra: { rule?: string; reason?: string; ip?: string },
  ) =>
    ctx.events.publish({
      sandboxId: o.sandboxId,
      decision,
      host,
      port: o.port,
      via: o.via,
      ...extra,
    });
  const first = ctx.policies.get(o.sandboxId);
  if (!first) {
    const reason = "no policy is loaded for this sandbox";
    event("denied", { reason });
    return { decision: "denied", reason };
  }
  // No name resolution for what no rule names: a denied name never reaches DNS.
  if (decide(first.policy, host, o.port).decision === "denied") {
    const reason = "no rule allows this host and port";
    event("denied", { reason });
    return { decision: "denied", reason };
  }
  let addresses: string[];
  try {
    addresses = isIP(host) ? [host] : await ctx.resolve(host, 0);
  } catch (err) {
    const reason = (err as Error).message;
    ctx.log.debug("resolution failed", { sandbox_id: o.sandboxId, host, error: reason });
    return { decision: "error", reason };
  }
  // The policy may have changed while the name resolved: the newest one decides.
  const now = ctx.policies.get(o.sandboxId);
  if (!now) {
    const reason = "no policy is loaded for this sandbox";
    event("denied", { reason });
    return { decision: "denied", reason };
  }
  const d = decideAddresses({
    policy: now.policy,
    host,
    port: o.port,
    addresses,
    hostAddrs: ctx.hostAddrs(),
  });
  if (d.decision === "denied") {
    const reason = d.reason ?? "denied";
    event("denied", { rule: d.rule, reason });
    return { decision: "denied", reason, rule: d.rule };
  }
  event(d.decision, { rule: d.rule, reason: d.reason, ip: d.addresses[0] });
  return d as Authorization;
}

/**
 * Connects to the first of `addresses` that answers (each within the
 * timeout); rejects with the last error when none does.
 */
export async function dial(
  addresses: readonly string[],
  port: number,
  timeoutMs = CONNECT_TIMEOUT_MS,
): Promise<net.Socket> {
  let last: Error = new Error("no address to connect to");
  for (const host of addresses) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host, port, allowHalfOpen: true });
        const timer = setTimeout(() => {
          s.destroy();
          reject(new Error(`connecting to ${host}:${port} timed out`));
        }, timeoutMs);
        s.once("connect", () => {
          clearTimeout(timer);
          s.removeAllListeners("error");
          resolve(s);
        });
        s.once("error", (err) => {
          clearTimeout(timer);
          s.destroy();
          reject(err);
        });
      });
    } catch (err) {
      last = err as Error;
    }
  }
  throw last;
}
