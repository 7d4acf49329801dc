/**
 * Sandbox resources on the wire: Kubernetes-style quantities and the
 * `template.resources` Struct, shared by the CLI (which builds it), the
 * gateway (which maps it onto the driver's typed requirements, as upstream
 * does) and the VM driver (which honours it).
 *
 * The public shape is upstream's: `{limits: {cpu: "2", memory: "2Gi"},
 * requests: {…}}`. The disk is `limits["ephemeral-storage"]` (Kubernetes'
 * name for a pod's writable local storage); the driver API has no typed
 * field for it, so the gateway passes it, like upstream passes every
 * resource beyond CPU and memory, in `platform_config.resources_raw`.
 *
 * Pure: quantities in, numbers or a one-line {@link ResourceError} out.
 *
 * @module
 */
import type { ProtoStruct } from "./protocol.ts";

/** The resource name of the sandbox's disk. */
export const DISK_RESOURCE = "ephemeral-storage";

/** A malformed quantity or resources object; the message says which and why. */
export class ResourceError extends Error {
  /** Creates the error with its one-line message. */
  constructor(message: string) {
    super(message);
    this.name = "ResourceError";
  }
}

/** Longest quantity text accepted (Kubernetes quantities are short). */
const MAX_QUANTITY_CHARS = 32;

function shown(value: string): string {
  return JSON.stringify(value.length > MAX_QUANTITY_CHARS ? value.slice(0, 32) + "…" : value);
}

/**
 * CPU quantity → millicores: `"2"`, `"1.5"`, `"500m"`. Throws a
 * {@link ResourceError} for anything else, zero or negative.
 */
export function parseCpu(value: string, what = "cpu"): number {
  const v = value.trim();
  const m = v.length <= MAX_QUANTITY_CHARS ? /^(\d+(?:\.\d+)?|\.\d+)(m?)$/.exec(v) : null;
  if (!m) {
    throw new ResourceError(
      `${what} must be a number of CPUs (2, 0.5) or millicores (500m), not ${shown(value)}`,
    );
  }
  const milli = m[2] === "m" ? Number(m[1]) : Number(m[1]) * 1000;
  if (!Number.isFinite(milli) || milli <= 0) {
    throw new ResourceError(`${what} must be more than zero, not ${shown(value)}`);
  }
  return Math.ceil(milli);
}

const BINARY: Readonly<Record<string, number>> = {
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
};
const DECIMAL: Readonly<Record<string, number>> = {
  "": 1,
  k: 1e3,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
};

/**
 * Byte quantity → bytes (rounded up): `"2Gi"`, `"1536Mi"`, `"2G"`,
 * `"1073741824"`, `"1.5Gi"`. Throws a {@link ResourceError} for anything
 * else, zero, or more than 2^53 bytes.
 */
export function parseBytes(value: string, what = "memory"): number {
  const v = value.trim();
  const m = v.length <= MAX_QUANTITY_CHARS
    ? /^(\d+(?:\.\d+)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|[kKMGTP]?)$/.exec(v)
    : null;
  if (!m) {
    throw new ResourceError(
      `${what} must be a size such as 2Gi, 512Mi or 2G, not ${shown(value)}`,
    );
  }
  const bytes = Math.ceil(Number(m[1]) * (BINARY[m[2]] ?? DECIMAL[m[2]]));
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new ResourceError(
      `${what} must be more than zero and at most 8 PiB, not ${shown(value)}`,
    );
  }
  return bytes;
}

/** A JSON value as a Struct holds it. */
export type JsonValue =
  | null
  | boolean
  | number
  | string
  | JsonValue[]
  | { [key: string]: JsonValue };

/** Nesting depth {@link fromStruct} follows (resources are two levels deep). */
const MAX_STRUCT_DEPTH = 8;

/** A plain object → `google.protobuf.Struct` as proto-loader encodes it. */
export function toStruct(object: Readonly<Record<string, JsonValue>>): ProtoStruct {
  const value = (v: JsonValue): Record<string, unknown> => {
    if (v === null) return { nullValue: "NULL_VALUE" };
    if (typeof v === "boolean") return { boolValue: v };
    if (typeof v === "number") return { numberValue: v };
    if (typeof v === "string") return { stringValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
    return { structValue: toStruct(v) };
  };
  return { fields: Object.fromEntries(Object.entries(object).map(([k, v]) => [k, value(v)])) };
}

/**
 * A decoded `google.protobuf.Struct` → a plain object (`undefined` for
 * null or a non-Struct). Deeper than {@link MAX_STRUCT_DEPTH} levels is
 * cut off as `null`.
 */
export function fromStruct(struct: unknown, depth = 0): Record<string, JsonValue> | undefined {
  const fields = (struct as { fields?: unknown } | null | undefined)?.fields;
  if (!fields || typeof fields !== "object") return undefined;
  const value = (v: unknown, d: number): JsonValue => {
    if (!v || typeof v !== "object" || d > MAX_STRUCT_DEPTH) return null;
    const o = v as Record<string, unknown>;
    if (typeof o.stringValue === "string" && (o.kind ?? "stringValue") === "stringValue") {
      return o.stringValue;
    }
    if (typeof o.numberValue === "number" && (o.kind ?? "numberValue") === "numberValue") {
      return o.numberValue;
    }
    if (typeof o.boolValue === "boolean" && (o.kind ?? "boolValue") === "boolValue") {
      return o.boolValue;
    }
    if (o.structValue && (o.kind ?? "structValue") === "structValue") {
      return fromStruct(o.structValue, d + 1) ?? null;
    }
    if (o.listValue && (o.kind ?? "listValue") === "listValue") {
      const values = (o.listValue as { values?: unknown[] }).values ?? [];
      return Array.isArray(values) ? values.map((x) => value(x, d + 1)) : null;
    }
    return null;
  };
  if (depth > MAX_STRUCT_DEPTH) return {};
  return Object.fromEntries(
    Object.entries(fields as Record<string, unknown>).map(([k, v]) => [k, value(v, depth)]),
  );
}

/** What a user asks for (`sandbox create --cpus --memory --disk-gib`). */
export interface ResourceLimits {
  /** CPUs (a quantity: `"2"`, `"500m"`). */
  cpu?: string;
  /** Memory (a quantity: `"2Gi"`). */
  memory?: string;
  /** Disk (a quantity: `"20Gi"`). */
  disk?: string;
}

/**
 * The public `template.resources` Struct for `limits` (validated first):
 * `{limits: {cpu, memory, "ephemeral-storage"}}`; undefined when empty.
 */
export function limitsStruct(limits: ResourceLimits): ProtoStruct | undefined {
  const out: Record<string, JsonValue> = {};
  if (limits.cpu !== undefined) {
    parseCpu(limits.cpu, "cpu");
    out.cpu = limits.cpu.trim();
  }
  if (limits.memory !== undefined) {
    parseBytes(limits.memory, "memory");
    out.memory = limits.memory.trim();
  }
  if (limits.disk !== undefined) {
    parseBytes(limits.disk, "disk");
    out[DISK_RESOURCE] = limits.disk.trim();
  }
  return Object.keys(out).length ? toStruct({ limits: out }) : undefined;
}
