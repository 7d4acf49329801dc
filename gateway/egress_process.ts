/**
 * The egress proxy process (`openshell-egress`): the gateway starts it,
 * waits until its control socket answers, attaches it to
 * {@link EgressPolicies}, and starts it again (with a growing delay) when
 * it exits. Stopping sends SIGTERM, then SIGKILL; the proxy also watches
 * its parent, so a killed gateway leaves no proxy behind.
 *
 * @module
 */
import { Backoff, type BackoffOptions, sleep } from "../core/backoff.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import { type ChildHandle, removeSocket, spawnChild, waitUntilAnswering } from "./child_process.ts";
import { type EgressControl, type EgressPolicies, GrpcEgressControl } from "./egress.ts";

/** Restart delays of an egress proxy that exited. */
export const EGRESS_RESTART_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 30_000 };
/** A proxy that ran this long before it exited is restarted at once (the delays start over). */
export const EGRESS_HEALTHY_MS = 30_000;

/** Options of {@link startEgressProcess}. */
export interface EgressProcessOptions {
  /** The `openshell-egress` executable. */
  binary: string;
  /** Its arguments. */
  args: string[];
  /** Its control socket (`<egress-state>/control.sock`). */
  controlSocket: string;
  policies: EgressPolicies;
  log: Logger;
  /** How long one start may take until `ListPolicies` answers; default 30 s. */
  readyTimeoutMs?: number;
  /** Aborting while the first start waits kills it and rejects. */
  signal?: AbortSignal;
  /** Restart delays; default {@link EGRESS_RESTART_BACKOFF}. */
  backoff?: BackoffOptions;
  /** Makes the control client (tests); default {@link GrpcEgressControl}. */
  connect?: (socketPath: string) => EgressControl;
}

/** The running egress proxy, restarted whenever it exits. */
export interface EgressProcess {
  /** Pid of the current process. */
  readonly pid: number;
  /** How many times it was started (1 until its first restart). */
  readonly starts: number;
  /** Stops it for good (SIGTERM, then SIGKILL after 10 s). */
  stop(): Promise<void>;
}

async function startOnce(o: EgressProcessOptions, signal?: AbortSignal): Promise<ChildHandle> {
  await removeSocket(o.controlSocket);
  const child = spawnChild({
    binary: o.binary,
    args: o.args,
    what: "egress proxy",
    component: "egress",
    log: o.log,
  });
  const control = (o.connect ?? ((p) => new GrpcEgressControl(`unix:${p}`)))(o.controlSocket);
  try {
    await waitUntilAnswering(child, () => control.list(), {
      what: "egress proxy",
      probeName: "ListPolicies",
      timeoutMs: o.readyTimeoutMs,
      signal,
    });
  } catch (err) {
    control.close();
    throw err;
  }
  // Reconciling can wait for the store and the proxy; the start does not.
  o.policies.attach(control);
  return child;
}

/**
 * Starts the egress proxy and keeps it running: when it exits, its
 * policies are detached (new revisions wait as PENDING) and it is started
 * again after a growing delay, then reconciled. The first start must
 * succeed (or this rejects, leaving nothing running).
 */
export async function startEgressProcess(o: EgressProcessOptions): Promise<EgressProcess> {
  let child = await startOnce(o, o.signal);
  let starts = 1;
  let stopping = false;
  const stopSignal = new AbortController();
  const backoff = new Backoff(o.backoff ?? EGRESS_RESTART_BACKOFF);
  o.log.info("egress proxy ready", { pid: String(child.pid) });

  const supervise = (async () => {
    while (!stopping) {
      const startedAt = Date.now();
      const code = await child.exited;
      if (stopping) return;
      o.policies.detach();
      if (Date.now() - startedAt >= EGRESS_HEALTHY_MS) backoff.reset();
      let delay = backoff.next();
      o.log.error(
        `egress proxy exited with status ${code}; sandboxes have no network until it is back ` +
          `(restarting in ${delay} ms)`,
      );
      while (!stopping) {
        try {
          await sleep(delay, stopSignal.signal);
        } catch {
          return;
        }
        try {
          child = await startOnce(o, stopSignal.signal);
          starts++;
          o.log.info("egress proxy restarted", { pid: String(child.pid), starts: String(starts) });
          break;
        } catch (err) {
          if (stopping) return;
          delay = backoff.next();
          o.log.error(
            `egress proxy did not start again: ${errorMessage(err)} (next try in ${delay} ms)`,
          );
        }
      }
    }
  })();

  return {
    get pid() {
      return child.pid;
    },
    get starts() {
      return starts;
    },
    async stop() {
      stopping = true;
      stopSignal.abort();
      await o.policies.close();
      await child.stop();
      await supervise;
      await removeSocket(o.controlSocket).catch(() => {});
    },
  };
}
