/**
 * Network policies as the CLI reads and writes them: the YAML file format
 * (upstream's shape, `network_policies: {NAME: {endpoints: [{host, port,
 * ports, allowed_ips, enforcement}]}}`), the `--allow HOST[:PORT]` quick
 * form, and the presets (`--preset pypi`), which are YAML files in
 * `cli/presets/` imported as text, so a compiled or installed CLI carries
 * them.
 *
 * Parsing is strict: an unknown or unsupported key is one error line with
 * the file, line and column and the key's YAML path
 * (`policy.yaml:6:9: network_policies.pypi.endpoints[0].hots: unknown key
 * …`); then `validatePolicy` (core/policy.ts) checks what the gateway will.
 *
 * @module
 */
import {
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseDocument,
  type Scalar,
  stringify,
  type YAMLMap,
} from "yaml";
import { hostPatternError, validatePolicy } from "../core/policy.ts";
import debianPreset from "./presets/debian.yaml" with { type: "text" };
import githubPreset from "./presets/github.yaml" with { type: "text" };
import npmPreset from "./presets/npm.yaml" with { type: "text" };
import pypiPreset from "./presets/pypi.yaml" with { type: "text" };
import type { NetworkEndpoint, NetworkPolicyRule, SandboxPolicy, Wire } from "../core/protocol.ts";

/** Largest policy file read (the gateway takes at most 64 KiB encoded). */
export const MAX_POLICY_FILE_BYTES = 1024 * 1024;

/** The presets: name → YAML text (one rule named like the preset). */
export const PRESETS: Readonly<Record<string, string>> = {
  debian: debianPreset,
  github: githubPreset,
  npm: npmPreset,
  pypi: pypiPreset,
};

/** Name of the rule that `--allow` endpoints go into. */
export const ALLOW_RULE = "allow";

/** A policy file or flag that cannot be used; its message is one line. */
export class PolicyInputError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "PolicyInputError";
  }
}

const TOP_KEYS = ["version", "network_policies"];
const RULE_KEYS = ["name", "endpoints"];
const ENDPOINT_KEYS = ["host", "port", "ports", "allowed_ips", "enforcement", "tls"];
const UNSUPPORTED: Readonly<Record<string, string>> = {
  filesystem_policy: "filesystem policy is not supported (only network_policies is enforced)",
  filesystem: "filesystem policy is not supported (only network_policies is enforced)",
  landlock: "landlock policy is not supported (only network_policies is enforced)",
  process: "process policy is not supported (only network_policies is enforced)",
  binaries: "per-binary rules are not supported",
  protocol: "L7 inspection is not supported",
  access: "L7 inspection is not supported",
  rules: "L7 inspection is not supported",
  deny_rules: "L7 inspection is not supported",
  allow_encoded_slash: "L7 inspection is not supported",
};

function keyPath(path: string, key: string): string {
  const plain = /^[A-Za-z0-9_-]+$/.test(key);
  if (!path) return plain ? key : JSON.stringify(key);
  return plain ? `${path}.${key}` : `${path}[${JSON.stringify(key)}]`;
}

type ScalarType = "string" | "integer";

/** A key of a mapping: its name, its value node and its own node (for positions). */
type Entry = [key: string, value: Node | null, keyNode: Node];

/**
 * The nodes of one parsed policy file, read strictly: every problem is a
 * {@link PolicyInputError} naming the file, line, column and YAML path.
 */
class PolicyNodes {
  readonly #source: string;
  readonly #lines: LineCounter;

  /** Reads nodes of the file `source` whose positions `lines` counted. */
  constructor(source: string, lines: LineCounter) {
    this.#source = source;
    this.#lines = lines;
  }

  /** `:LINE:COL` of a node ("" when it has no position). */
  #at(node: Node | null | undefined): string {
    const offset = node?.range?.[0];
    if (offset === undefined) return "";
    const { line, col } = this.#lines.linePos(offset);
    return `:${line}:${col}`;
  }

  /** Throws the one-line error for `node` at `path`. */
  fail(node: Node | null | undefined, path: string, message: string): never {
    throw new PolicyInputError(
      `${this.#source}${this.#at(node)}: ${path ? `${path}: ` : ""}${message}`,
    );
  }

  #noAlias(node: unknown, path: string): void {
    if (isAlias(node)) this.fail(node, path, "YAML aliases are not supported");
  }

  /** `node` as a mapping (`what` says what it should be). */
  mapOf(node: unknown, path: string, what: string): YAMLMap {
    this.#noAlias(node, path);
    if (!isMap(node)) this.fail(node as Node, path, `must be ${what}`);
    return node as YAMLMap;
  }

  /**
   * The entries of a mapping, keys plain names; with `allowed` non-empty any
   * other key is an error (an unsupported one says so).
   */
  entries(map: YAMLMap, path: string, allowed: readonly string[]): Entry[] {
    const out: Entry[] = [];
    for (const pair of map.items) {
      const k = pair.key as Node;
      if (!isScalar(k) || typeof k.value !== "string" && typeof k.value !== "number") {
        this.fail(k, path, "keys must be plain names");
      }
      const key = String((k as Scalar).value);
      if (allowed.length && !allowed.includes(key)) {
        this.fail(
          k,
          keyPath(path, key),
          UNSUPPORTED[key]
            ? `${UNSUPPORTED[key]}; remove it`
            : `unknown key (expected ${allowed.join(", ")})`,
        );
      }
      out.push([key, pair.value as Node | null, k]);
    }
    return out;
  }

  /** A string or whole-number scalar. */
  scalar(node: Node | null, path: string, type: ScalarType): unknown {
    this.#noAlias(node, path);
    if (!isScalar(node)) {
      this.fail(node, path, `must be ${type === "string" ? "a string" : "a number"}`);
    }
    const v = (node as Scalar).value;
    if (type === "string" && typeof v !== "string") this.fail(node, path, "must be a string");
    if (type === "integer" && !(typeof v === "number" && Number.isInteger(v))) {
      this.fail(node, path, "must be a whole number");
    }
    return v;
  }

  /** The items of a sequence (`what` says what it should be). */
  items(node: Node | null, path: string, what: string): Node[] {
    this.#noAlias(node, path);
    if (!isSeq(node)) this.fail(node, path, `must be ${what}`);
    return (node as unknown as { items: Node[] }).items;
  }

  /** A list of scalars. */
  list(node: Node | null, path: string, type: ScalarType): unknown[] {
    return this.items(node, path, "a list").map((item, i) =>
      this.scalar(item, `${path}[${i}]`, type)
    );
  }
}

/** Whether a value is absent (`key:` or `key: null`). */
function isNull(node: Node | null): boolean {
  return node === null || isScalar(node) && node.value === null;
}

/** Parses the YAML; its first syntax error, or an empty file, is one line. */
function parseTop(text: string, source: string): { top: unknown; nodes: PolicyNodes } {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, uniqueKeys: true, prettyErrors: false });
  const nodes = new PolicyNodes(source, lines);
  if (doc.errors.length > 0) {
    const e = doc.errors[0];
    const pos = e.linePos?.[0] ?? (e.pos ? lines.linePos(e.pos[0]) : undefined);
    const first = e.message.split("\n")[0].replace(/ at line \d+, column \d+:?$/, "");
    throw new PolicyInputError(
      `${source}${pos ? `:${pos.line}:${pos.col}` : ""}: not valid YAML: ${first}`,
    );
  }
  const top = doc.contents;
  if (top === null || (isScalar(top) && (top.value === null || top.value === ""))) {
    nodes.fail(
      null,
      "",
      "the file is empty (a policy that allows nothing is `network_policies: {}`)",
    );
  }
  return { top, nodes };
}

/** One endpoint mapping (`host`, `port`, `ports`, `allowed_ips`, `enforcement`, `tls`). */
function readEndpoint(nodes: PolicyNodes, item: Node, path: string): Wire<NetworkEndpoint> {
  const endpoint: Wire<NetworkEndpoint> = {};
  const map = nodes.mapOf(item, path, "a mapping with host and port");
  for (const [k, v] of nodes.entries(map, path, ENDPOINT_KEYS)) {
    const p = keyPath(path, k);
    if (k === "host") endpoint.host = nodes.scalar(v, p, "string") as string;
    else if (k === "port") endpoint.port = nodes.scalar(v, p, "integer") as number;
    else if (k === "ports") endpoint.ports = nodes.list(v, p, "integer") as number[];
    else if (k === "allowed_ips") endpoint.allowed_ips = nodes.list(v, p, "string") as string[];
    else if (k === "enforcement") endpoint.enforcement = nodes.scalar(v, p, "string") as string;
    else if (k === "tls") endpoint.tls = nodes.scalar(v, p, "string") as string;
  }
  return endpoint;
}

/** One rule (`name`, `endpoints`); an empty one has no endpoints. */
function readRule(nodes: PolicyNodes, node: Node | null, path: string): Wire<NetworkPolicyRule> {
  const rule: Wire<NetworkPolicyRule> = { name: "", endpoints: [] };
  const fields = isNull(node)
    ? []
    : nodes.entries(nodes.mapOf(node, path, "a mapping with endpoints"), path, RULE_KEYS);
  for (const [field, value] of fields) {
    const p = keyPath(path, field);
    if (field === "name") {
      rule.name = nodes.scalar(value, p, "string") as string;
      continue;
    }
    nodes.items(value, p, "a list of endpoints").forEach((item, i) => {
      rule.endpoints!.push(readEndpoint(nodes, item, `${p}[${i}]`));
    });
  }
  return rule;
}

/** Reads one policy file's text; `source` names it in errors. */
export function parsePolicyYaml(text: string, source: string): Wire<SandboxPolicy> {
  const { top, nodes } = parseTop(text, source);
  const policy: Wire<SandboxPolicy> = { network_policies: {} };
  const topMap = nodes.mapOf(top, "", "a mapping with network_policies");
  for (const [key, value] of nodes.entries(topMap, "", TOP_KEYS)) {
    if (key === "version") {
      policy.version = nodes.scalar(value, "version", "integer") as number;
      continue;
    }
    if (isNull(value)) continue;
    const rules = nodes.mapOf(value, key, "a mapping of rule names");
    for (const [name, ruleNode] of nodes.entries(rules, key, [])) {
      policy.network_policies![name] = readRule(nodes, ruleNode, keyPath(key, name));
    }
  }
  const errors = validatePolicy(policy);
  if (errors.length > 0) {
    const more = errors.length > 1 ? ` (and ${errors.length - 1} more problems)` : "";
    throw new PolicyInputError(`${source}: ${errors[0]}${more}`);
  }
  return policy;
}

/**
 * A policy as YAML in the file format: defaults left out, rules in name
 * order, each endpoint's keys in a fixed order.
 */
export function renderPolicyYaml(policy: Wire<SandboxPolicy> | null | undefined): string {
  const rules: Record<string, unknown> = {};
  const entries = Object.entries(policy?.network_policies ?? {}).sort(([a], [b]) =>
    a < b ? -1 : a > b ? 1 : 0
  );
  for (const [key, rule] of entries) {
    const out: Record<string, unknown> = {};
    if (rule.name && rule.name !== key) out.name = rule.name;
    out.endpoints = (rule.endpoints ?? []).map((e) => {
      const ep: Record<string, unknown> = { host: e.host ?? "" };
      if (e.port) ep.port = e.port;
      if (e.ports?.length) ep.ports = [...e.ports];
      if (e.allowed_ips?.length) ep.allowed_ips = [...e.allowed_ips];
      if (e.enforcement) ep.enforcement = e.enforcement;
      if (e.tls) ep.tls = e.tls;
      return ep;
    });
    rules[key] = out;
  }
  return stringify({ network_policies: rules }, { flowCollectionPadding: false });
}

/**
 * One `--allow` value: `HOST`, `HOST:PORT`, `[IPV6]` or `[IPV6]:PORT`
 * (the port defaults to 443); HOST may be a glob (`*.example.com`).
 */
export function parseAllow(value: string): Wire<NetworkEndpoint> {
  const v = value.trim();
  let host = v;
  let port = "443";
  const bracket = /^\[([^\]]+)\](?::(\d+))?$/.exec(v);
  const hostPort = /^([^:]+):(\d+)$/.exec(v);
  if (bracket) {
    host = bracket[1];
    port = bracket[2] ?? port;
  } else if (hostPort) {
    host = hostPort[1];
    port = hostPort[2];
  } else if (/:.*:/.test(v) === false && v.includes(":")) {
    throw new PolicyInputError(
      `--allow ${value}: the port must be a number (HOST, HOST:PORT or [IPV6]:PORT)`,
    );
  }
  const n = Number(port);
  if (!Number.isInteger(n) || n < 1 || n > 65535) {
    throw new PolicyInputError(`--allow ${value}: ${port} is not a port (1-65535)`);
  }
  const problem = hostPatternError(host);
  if (problem) throw new PolicyInputError(`--allow ${value}: ${problem}`);
  return { host, port: n };
}

/** The rule of a preset; a {@link PolicyInputError} naming the presets for an unknown one. */
export function presetRule(name: string): Wire<NetworkPolicyRule> {
  const text = PRESETS[name];
  if (text === undefined) {
    throw new PolicyInputError(
      `--preset ${name}: no such preset (there are ${Object.keys(PRESETS).join(", ")})`,
    );
  }
  return parsePolicyYaml(text, `preset ${name}`).network_policies![name];
}

/** What a command line says about a policy. */
export interface PolicyInputs {
  /** A policy file's text and how to name it. */
  file?: { text: string; source: string };
  /** `--allow` values. */
  allow?: readonly string[];
  /** `--preset` names. */
  presets?: readonly string[];
}

/**
 * The policy that `--policy`, `--preset` and `--allow` describe together
 * (their rules side by side: the file's, one per preset, and `allow` for
 * the `--allow` endpoints); undefined when none is given. A rule name used
 * twice is an error.
 */
export function composePolicy(inputs: PolicyInputs): Wire<SandboxPolicy> | undefined {
  const presets = [...new Set(inputs.presets ?? [])];
  const allow = inputs.allow ?? [];
  if (!inputs.file && presets.length === 0 && allow.length === 0) return undefined;
  const policy: Wire<SandboxPolicy> = inputs.file
    ? parsePolicyYaml(inputs.file.text, inputs.file.source)
    : { network_policies: {} };
  const rules = policy.network_policies ??= {};
  const add = (name: string, rule: Wire<NetworkPolicyRule>, from: string) => {
    if (rules[name]) {
      throw new PolicyInputError(
        `rule "${name}" is given twice (${from} and ${inputs.file?.source ?? "another flag"}); ` +
          "rename the rule in the file",
      );
    }
    rules[name] = rule;
  };
  for (const name of presets) add(name, presetRule(name), `--preset ${name}`);
  if (allow.length > 0) {
    add(ALLOW_RULE, { name: ALLOW_RULE, endpoints: allow.map(parseAllow) }, "--allow");
  }
  const errors = validatePolicy(policy);
  if (errors.length > 0) throw new PolicyInputError(errors[0]);
  return policy;
}

/** Reads a policy file (bounded) for {@link composePolicy}. */
export async function readPolicyFile(path: string): Promise<{ text: string; source: string }> {
  let bytes: Uint8Array;
  try {
    const info = await Deno.stat(path);
    if (info.size > MAX_POLICY_FILE_BYTES) {
      throw new PolicyInputError(
        `--policy ${path}: ${info.size} bytes; a policy file is at most ${MAX_POLICY_FILE_BYTES}`,
      );
    }
    bytes = await Deno.readFile(path);
  } catch (err) {
    if (err instanceof PolicyInputError) throw err;
    throw new PolicyInputError(`--policy ${path}: cannot read it: ${(err as Error).message}`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new PolicyInputError(`--policy ${path}: not UTF-8 text`);
  }
  return { text, source: path };
}
