/**
 * The policies the egress proxy enforces, one per sandbox, as the gateway
 * pushes them (ApplyPolicy). A sandbox without one is unknown: its guest
 * connections are refused.
 *
 * @module
 */
import { validatePolicy } from "../core/policy.ts";
import { Code, StatusError } from "../core/status.ts";
import type { AppliedPolicy, SandboxPolicy, Wire } from "../core/protocol.ts";

/** Most sandboxes with a policy at once. */
export const MAX_SANDBOXES = 4096;

/** A sandbox id as the gateway mints it and the driver's header carries it. */
export const SANDBOX_ID_RE: RegExp = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** One sandbox's enforced policy. */
export interface Applied {
  version: number;
  policy: Wire<SandboxPolicy>;
  loadedAtMs: number;
}

/** Policies by sandbox id. */
export class PolicyTable {
  readonly #byId = new Map<string, Applied>();
  readonly #now: () => number;
  readonly #max: number;

  /** `now`: a millisecond clock; `max`: most sandboxes (default {@link MAX_SANDBOXES}). */
  constructor(options: { now?: () => number; max?: number } = {}) {
    this.#now = options.now ?? Date.now;
    this.#max = options.max ?? MAX_SANDBOXES;
  }

  /**
   * Replaces a sandbox's policy. INVALID_ARGUMENT (the old one stays) when
   * it cannot be enforced or the id is malformed; FAILED_PRECONDITION for a
   * version older than the loaded one; RESOURCE_EXHAUSTED past the cap.
   */
  apply(
    sandboxId: string,
    version: number,
    policy: Wire<SandboxPolicy> | null | undefined,
  ): Applied {
    if (!SANDBOX_ID_RE.test(sandboxId)) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `sandbox_id: ${JSON.stringify(sandboxId.slice(0, 140))} is not a sandbox id ` +
          "(letters, digits, '.', '_', '-'; at most 128)",
      );
    }
    const errors = validatePolicy(policy);
    if (errors.length) throw new StatusError(Code.INVALID_ARGUMENT, errors.join("; "));
    const old = this.#byId.get(sandboxId);
    if (old && version < old.version) {
      throw new StatusError(
        Code.FAILED_PRECONDITION,
        `version ${version} is older than the loaded version ${old.version} of ${sandboxId}`,
      );
    }
    if (!old && this.#byId.size >= this.#max) {
      throw new StatusError(
        Code.RESOURCE_EXHAUSTED,
        `the egress proxy holds policies for ${this.#max} sandboxes; remove some first`,
      );
    }
    const applied = { version, policy: structuredClone(policy ?? {}), loadedAtMs: this.#now() };
    this.#byId.set(sandboxId, applied);
    return applied;
  }

  /** Forgets a sandbox; whether it was known. */
  remove(sandboxId: string): boolean {
    return this.#byId.delete(sandboxId);
  }

  /** The enforced policy of a sandbox, if it has one. */
  get(sandboxId: string): Applied | undefined {
    return this.#byId.get(sandboxId);
  }

  /** Sandboxes with a policy now. */
  get size(): number {
    return this.#byId.size;
  }

  /** What is enforced now, sorted by sandbox id. */
  list(): AppliedPolicy[] {
    return [...this.#byId.entries()]
      .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)
      .map(([id, a]) => ({ sandbox_id: id, version: a.version, loaded_at_ms: a.loadedAtMs }));
  }
}
