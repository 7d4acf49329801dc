/**
 * Egress network policy: pure code shared by the gateway (validation,
 * hashing), the CLI (validation before sending) and the egress proxy
 * (decisions).
 *
 * The model (`openshell.sandbox.v1.SandboxPolicy`, only `network_policies`
 * is honoured):
 *
 * - No policy, or no rules: every connection is denied.
 * - A connection to `(host, port)` is allowed when some rule has an endpoint
 *   whose host pattern matches (exact, case-insensitive, trailing dot
 *   ignored; `*.example.com` = exactly one more label, `**.example.com` = one
 *   or more labels; an IP literal matches only that IP, and globs never match
 *   IP literals) and whose `port` or `ports` contain the port.
 * - After the proxy resolves the name, each address is vetted
 *   ({@link checkAddress}): loopback, link-local, unspecified, multicast,
 *   broadcast/reserved and the host's own addresses are always refused;
 *   private ranges only when inside the endpoint's `allowed_ips`; when
 *   `allowed_ips` is set every address must lie inside it.
 * - `enforcement: "audit"` endpoints allow what the enforced rules would
 *   deny (host/port not covered by an enforce endpoint, or an address their
 *   `allowed_ips`/private-range check refuses) and report it as decision
 *   `audit`; the always-denied addresses stay denied.
 *
 * @module
 */
import { BlockList, isIP } from "node:net";
import { createHash } from "node:crypto";
import protobuf from "protobufjs";
import { OPENSHELL_DESCRIPTOR } from "../proto/descriptors.ts";
import type * as proto from "./protocol.ts";
import type { Wire } from "./protocol.ts";

// ---- types ------------------------------------------------------------------

// The policy messages are generated (proto/types.ts); the functions here take
// them as decoded or as built by hand, where any field may be left out.

/** `openshell.sandbox.v1.SandboxPolicy`, any field left out. */
type SandboxPolicy = Wire<proto.SandboxPolicy>;
/** `openshell.sandbox.v1.NetworkEndpoint`, any field left out. */
type NetworkEndpoint = Wire<proto.NetworkEndpoint>;

// ---- caps -------------------------------------------------------------------

/** Most rules in one policy. */
export const MAX_RULES = 256;
/** Most endpoints in one rule. */
export const MAX_ENDPOINTS = 256;
/** Most `ports` entries in one endpoint. */
export const MAX_PORTS = 64;
/** Most `allowed_ips` entries in one endpoint. */
export const MAX_ALLOWED_IPS = 64;
/** Longest rule name (map key or `name`). */
export const MAX_NAME_CHARS = 128;
/** Longest host name (RFC 1035). */
export const MAX_HOST_CHARS = 253;
/** Most messages {@link validatePolicy} returns (the last one says how many more). */
export const MAX_ERRORS = 50;

// ---- validation -------------------------------------------------------------

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

function isEmpty(value: unknown): boolean {
  if (value === undefined || value === null || value === "" || value === 0 || value === false) {
    return true;
  }
  if (Array.isArray(value)) return value.length === 0;
  if (value instanceof Uint8Array) return value.length === 0;
  if (typeof value === "object") return Object.values(value).every(isEmpty);
  return false;
}

/** Strips brackets from an IPv6 literal and a trailing dot; lower-cases. */
export function normalizeHost(host: string): string {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".") && !isIP(h)) h = h.slice(0, -1);
  return h;
}

/** Why `pattern` is not a valid endpoint host, or undefined when it is. */
export function hostPatternError(pattern: string): string | undefined {
  if (typeof pattern !== "string" || pattern.trim() === "") return "host is empty";
  if (pattern.length > MAX_HOST_CHARS) return `host is longer than ${MAX_HOST_CHARS} characters`;
  const h = normalizeHost(pattern);
  if (h.includes("%")) return `"${pattern}" has an IPv6 zone; use a plain address`;
  if (isIP(h)) return undefined;
  if (h === "*" || h === "**") {
    return `"${pattern}" matches every host; name the hosts (e.g. *.example.com)`;
  }
  const labels = h.split(".");
  const rest = labels[0] === "*" || labels[0] === "**" ? labels.slice(1) : labels;
  for (const label of rest) {
    if (label.includes("*")) {
      return `"${pattern}": a wildcard may only be the whole first label (*.example.com or **.example.com)`;
    }
    if (label === "") return `"${pattern}" has an empty label`;
    if (!LABEL.test(label)) {
      return `"${pattern}" has an invalid label "${label}" (letters, digits, - and _; at most 63)`;
    }
  }
  return undefined;
}

/** Why `cidr` is not a valid `allowed_ips` entry (`10.0.0.0/8`, `fd00::/8`, `10.1.2.3`), or undefined. */
export function cidrError(cidr: string): string | undefined {
  if (typeof cidr !== "string" || cidr === "") return "empty CIDR";
  const parsed = parseCidr(cidr);
  return parsed ? undefined : `"${cidr}" is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)`;
}

interface Cidr {
  address: string;
  prefix: number;
  family: "ipv4" | "ipv6";
}

function parseCidr(cidr: string): Cidr | undefined {
  const slash = cidr.indexOf("/");
  const addr = slash < 0 ? cidr : cidr.slice(0, slash);
  const v = isIP(addr);
  if (v === 0 || addr.includes("%")) return undefined;
  const max = v === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = cidr.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > max) return undefined;
  }
  return { address: addr, prefix, family: v === 4 ? "ipv4" : "ipv6" };
}

const q = (key: string): string => JSON.stringify(key);

function isPort(p: unknown): boolean {
  return typeof p === "number" && Number.isInteger(p) && p >= 1 && p <= 65535;
}

function validateEndpoint(path: string, e: NetworkEndpoint, out: string[]): void {
  if (typeof e !== "object" || e === null) {
    out.push(`${path}: must be an object with host and port`);
    return;
  }
  const refuse = (field: keyof NetworkEndpoint, why: string) => {
    if (!isEmpty(e[field])) out.push(`${path}.${field}: ${why}`);
  };
  refuse("protocol", "L7 inspection is not supported; remove it");
  refuse("access", "L7 access presets are not supported; remove it");
  refuse("rules", "L7 rules are not supported; remove them");
  refuse("deny_rules", "L7 deny rules are not supported; remove them");
  refuse("allow_encoded_slash", "L7 options are not supported; remove it");
  if (e.tls !== undefined && e.tls !== null && e.tls !== "" && e.tls !== "passthrough") {
    out.push(`${path}.tls: only "passthrough" is supported (TLS is never terminated); remove it`);
  }
  const enf = e.enforcement;
  if (enf !== undefined && enf !== null && enf !== "" && enf !== "enforce" && enf !== "audit") {
    out.push(`${path}.enforcement: must be "enforce" or "audit", not ${JSON.stringify(enf)}`);
  }
  const hostErr = hostPatternError(e.host as string);
  if (hostErr) out.push(`${path}.host: ${hostErr}`);
  const ports = e.ports ?? [];
  const hasPort = e.port !== undefined && e.port !== null && e.port !== 0;
  if (!Array.isArray(ports)) {
    out.push(`${path}.ports: must be a list of ports`);
  } else if (ports.length > MAX_PORTS) {
    out.push(`${path}.ports: at most ${MAX_PORTS} ports (got ${ports.length})`);
  } else {
    ports.forEach((p, i) => {
      if (!isPort(p)) out.push(`${path}.ports[${i}]: ${JSON.stringify(p)} is not a port (1-65535)`);
    });
  }
  if (hasPort && !isPort(e.port)) {
    out.push(`${path}.port: ${JSON.stringify(e.port)} is not a port (1-65535)`);
  }
  if (!hasPort && Array.isArray(ports) && ports.length === 0) {
    out.push(`${path}: endpoint needs port or ports`);
  }
  const ips = e.allowed_ips ?? [];
  if (!Array.isArray(ips)) {
    out.push(`${path}.allowed_ips: must be a list of CIDRs`);
  } else if (ips.length > MAX_ALLOWED_IPS) {
    out.push(`${path}.allowed_ips: at most ${MAX_ALLOWED_IPS} entries (got ${ips.length})`);
  } else {
    ips.forEach((c, i) => {
      const err = cidrError(c);
      if (err) out.push(`${path}.allowed_ips[${i}]: ${err}`);
    });
  }
}

function nameError(name: unknown): string | undefined {
  if (typeof name !== "string" || name === "") return "name is empty";
  if (name.length > MAX_NAME_CHARS) return `name is longer than ${MAX_NAME_CHARS} characters`;
  // deno-lint-ignore no-control-regex
  if (/[\x00-\x1f\x7f]/.test(name)) return "name has control characters";
  return undefined;
}

/**
 * Every reason `policy` cannot be enforced, one line each naming the field
 * path (`policy.network_policies["pypi"].endpoints[0].port: …`); empty when
 * it is valid. At most {@link MAX_ERRORS} lines.
 */
export function validatePolicy(policy: SandboxPolicy | null | undefined): string[] {
  const out: string[] = [];
  if (policy === undefined || policy === null) return out;
  if (typeof policy !== "object") return ["policy: must be an object"];
  if (!isEmpty(policy.filesystem)) {
    out.push("policy.filesystem: filesystem policy is not supported; remove it");
  }
  if (!isEmpty(policy.landlock)) {
    out.push("policy.landlock: landlock policy is not supported; remove it");
  }
  if (!isEmpty(policy.process)) {
    out.push("policy.process: process policy is not supported; remove it");
  }
  const rules = policy.network_policies ?? {};
  if (typeof rules !== "object" || Array.isArray(rules)) {
    return [...out, "policy.network_policies: must be a map of rule name to rule"];
  }
  const keys = Object.keys(rules);
  if (keys.length > MAX_RULES) {
    out.push(`policy.network_policies: at most ${MAX_RULES} rules (got ${keys.length})`);
    return out;
  }
  for (const key of keys) {
    const path = `policy.network_policies[${q(key.slice(0, MAX_NAME_CHARS + 1))}]`;
    const keyErr = nameError(key);
    if (keyErr) out.push(`${path}: rule ${keyErr}`);
    const rule = rules[key];
    if (typeof rule !== "object" || rule === null) {
      out.push(`${path}: must be an object with endpoints`);
      continue;
    }
    if (rule.name !== undefined && rule.name !== null && rule.name !== "") {
      const err = nameError(rule.name);
      if (err) out.push(`${path}.name: ${err}`);
    }
    if (!isEmpty(rule.binaries)) {
      out.push(`${path}.binaries: per-binary rules are not supported; remove them`);
    }
    const endpoints = rule.endpoints ?? [];
    if (!Array.isArray(endpoints)) {
      out.push(`${path}.endpoints: must be a list`);
    } else if (endpoints.length > MAX_ENDPOINTS) {
      out.push(`${path}.endpoints: at most ${MAX_ENDPOINTS} endpoints (got ${endpoints.length})`);
    } else {
      endpoints.forEach((e, i) => validateEndpoint(`${path}.endpoints[${i}]`, e, out));
    }
    if (out.length > MAX_ERRORS) break;
  }
  if (out.length > MAX_ERRORS) {
    const more = out.length - (MAX_ERRORS - 1);
    return [...out.slice(0, MAX_ERRORS - 1), `… and ${more} more errors`];
  }
  return out;
}

// ---- hashing ----------------------------------------------------------------

let policyType: protobuf.Type | undefined;

function sandboxPolicyType(): protobuf.Type {
  if (!policyType) {
    const root = protobuf.Root.fromJSON(OPENSHELL_DESCRIPTOR as protobuf.INamespace);
    policyType = root.lookupType("openshell.sandbox.v1.SandboxPolicy");
    policyType.root.resolveAll();
  }
  return policyType;
}

/**
 * A plain object with proto3 defaults dropped (so a decoded message with
 * defaults filled in and a hand-built one serialize alike) and map keys
 * sorted; sub-messages keep their presence.
 */
function canonical(type: protobuf.Type, obj: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const value = obj[field.name];
    if (value === undefined || value === null) continue;
    const sub = field.resolvedType instanceof protobuf.Type ? field.resolvedType : undefined;
    const one = (v: unknown) => sub ? canonical(sub, v as Record<string, unknown>) : v;
    if (field.map) {
      const entries = Object.keys(value as object).sort();
      if (entries.length === 0) continue;
      const m: Record<string, unknown> = {};
      for (const k of entries) m[k] = one((value as Record<string, unknown>)[k]);
      out[field.name] = m;
    } else if (field.repeated) {
      if ((value as unknown[]).length === 0) continue;
      out[field.name] = (value as unknown[]).map(one);
    } else if (sub) {
      out[field.name] = one(value);
    } else if (value !== "" && value !== 0 && value !== false) {
      out[field.name] = value;
    }
  }
  return out;
}

/**
 * Hex SHA-256 of the deterministic protobuf serialization of
 * `openshell.sandbox.v1.SandboxPolicy` (defaults omitted, map entries in
 * key order). No policy hashes as the empty message.
 */
export function policyHash(policy: SandboxPolicy | null | undefined): string {
  const type = sandboxPolicyType();
  const msg = type.fromObject(canonical(type, (policy ?? {}) as Record<string, unknown>));
  const bytes = type.encode(msg).finish();
  return createHash("sha256").update(bytes).digest("hex");
}

// ---- matching ---------------------------------------------------------------

/**
 * Whether `host` (as the guest named it) matches an endpoint's host
 * `pattern`: case-insensitive, trailing dots ignored; `*.` is exactly one
 * more label, `**.` one or more; IP literals match only the same address.
 */
export function hostMatches(pattern: string, host: string): boolean {
  const p = normalizeHost(pattern);
  const h = normalizeHost(host);
  if (p === "" || h === "") return false;
  const hv = isIP(h);
  const pv = isIP(p);
  if (hv !== 0 || pv !== 0) {
    if (hv === 0 || pv === 0) return false;
    return canonicalIp(p) === canonicalIp(h);
  }
  if (p.startsWith("**.")) {
    const suffix = p.slice(2);
    return h.endsWith(suffix) && h.length > suffix.length && !h.startsWith(".");
  }
  if (p.startsWith("*.")) {
    const suffix = p.slice(1);
    if (!h.endsWith(suffix)) return false;
    const head = h.slice(0, h.length - suffix.length);
    return head !== "" && !head.includes(".");
  }
  return p === h;
}

/** Whether an endpoint's `port`/`ports` contain `port`. */
export function portMatches(endpoint: NetworkEndpoint, port: number): boolean {
  if (!isPort(port)) return false;
  if (endpoint.port === port) return true;
  return (endpoint.ports ?? []).includes(port);
}

/** Whether an endpoint is in audit mode. */
export function isAudit(endpoint: NetworkEndpoint): boolean {
  return endpoint.enforcement === "audit";
}

/** A decision before name resolution. */
export interface Decision {
  decision: "allowed" | "denied" | "audit";
  /** The deciding rule's name (map key). */
  rule?: string;
  endpoint?: NetworkEndpoint;
}

/** An endpoint matching a host and port, with its rule's name. */
export interface EndpointMatch {
  rule: string;
  endpoint: NetworkEndpoint;
}

/** Every endpoint whose host and port match, enforce ones first, in map-key order. */
export function matchingEndpoints(
  policy: SandboxPolicy | null | undefined,
  host: string,
  port: number,
): EndpointMatch[] {
  const enforce: EndpointMatch[] = [];
  const audit: EndpointMatch[] = [];
  const rules = policy?.network_policies ?? {};
  for (const rule of Object.keys(rules).sort()) {
    for (const endpoint of rules[rule]?.endpoints ?? []) {
      if (typeof endpoint?.host !== "string") continue;
      if (!hostMatches(endpoint.host, host) || !portMatches(endpoint, port)) continue;
      (isAudit(endpoint) ? audit : enforce).push({ rule, endpoint });
    }
  }
  return [...enforce, ...audit];
}

/**
 * The decision on `(host, port)` before resolution: `allowed` by an
 * enforce endpoint, else `audit` by an audit endpoint, else `denied`.
 */
export function decide(
  policy: SandboxPolicy | null | undefined,
  host: string,
  port: number,
): Decision {
  const first = matchingEndpoints(policy, host, port)[0];
  if (!first) return { decision: "denied" };
  return {
    decision: isAudit(first.endpoint) ? "audit" : "allowed",
    rule: first.rule,
    endpoint: first.endpoint,
  };
}

/** Whether some endpoint of the policy matches `host` on any port (the DNS responder's test). */
export function hostAllowed(policy: SandboxPolicy | null | undefined, host: string): boolean {
  const rules = policy?.network_policies ?? {};
  for (const rule of Object.values(rules)) {
    for (const endpoint of rule?.endpoints ?? []) {
      if (typeof endpoint?.host === "string" && hostMatches(endpoint.host, host)) return true;
    }
  }
  return false;
}

// ---- addresses --------------------------------------------------------------

/** Addresses no policy can open. */
export const ALWAYS_DENIED: readonly string[] = [
  "0.0.0.0/8", // unspecified / "this network"
  "127.0.0.0/8", // loopback
  "169.254.0.0/16", // link-local
  "224.0.0.0/4", // multicast
  "240.0.0.0/4", // reserved, incl. broadcast 255.255.255.255
  "::/96", // unspecified, loopback, IPv4-compatible
  "fe80::/10", // link-local
  "fec0::/10", // site-local (deprecated)
  "ff00::/8", // multicast
];

/** Private ranges: reachable only through an endpoint's `allowed_ips`. */
export const PRIVATE_RANGES: readonly string[] = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "100.64.0.0/10",
  "fc00::/7",
];

function blockList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const c of cidrs) {
    const p = parseCidr(c);
    if (p) list.addSubnet(p.address, p.prefix, p.family);
  }
  return list;
}

const alwaysDenied = blockList(ALWAYS_DENIED);
const privateRanges = blockList(PRIVATE_RANGES);

/**
 * The canonical text of an IP address: IPv4-mapped IPv6 (`::ffff:1.2.3.4`,
 * `::ffff:102:304`) becomes IPv4, IPv6 is lower-case and fully compressed
 * as node:net prints it. Undefined when `ip` is not an address.
 */
export function canonicalIp(ip: string): string | undefined {
  const a = normalizeHost(ip);
  const v = isIP(a);
  if (v === 4) return a;
  if (v !== 6 || a.includes("%")) return undefined;
  const words = expandV6(a);
  if (!words) return undefined;
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `${words[6] >> 8}.${words[6] & 255}.${words[7] >> 8}.${words[7] & 255}`;
  }
  return compressV6(words);
}

function expandV6(a: string): number[] | undefined {
  let text = a;
  const tail: number[] = [];
  const lastColon = text.lastIndexOf(":");
  const last = text.slice(lastColon + 1);
  if (last.includes(".")) {
    const parts = last.split(".").map(Number);
    tail.push((parts[0] << 8) | parts[1], (parts[2] << 8) | parts[3]);
    text = text.slice(0, lastColon + 1) + "0";
  }
  const halves = text.split("::");
  const parse = (s: string) => s === "" ? [] : s.split(":").map((x) => parseInt(x, 16));
  const head = parse(halves[0]);
  const rest = halves.length > 1 ? parse(halves[1]) : [];
  if (tail.length) {
    (halves.length > 1 ? rest : head).pop();
  }
  const fill = 8 - head.length - rest.length - tail.length;
  if (fill < 0 || (halves.length === 1 && fill !== 0)) return undefined;
  return [...head, ...new Array(fill).fill(0), ...rest, ...tail];
}

function compressV6(words: number[]): string {
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  const left = hex.slice(0, bestStart).join(":");
  const right = hex.slice(bestStart + bestLen).join(":");
  return `${left}::${right}`;
}

function familyOf(ip: string): "ipv4" | "ipv6" {
  return isIP(ip) === 4 ? "ipv4" : "ipv6";
}

/** The verdict on one resolved address. */
export type AddressVerdict =
  | { ok: true }
  | {
    ok: false;
    /** True for the addresses no policy can open (audit cannot either). */
    always: boolean;
    /** One line: why. */
    reason: string;
  };

/**
 * The SSRF rules for one resolved address of an endpoint: always refuse
 * loopback, link-local, unspecified, multicast, broadcast/reserved and the
 * host's own addresses (`hostAddrs`); private ranges only inside the
 * endpoint's `allowed_ips`; with `allowed_ips` set, only addresses inside it.
 */
export function checkAddress(
  ip: string,
  endpoint: NetworkEndpoint,
  hostAddrs: readonly string[],
): AddressVerdict {
  const addr = canonicalIp(ip);
  if (!addr) return { ok: false, always: true, reason: `${ip} is not an IP address` };
  const fam = familyOf(addr);
  if (alwaysDenied.check(addr, fam)) {
    return { ok: false, always: true, reason: `${addr} is a loopback/link-local/special address` };
  }
  if (hostAddrs.some((h) => canonicalIp(h) === addr)) {
    return { ok: false, always: true, reason: `${addr} is an address of the host` };
  }
  const allowed = endpoint.allowed_ips ?? [];
  if (allowed.length > 0) {
    if (!blockList(allowed).check(addr, fam)) {
      return { ok: false, always: false, reason: `${addr} is outside the rule's allowed_ips` };
    }
    return { ok: true };
  }
  if (privateRanges.check(addr, fam)) {
    return {
      ok: false,
      always: false,
      reason: `${addr} is a private address; list it in the rule's allowed_ips`,
    };
  }
  return { ok: true };
}

/** The full decision on a connection after resolution. */
export interface AddressDecision extends Decision {
  /** The vetted addresses to dial (empty when denied). */
  addresses: string[];
  /** Why it was denied or audited (one line), when it was. */
  reason?: string;
}

/** Options of {@link decideAddresses}. */
export interface DecideAddressesOptions {
  policy: SandboxPolicy | null | undefined;
  host: string;
  port: number;
  /** What the host resolved to (an IP literal: itself). */
  addresses: readonly string[];
  /** The host's own interface addresses. */
  hostAddrs: readonly string[];
}

/**
 * Decides a connection after resolution: `allowed` with the addresses some
 * enforce endpoint passes; else `audit` with the addresses an audit endpoint
 * would let through (its allowed_ips/private checks audited, the always-denied
 * addresses still refused); else `denied` with a reason.
 */
export function decideAddresses(o: DecideAddressesOptions): AddressDecision {
  const matches = matchingEndpoints(o.policy, o.host, o.port);
  if (matches.length === 0) {
    return { decision: "denied", addresses: [], reason: "no rule allows this host and port" };
  }
  let reason = "";
  for (const m of matches) {
    const audit = isAudit(m.endpoint);
    const passed: string[] = [];
    let audited = false;
    for (const a of o.addresses) {
      const v = checkAddress(a, m.endpoint, o.hostAddrs);
      if (v.ok) passed.push(canonicalIp(a)!);
      else {
        reason ||= v.reason;
        if (audit && !v.always) {
          passed.push(canonicalIp(a)!);
          audited = true;
        }
      }
    }
    if (passed.length > 0) {
      return {
        decision: audit ? "audit" : "allowed",
        rule: m.rule,
        endpoint: m.endpoint,
        addresses: [...new Set(passed)],
        ...(audited ? { reason } : {}),
      };
    }
  }
  return {
    decision: "denied",
    rule: matches[0].rule,
    addresses: [],
    reason: reason || "the host resolved to no address",
  };
}

/**
 * The addresses a DNS answer for `host` may carry: those some endpoint
 * naming the host (any port) would let a connection reach — vetted by
 * {@link checkAddress}, audit endpoints also passing what only their
 * allowed_ips/private check refuses.
 */
export function dnsAddresses(
  policy: SandboxPolicy | null | undefined,
  host: string,
  addresses: readonly string[],
  hostAddrs: readonly string[],
): string[] {
  const endpoints: NetworkEndpoint[] = [];
  for (const rule of Object.values(policy?.network_policies ?? {})) {
    for (const endpoint of rule?.endpoints ?? []) {
      if (typeof endpoint?.host === "string" && hostMatches(endpoint.host, host)) {
        endpoints.push(endpoint);
      }
    }
  }
  const out = new Set<string>();
  for (const a of addresses) {
    for (const e of endpoints) {
      const v = checkAddress(a, e, hostAddrs);
      if (v.ok || (!v.always && isAudit(e))) {
        out.add(canonicalIp(a)!);
        break;
      }
    }
  }
  return [...out];
}
