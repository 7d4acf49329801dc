/**
 * Sandbox egress policy in the public API: the create-time revision,
 * `UpdateConfig` (a new version), `GetSandboxPolicyStatus` and
 * `ListSandboxPolicies`, and the hooks the sandbox lifecycle calls. The
 * revisions live in the store; {@link EgressPolicies} gets them to the
 * egress proxy.
 *
 * Without the egress proxy (`--no-egress`) a sandbox has no network at
 * all: no revision is stored, a create with a non-empty policy and every
 * `UpdateConfig` are FAILED_PRECONDITION (a policy is never dropped in
 * silence).
 *
 * @module
 */
import type { Logger } from "../core/log.ts";
import { policyHash } from "../core/policy.ts";
import type {
  GetSandboxPolicyStatusRequest,
  GetSandboxPolicyStatusResponse,
  ListSandboxPoliciesRequest,
  ListSandboxPoliciesResponse,
  OpenShellHandlers,
  Sandbox,
  SandboxPolicy,
  SandboxPolicyRevision,
  SandboxSpec,
  UpdateConfigRequest,
  UpdateConfigResponse,
  Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { truncateForEcho } from "../core/text.ts";
import type { EgressPolicies } from "./egress.ts";
import { unary } from "./rpc.ts";
import type { PolicyRevisionRecord, SandboxRecord, Store } from "./store.ts";
import { validatePage, validateUpdateConfig } from "./validation.ts";

/** Options of {@link PolicyService}. */
export interface PolicyServiceOptions {
  store: Store;
  log: Logger;
  /** The egress side; undefined with `--no-egress`. */
  egress?: EgressPolicies;
  /** A gateway line in the sandbox's log. */
  sandboxLog?: (sandboxId: string, message: string) => void;
  now?: () => number;
}

/** Whether a policy allows nothing anyway (none, or no rules and nothing else set). */
export function isEmptyPolicy(policy: Wire<SandboxPolicy> | null | undefined): boolean {
  return !policy || policyHash(policy) === policyHash(null);
}

/** The API's view of a stored revision (`withPolicy`: the policy too). */
export function revisionMessage(
  r: PolicyRevisionRecord,
  withPolicy: boolean,
): SandboxPolicyRevision {
  return {
    version: r.version,
    policy_hash: r.hash,
    status: r.status,
    load_error: r.loadError,
    created_at_ms: r.createdAtMs,
    loaded_at_ms: r.loadedAtMs,
    policy: withPolicy ? r.policy as SandboxPolicyRevision["policy"] : null,
  };
}

const NO_EGRESS = "this gateway runs without its egress proxy (--no-egress), so sandboxes have " +
  "no network at all; start it with --egress to use network policies";

/** Policy RPCs and lifecycle hooks. */
export class PolicyService {
  readonly #o: PolicyServiceOptions;

  /** Creates the service. */
  constructor(options: PolicyServiceOptions) {
    this.#o = options;
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  /**
   * Before a create (after the spec was validated): a non-empty policy
   * needs the egress proxy (FAILED_PRECONDITION without it).
   */
  checkCreate(spec: SandboxSpec): void {
    if (!this.#o.egress && !isEmptyPolicy(spec.policy)) {
      throw new StatusError(Code.FAILED_PRECONDITION, `spec.policy: ${NO_EGRESS}`);
    }
  }

  /**
   * A sandbox was created: its policy (or the empty one, deny all) becomes
   * revision 1 and goes to the egress proxy. Nothing without the proxy.
   */
  async sandboxCreated(sandbox: Sandbox): Promise<void> {
    const egress = this.#o.egress;
    if (!egress) return;
    const policy = sandbox.spec?.policy ?? emptyPolicy();
    await this.#o.store.addPolicyRevision(sandbox.id, {
      hash: policyHash(policy),
      policy,
      createdAtMs: this.#now(),
    });
    egress.policyAdded(sandbox.id);
  }

  /** A sandbox was deleted: the egress proxy forgets it. */
  async sandboxDeleted(sandboxId: string): Promise<void> {
    await this.#o.egress?.sandboxDeleted(sandboxId);
  }

  async #byName(name: string): Promise<SandboxRecord> {
    if (!name) throw new StatusError(Code.INVALID_ARGUMENT, "name is required");
    const r = await this.#o.store.getSandboxByName(name);
    if (!r) throw new StatusError(Code.NOT_FOUND, `sandbox "${truncateForEcho(name)}" not found`);
    return r;
  }

  /** grpc-js handlers keyed by method name. */
  handlers(): Pick<
    OpenShellHandlers,
    "UpdateConfig" | "GetSandboxPolicyStatus" | "ListSandboxPolicies"
  > {
    const log = this.#o.log;
    return {
      UpdateConfig: unary(log, async (req: UpdateConfigRequest): Promise<UpdateConfigResponse> => {
        const { name, policy } = validateUpdateConfig(req);
        const record = await this.#byName(name);
        const egress = this.#o.egress;
        if (!egress) throw new StatusError(Code.FAILED_PRECONDITION, NO_EGRESS);
        if (record.sandbox.phase === "SANDBOX_PHASE_DELETING") {
          throw new StatusError(Code.FAILED_PRECONDITION, `sandbox "${name}" is being deleted`);
        }
        const hash = policyHash(policy);
        const rev = await this.#o.store.addPolicyRevision(record.sandbox.id, {
          hash,
          policy,
          createdAtMs: this.#now(),
        });
        this.#o.sandboxLog?.(
          record.sandbox.id,
          `policy version ${rev.version} set (${
            Object.keys(policy.network_policies ?? {}).length
          } ` +
            `rules, sha256 ${hash.slice(0, 12)})`,
        );
        log.info("sandbox policy set", {
          sandbox: record.sandbox.id,
          version: String(rev.version),
        });
        egress.policyAdded(record.sandbox.id);
        return { version: rev.version, policy_hash: hash, settings_revision: 0, deleted: false };
      }),
      GetSandboxPolicyStatus: unary(
        log,
        async (req: GetSandboxPolicyStatusRequest): Promise<GetSandboxPolicyStatusResponse> => {
          if (req.global) {
            throw new StatusError(
              Code.INVALID_ARGUMENT,
              "global: there is no global policy; name a sandbox",
            );
          }
          const record = await this.#byName(req.name);
          const rev = await this.#o.store.getPolicyRevision(record.sandbox.id, req.version);
          if (!rev) {
            const latest = await this.#o.store.getPolicyRevision(record.sandbox.id, 0);
            throw new StatusError(
              Code.NOT_FOUND,
              latest
                ? `sandbox "${req.name}" has no policy version ${req.version} (the latest is ${latest.version})`
                : `sandbox "${req.name}" has no policy revisions${
                  this.#o.egress ? "" : ` (${NO_EGRESS})`
                }`,
            );
          }
          return {
            revision: revisionMessage(rev, true),
            active_version: record.sandbox.current_policy_version ?? 0,
          };
        },
      ),
      ListSandboxPolicies: unary(
        log,
        async (req: ListSandboxPoliciesRequest): Promise<ListSandboxPoliciesResponse> => {
          if (req.global) {
            throw new StatusError(
              Code.INVALID_ARGUMENT,
              "global: there is no global policy; name a sandbox",
            );
          }
          const page = validatePage(req.limit, req.offset);
          const record = await this.#byName(req.name);
          const revisions = await this.#o.store.listPolicyRevisions(record.sandbox.id, page);
          return { revisions: revisions.map((r) => revisionMessage(r, false)) };
        },
      ),
    };
  }
}

/** The policy that allows nothing. */
export function emptyPolicy(): Wire<SandboxPolicy> {
  return { version: 0, filesystem: null, landlock: null, process: null, network_policies: {} };
}
