/**
 * The gateway's side of the egress proxy: {@link GrpcEgressControl}, the
 * `openshell.egress.v1.EgressProxy` client over the proxy's control socket,
 * and {@link EgressPolicies}, which keeps the proxy in line with the store.
 *
 * Every sandbox's policy is stored as numbered revisions (gateway/store.ts).
 * A new revision is PENDING until the proxy's `ApplyPolicy` returns (LOADED,
 * and the sandbox's `current_policy_version` moves to it) or refuses it with
 * INVALID_ARGUMENT (FAILED, the previous one stays enforced). While the
 * proxy is away, revisions wait as PENDING; each time a proxy is attached
 * (its start, a restart, the gateway's restart) {@link EgressPolicies}
 * reconciles: the newest PENDING or LOADED revision of every sandbox is
 * applied unless the proxy's `ListPolicies` shows it enforces it already,
 * and sandboxes the store does not know are removed from the proxy. The
 * proxy's connection events become log lines of source `egress` in the
 * sandbox's log ring.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { errorMessage, type Logger } from "../core/log.ts";
import { readOcsfLine } from "../core/ocsf.ts";
import {
  type AppliedPolicy,
  type ApplyPolicyResponse,
  type EgressEvent,
  EgressProxyClient,
  type SandboxLogLine,
  type SandboxPolicy,
  unaryCall,
  type UnaryMethod,
  type Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { capLine } from "../core/text.ts";
import type { PolicyRevisionRecord, Store } from "./store.ts";

/** Deadline of one control call (ApplyPolicy, RemoveSandbox, ListPolicies). */
export const EGRESS_CALL_TIMEOUT_MS = 10_000;
/** How often the proxy is reconciled with the store while it is attached. */
export const EGRESS_RECONCILE_MS = 30_000;
/** Delay before re-opening an event stream that ended while the proxy runs. */
export const EGRESS_WATCH_RESTART_MS = 1_000;
/** Longest OCSF line kept from one egress event. */
export const MAX_EGRESS_LINE_BYTES = 4096;

/** Handlers of {@link EgressControl.watch}. */
export interface EgressWatchHandlers {
  event(event: EgressEvent): void;
  /** The stream ended (with the error, if any). */
  end(err?: Error): void;
}

/** What the gateway asks of the egress proxy. */
export interface EgressControl {
  /** Makes `policy` the sandbox's enforced policy. */
  apply(
    sandboxId: string,
    version: number,
    policy: Wire<SandboxPolicy>,
  ): Promise<ApplyPolicyResponse>;
  /** Forgets a sandbox (its connections close). */
  remove(sandboxId: string): Promise<void>;
  /** What the proxy enforces now. */
  list(): Promise<AppliedPolicy[]>;
  /** Starts the event stream; returns a function that cancels it. */
  watch(handlers: EgressWatchHandlers): () => void;
  /** Ends every call and the connection. */
  close(): void;
}

/** {@link EgressControl} over `unix:<egress-state>/control.sock`. */
export class GrpcEgressControl implements EgressControl {
  readonly #client: EgressProxyClient;
  readonly #calls = new Set<grpc.ClientReadableStream<unknown>>();

  /** A client of `target` (e.g. `unix:/state/egress/control.sock`); nothing connects yet. */
  constructor(target: string) {
    this.#client = new EgressProxyClient(target, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
    });
  }

  async #unary<Req, Res>(method: UnaryMethod<Req, Res>, request: NoInfer<Req>): Promise<Res> {
    const options = { deadline: Date.now() + EGRESS_CALL_TIMEOUT_MS };
    try {
      return await unaryCall(this.#client, method, request, options);
    } catch (e) {
      const err = e as grpc.ServiceError;
      throw new StatusError((err.code ?? Code.UNKNOWN) as Code, err.details || err.message);
    }
  }

  apply(
    sandboxId: string,
    version: number,
    policy: Wire<SandboxPolicy>,
  ): Promise<ApplyPolicyResponse> {
    return this.#unary(this.#client.ApplyPolicy, { sandbox_id: sandboxId, version, policy });
  }

  async remove(sandboxId: string): Promise<void> {
    await this.#unary(this.#client.RemoveSandbox, { sandbox_id: sandboxId });
  }

  async list(): Promise<AppliedPolicy[]> {
    return (await this.#unary(this.#client.ListPolicies, {})).policies;
  }

  watch(handlers: EgressWatchHandlers): () => void {
    const call = this.#client.WatchEvents({});
    this.#calls.add(call);
    let ended = false;
    const finish = (err?: Error) => {
      if (ended) return;
      ended = true;
      this.#calls.delete(call);
      handlers.end(err);
    };
    call.on("data", (e: EgressEvent) => handlers.event(e));
    call.on(
      "error",
      (err: grpc.ServiceError) => finish(err.code === grpc.status.CANCELLED ? undefined : err),
    );
    call.on("end", () => finish());
    return () => call.cancel();
  }

  close(): void {
    for (const call of this.#calls) call.cancel();
    this.#client.close();
  }
}

/**
 * One egress event as a log line of source `egress`: its OCSF JSON as the
 * message under target `ocsf` (level from the event), or a plain line when
 * the proxy sent no OCSF. Bounded to {@link MAX_EGRESS_LINE_BYTES}.
 */
export function egressLogLine(event: EgressEvent, nowMs: number): SandboxLogLine {
  const base = {
    sandbox_id: event.sandbox_id,
    timestamp_ms: event.time_ms || nowMs,
    source: "egress",
  };
  const json = event.ocsf_json.trim();
  const ocsf = json && !json.includes("\n") ? readOcsfLine(json) : undefined;
  if (ocsf && new TextEncoder().encode(json).length <= MAX_EGRESS_LINE_BYTES) {
    return { ...base, level: ocsf.level.toUpperCase(), target: "ocsf", message: json, fields: {} };
  }
  const where = `${event.host}:${event.port}`;
  return {
    ...base,
    level: event.decision === "allowed" ? "INFO" : "WARN",
    target: "egress",
    message: capLine(
      `${event.decision || "unknown"} ${where}${
        event.policy_name ? ` (rule ${event.policy_name})` : ""
      }`,
      MAX_EGRESS_LINE_BYTES,
    ),
    fields: {},
  };
}

/** Options of {@link EgressPolicies}. */
export interface EgressPoliciesOptions {
  store: Store;
  log: Logger;
  /** Appends a line to a sandbox's log ring. */
  appendLog(line: SandboxLogLine): void;
  /** A sandbox's stored state changed (its `current_policy_version`). */
  changed?(sandboxId: string): void;
  now?: () => number;
  /** Reconcile period while attached; default {@link EGRESS_RECONCILE_MS}. */
  reconcileMs?: number;
  /** Delay before re-opening an ended event stream; default {@link EGRESS_WATCH_RESTART_MS}. */
  watchRestartMs?: number;
}

/** Keeps the egress proxy's policies in line with the store (see the module docs). */
export class EgressPolicies {
  readonly #o: EgressPoliciesOptions;
  readonly #now: () => number;
  #control?: EgressControl;
  #cancelWatch?: () => void;
  #watchTimer?: ReturnType<typeof setTimeout>;
  #reconcileTimer?: ReturnType<typeof setInterval>;
  /** The apply running for each sandbox, and those that need another pass after it. */
  readonly #running = new Map<string, Promise<void>>();
  readonly #again = new Map<string, boolean>();
  #reconciling: Promise<void> = Promise.resolve();
  #closed = false;

  /** Creates it detached: revisions wait as PENDING until {@link attach}. */
  constructor(options: EgressPoliciesOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** Whether a proxy is attached. */
  get attached(): boolean {
    return this.#control !== undefined;
  }

  /**
   * Starts using a (re)started proxy: its events flow into the log rings
   * and it is reconciled now and every {@link EGRESS_RECONCILE_MS}.
   * Resolves once the first reconcile is done.
   */
  attach(control: EgressControl): Promise<void> {
    this.detach();
    if (this.#closed) return Promise.resolve();
    this.#control = control;
    this.#openWatch(control);
    this.#reconcileTimer = setInterval(
      () => this.reconcile(),
      this.#o.reconcileMs ?? EGRESS_RECONCILE_MS,
    );
    return this.reconcile();
  }

  /** Stops using the proxy (it went away); its control is closed. */
  detach(): void {
    const control = this.#control;
    this.#control = undefined;
    this.#cancelWatch?.();
    this.#cancelWatch = undefined;
    clearTimeout(this.#watchTimer);
    clearInterval(this.#reconcileTimer);
    control?.close();
  }

  /** Detaches for good and waits for running applies. */
  async close(): Promise<void> {
    this.#closed = true;
    this.detach();
    await Promise.allSettled([...this.#running.values(), this.#reconciling]);
  }

  /**
   * A new revision was stored for `sandboxId`: applies its newest PENDING
   * one (now, or after the apply running for it). Never rejects.
   */
  policyAdded(sandboxId: string): Promise<void> {
    return this.#schedule(sandboxId, false);
  }

  /**
   * Runs one apply pass for `sandboxId` after the one running for it, if
   * any: every apply of a sandbox goes through here, one at a time, and
   * each reads the store right before it, so the proxy never gets an older
   * version after a newer one. `force` re-applies a LOADED revision too
   * (a proxy that does not enforce it).
   */
  #schedule(sandboxId: string, force: boolean): Promise<void> {
    const running = this.#running.get(sandboxId);
    if (running) {
      this.#again.set(sandboxId, force || (this.#again.get(sandboxId) ?? false));
      return running;
    }
    const run = (async () => {
      let forced = force;
      while (this.#control) {
        const rev = (await this.#o.store.policiesToApply(sandboxId))[0];
        if (rev && (forced || rev.status === "POLICY_STATUS_PENDING")) await this.#apply(rev);
        if (!this.#again.has(sandboxId)) break;
        forced = this.#again.get(sandboxId)!;
        this.#again.delete(sandboxId);
      }
    })().catch((err) =>
      this.#o.log.warn("egress policy apply failed", {
        sandbox: sandboxId,
        error: errorMessage(err),
      })
    ).finally(() => {
      if (this.#running.get(sandboxId) === run) this.#running.delete(sandboxId);
    });
    this.#running.set(sandboxId, run);
    return run;
  }

  /** The sandbox is gone: the proxy forgets it (best effort; a reconcile catches up). */
  async sandboxDeleted(sandboxId: string): Promise<void> {
    const control = this.#control;
    if (!control) return;
    try {
      await control.remove(sandboxId);
    } catch (err) {
      this.#o.log.warn("egress proxy did not remove a sandbox; the next reconcile will", {
        sandbox: sandboxId,
        error: errorMessage(err),
      });
    }
  }

  /** Brings the attached proxy in line with the store (one at a time). Never rejects. */
  reconcile(): Promise<void> {
    this.#reconciling = this.#reconciling.then(() => this.#reconcileOnce()).catch((err) =>
      this.#o.log.warn("egress reconcile failed", { error: errorMessage(err) })
    );
    return this.#reconciling;
  }

  async #reconcileOnce(): Promise<void> {
    const control = this.#control;
    if (!control) return;
    const enforced = new Map((await control.list()).map((p) => [p.sandbox_id, p]));
    const wanted = await this.#o.store.policiesToApply();
    let applied = 0;
    for (const rev of wanted) {
      if (this.#control !== control) return;
      const now = enforced.get(rev.sandboxId);
      enforced.delete(rev.sandboxId);
      if (now && now.version === rev.version) {
        if (rev.status === "POLICY_STATUS_PENDING") {
          await this.#loaded(rev, now.loaded_at_ms);
        }
        continue;
      }
      await this.#schedule(rev.sandboxId, true);
      applied++;
    }
    let removed = 0;
    for (const id of enforced.keys()) {
      if (this.#control !== control) return;
      // A sandbox the store has no appliable policy for: deleted, or never had one.
      if (await this.#o.store.getSandbox(id)) continue;
      try {
        await control.remove(id);
        removed++;
      } catch (err) {
        this.#o.log.warn("egress proxy did not remove an unknown sandbox", {
          sandbox: id,
          error: errorMessage(err),
        });
      }
    }
    if (applied || removed) {
      this.#o.log.info("egress proxy reconciled", { applied, removed });
    }
  }

  /** Applies one revision; true when the proxy enforces it now. */
  async #apply(rev: PolicyRevisionRecord): Promise<boolean> {
    const control = this.#control;
    if (!control) return false;
    try {
      const res = await control.apply(rev.sandboxId, rev.version, rev.policy);
      await this.#loaded(rev, res.loaded_at_ms);
      return true;
    } catch (err) {
      if (err instanceof StatusError && err.code === Code.INVALID_ARGUMENT) {
        const message = capLine(err.message, 1024);
        if (await this.#o.store.markPolicyFailed(rev.sandboxId, rev.version, message)) {
          this.#sandboxLog(
            rev.sandboxId,
            "WARN",
            `policy version ${rev.version} was refused by the egress proxy: ${message}`,
          );
        }
        return false;
      }
      // The proxy is away or slow: the revision stays PENDING for the next reconcile.
      this.#o.log.warn("egress proxy did not apply a policy; it stays pending", {
        sandbox: rev.sandboxId,
        version: String(rev.version),
        error: errorMessage(err),
      });
      return false;
    }
  }

  async #loaded(rev: PolicyRevisionRecord, loadedAtMs: number): Promise<void> {
    const first = rev.status === "POLICY_STATUS_PENDING";
    if (
      !(await this.#o.store.markPolicyLoaded(rev.sandboxId, rev.version, loadedAtMs || this.#now()))
    ) {
      return;
    }
    if (first) this.#sandboxLog(rev.sandboxId, "INFO", `policy version ${rev.version} loaded`);
    this.#o.changed?.(rev.sandboxId);
  }

  #sandboxLog(sandboxId: string, level: string, message: string): void {
    this.#o.appendLog({
      sandbox_id: sandboxId,
      timestamp_ms: this.#now(),
      level,
      target: "openshell_gateway",
      message,
      source: "gateway",
      fields: {},
    });
  }

  #openWatch(control: EgressControl): void {
    this.#cancelWatch = control.watch({
      event: (e) => {
        this.#onEvent(e).catch((err) =>
          this.#o.log.debug("egress event dropped", { error: errorMessage(err) })
        );
      },
      end: (err) => {
        if (this.#control !== control) return;
        this.#o.log.warn("egress event stream ended; reopening", {
          error: err ? errorMessage(err) : "stream closed",
        });
        this.#watchTimer = setTimeout(() => {
          if (this.#control === control) this.#openWatch(control);
        }, this.#o.watchRestartMs ?? EGRESS_WATCH_RESTART_MS);
      },
    });
  }

  async #onEvent(event: EgressEvent): Promise<void> {
    // Only sandboxes the store knows get lines (a log ring per unknown id would grow unbounded).
    if (!event.sandbox_id || !(await this.#o.store.getSandbox(event.sandbox_id))) return;
    const now = this.#now();
    if (event.dropped > 0) {
      this.#o.appendLog({
        sandbox_id: event.sandbox_id,
        timestamp_ms: event.time_ms || now,
        level: "WARN",
        target: "egress",
        message: `${event.dropped} egress events dropped by the proxy's rate limit`,
        source: "egress",
        fields: {},
      });
    }
    this.#o.appendLog(egressLogLine(event, now));
  }
}
