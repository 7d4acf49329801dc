/**
 * A sandbox's VM size from its template: vCPUs and memory from the typed
 * `resources` (the limit, else the request), the disk from
 * `platform_config.resources_raw` (`limits["ephemeral-storage"]`, else the
 * request; see `core/resources.ts` for the wire shape), the driver's
 * defaults for whatever is not asked for.
 *
 * Checked before anything starts: a malformed quantity, a request above its
 * limit or a size outside what a VM can be is INVALID_ARGUMENT; more CPUs or
 * memory than this host has is RESOURCE_EXHAUSTED; any other resource or
 * `platform_config` key is FAILED_PRECONDITION (the VM driver cannot honour
 * it). Pure: the host's limits are passed in.
 *
 * @module
 */
import {
  DISK_RESOURCE,
  fromStruct,
  type JsonValue,
  parseBytes,
  parseCpu,
  ResourceError,
} from "../core/resources.ts";
import type { DriverSandboxTemplate, Wire } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho } from "../core/text.ts";
import { MAX_DISK_GIB, MAX_VCPUS, MIN_MEM_MIB } from "../core/shared_flags.ts";

/** What one VM gets. */
export interface VmResources {
  vcpus: number;
  memMib: number;
  diskGiB: number;
}

/** What this host has (undefined: unknown, not checked). */
export interface HostLimits {
  cpus?: number;
  memMib?: number;
}

// The least memory a guest boots with and the most vCPUs a VM gets are options' rules too.
export { MAX_VCPUS, MIN_MEM_MIB };

const MIB = 2 ** 20;
const GIB = 2 ** 30;

function invalid(message: string): StatusError {
  return new StatusError(Code.INVALID_ARGUMENT, message);
}

function quantity<T>(parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (err instanceof ResourceError) throw invalid(err.message);
    throw err;
  }
}

/** The disk quantities in `platform_config`; throws for anything else there. */
function diskOf(platformConfig: unknown): { limit?: string; request?: string } {
  const pc = fromStruct(platformConfig);
  if (!pc) return {};
  const unsupported = (what: string) =>
    new StatusError(
      Code.FAILED_PRECONDITION,
      `the VM driver does not support ${truncateForEcho(what)} ` +
        `(it honours resources cpu, memory and ${DISK_RESOURCE})`,
    );
  const out: { limit?: string; request?: string } = {};
  for (const [key, value] of Object.entries(pc)) {
    if (key !== "resources_raw") throw unsupported(`template.platform_config.${key}`);
    const raw = asObject(value);
    if (!raw) throw invalid("template.platform_config.resources_raw must be an object");
    for (const [section, entries] of Object.entries(raw)) {
      if (section !== "limits" && section !== "requests") {
        throw unsupported(`resources.${section}`);
      }
      const obj = asObject(entries);
      if (!obj) throw invalid(`resources.${section} must be an object`);
      for (const [name, q] of Object.entries(obj)) {
        if (name !== DISK_RESOURCE) throw unsupported(`resource ${section}.${name}`);
        if (typeof q !== "string" && typeof q !== "number") {
          throw invalid(`resources.${section}.${DISK_RESOURCE} must be a quantity such as 20Gi`);
        }
        out[section === "limits" ? "limit" : "request"] = String(q);
      }
    }
  }
  return out;
}

function asObject(v: JsonValue | undefined): Record<string, JsonValue> | undefined {
  return v && typeof v === "object" && !Array.isArray(v) ? v : undefined;
}

/** Picks the limit, else the request, after checking request ≤ limit. */
function pick<T extends number>(
  what: string,
  limit: string | undefined,
  request: string | undefined,
  parse: (v: string, what: string) => T,
): T | undefined {
  const l = limit ? quantity(() => parse(limit, `${what} limit`)) : undefined;
  const r = request ? quantity(() => parse(request, `${what} request`)) : undefined;
  if (l !== undefined && r !== undefined && r > l) {
    throw invalid(`${what} request ${request} is above its limit ${limit}`);
  }
  return l ?? r;
}

/** Options of {@link resolveResources}. */
export interface ResolveOptions {
  /** The driver's defaults (`--vm-vcpus`, `--vm-mem-mib`, `--vm-disk-gib`). */
  defaults: VmResources;
  host: HostLimits;
}

/** The VM size of a template (see the module docs); throws a StatusError. */
export function resolveResources(
  template: Wire<DriverSandboxTemplate> | null | undefined,
  options: ResolveOptions,
): VmResources {
  const r = template?.resources;
  const milli = pick("cpu", r?.cpu_limit || undefined, r?.cpu_request || undefined, parseCpu);
  const bytes = pick(
    "memory",
    r?.memory_limit || undefined,
    r?.memory_request || undefined,
    parseBytes,
  );
  const disk = diskOf(template?.platform_config);
  const diskBytes = pick(DISK_RESOURCE, disk.limit, disk.request, parseBytes);
  const out = { ...options.defaults };
  const host = options.host;
  if (milli !== undefined) {
    const vcpus = Math.ceil(milli / 1000);
    if (vcpus > MAX_VCPUS) {
      throw invalid(`cpu: at most ${MAX_VCPUS} CPUs per sandbox, asked ${vcpus}`);
    }
    if (host.cpus !== undefined && vcpus > host.cpus) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `cpu: the sandbox asks for ${vcpus} CPUs; this host has ${host.cpus}`,
      );
    }
    out.vcpus = vcpus;
  }
  if (bytes !== undefined) {
    const memMib = Math.ceil(bytes / MIB);
    if (memMib < MIN_MEM_MIB) {
      throw invalid(`memory: a sandbox needs at least ${MIN_MEM_MIB}Mi, asked ${memMib}Mi`);
    }
    if (host.memMib !== undefined && memMib > host.memMib) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `memory: the sandbox asks for ${memMib} MiB; this host has ${host.memMib} MiB`,
      );
    }
    out.memMib = memMib;
  }
  if (diskBytes !== undefined) {
    const diskGiB = Math.ceil(diskBytes / GIB);
    if (diskGiB > MAX_DISK_GIB) {
      throw invalid(`${DISK_RESOURCE}: at most ${MAX_DISK_GIB}Gi per sandbox, asked ${diskGiB}Gi`);
    }
    out.diskGiB = diskGiB;
  }
  return out;
}

/** One line for people: `2 vCPUs, 1024 MiB memory, 8 GiB disk`. */
export function describeResources(r: VmResources): string {
  return `${r.vcpus} vCPU${r.vcpus === 1 ? "" : "s"}, ${r.memMib} MiB memory, ` +
    `${r.diskGiB} GiB disk`;
}
