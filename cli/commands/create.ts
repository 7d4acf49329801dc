/**
 * `openshell sandbox create [--name N] [--no-keep] [--timeout S] [--cpus N]
 * [--memory SIZE] [--disk-gib N] [--policy FILE] [--allow HOST[:PORT]]…
 * [--preset NAME]… [-- CMD…]`: create, follow the provisioning progress
 * until READY, then run CMD (or a shell) over OpenSSH.
 *
 * The sizes go in `spec.template.resources` as upstream's Kubernetes-style
 * limits: `{limits: {cpu, memory, "ephemeral-storage"}}` (see
 * `core/resources.ts`); the driver checks them against its host.
 *
 * @module
 */
import type {
  Sandbox,
  SandboxLogLine,
  SandboxStreamEvent,
  SandboxTemplate,
  Wire,
} from "../../core/protocol.ts";
import { limitsStruct, parseCpu, ResourceError } from "../../core/resources.ts";
import { imageNameProblem } from "../../core/images.ts";
import { envOption, UsageError } from "../args.ts";
import { Code } from "../../core/status.ts";
import { type GatewayClient, GatewayError, type ServerStream } from "../client.ts";
import type { Context } from "../context.ts";
import { CliError, EXIT_INTERRUPTED } from "../errors.ts";
import { phaseLabel, phaseReason, readyCondition } from "../output.ts";
import { Progress } from "../progress.ts";
import { forgetHostKey, inspectHint, nameTakenMessage, rememberSandbox } from "./common.ts";
import { formatLogLine } from "./sandbox.ts";
import { runSsh, sessionAccess } from "./ssh_session.ts";

/** Default seconds to wait for READY (upstream's CLI default). */
export const DEFAULT_PROVISION_TIMEOUT_S = 300;
/** Log lines shown when provisioning fails. */
const FAILURE_TAIL_LINES = 20;

function provisionTimeout(ctx: Context): number {
  return ctx.num("timeout") ?? DEFAULT_PROVISION_TIMEOUT_S;
}

/** Label, detail and change key of a phase: a new message under the same reason is no news. */
function phaseText(sandbox: Sandbox): [string, string, string] {
  const label = phaseLabel(sandbox.phase);
  return [label, phaseReason(sandbox), `${label}\n${readyCondition(sandbox)?.reason ?? ""}`];
}

async function printFailureLogs(
  ctx: Context,
  client: GatewayClient,
  sandbox: Sandbox,
  seen: SandboxLogLine[],
): Promise<void> {
  let lines = seen.slice(-FAILURE_TAIL_LINES);
  try {
    const res = await client.getSandboxLogs({ sandbox_id: sandbox.id, lines: FAILURE_TAIL_LINES });
    if (res.logs.length) lines = res.logs;
  } catch {
    // Fall back to what the watch delivered.
  }
  if (!lines.length) return;
  ctx.err(`Last ${lines.length} log lines of ${sandbox.name}:\n`);
  for (const line of lines) ctx.err(`  ${formatLogLine(line, ctx.errStyle)}`);
}

/** Options of {@link waitUntilReady}. */
export interface WaitOptions {
  /** Seconds to wait for READY. */
  timeoutS: number;
  /** The sandbox stays when this fails (the error says so and how to inspect it); default true. */
  keep?: boolean;
}

/** `; it is kept: see …, delete it with …` for a sandbox that stays after a failed create. */
function keptNote(name: string, keep: boolean): string {
  return keep ? `; it is kept: ${inspectHint(name)}` : "";
}

/** Why this side cancelled a watch, if it did. */
type CancelReason = "timeout" | "interrupt" | undefined;

/**
 * Cancels `stream` after `timeoutS` or on Ctrl-C (at once when `interrupt`
 * already fired); `reason()` says which came first, `dispose()` removes the
 * timer and the listener.
 */
function cancelOnTimeoutOrInterrupt(
  stream: ServerStream<unknown>,
  o: { timeoutS: number; interrupt: AbortSignal },
): { reason(): CancelReason; dispose(): void } {
  let reason: CancelReason;
  const timer = setTimeout(() => {
    reason ??= "timeout";
    stream.cancel();
  }, o.timeoutS * 1000);
  const onInterrupt = () => {
    reason ??= "interrupt";
    stream.cancel();
  };
  o.interrupt.addEventListener("abort", onInterrupt, { once: true });
  if (o.interrupt.aborted) onInterrupt();
  return {
    reason: () => reason,
    dispose: () => {
      clearTimeout(timer);
      o.interrupt.removeEventListener("abort", onInterrupt);
    },
  };
}

/** What a watch has delivered: the sandbox as last seen and its recent log lines. */
interface WatchState {
  current: Sandbox;
  logs: SandboxLogLine[];
}

/**
 * Follows a sandbox's watch, showing its progress: resolves with the
 * sandbox once READY, throws a {@link CliError} once it is ERROR (after its
 * last log lines) or being deleted, and resolves undefined when the stream
 * ends first.
 */
async function followWatch(
  ctx: Context,
  stream: ServerStream<SandboxStreamEvent>,
  o: { client: GatewayClient; state: WatchState; progress: Progress; keep: boolean },
): Promise<Sandbox | undefined> {
  const { state, progress } = o;
  for await (const event of stream) {
    if (event.payload === "log") {
      state.logs.push(event.log);
      if (state.logs.length > 200) state.logs.splice(0, state.logs.length - 200);
    } else if (event.payload === "event") {
      const e = event.event;
      progress.note(`${e.type || "Event"}: ${[e.reason, e.message].filter(Boolean).join(": ")}`);
    } else if (event.payload === "warning") {
      progress.note(`warning: ${event.warning.message}`);
    } else if (event.payload === "sandbox") {
      const current = state.current = event.sandbox;
      if (current.phase !== "SANDBOX_PHASE_READY") progress.phase(...phaseText(current));
      if (current.phase === "SANDBOX_PHASE_READY") {
        progress.finish(`Sandbox ${ctx.errStyle.cyan(current.name)} is ready`);
        stream.cancel();
        return current;
      }
      if (current.phase === "SANDBOX_PHASE_ERROR") {
        progress.stop();
        await printFailureLogs(ctx, o.client, current, state.logs);
        const reason = phaseReason(current) || "no reason given";
        throw new CliError(
          `sandbox "${current.name}" failed (${reason})${keptNote(current.name, o.keep)}`,
        );
      }
      if (current.phase === "SANDBOX_PHASE_DELETING") {
        throw new CliError(`sandbox "${current.name}" is being deleted`);
      }
    }
  }
  return undefined;
}

/**
 * The outcome of a watch that ended before READY or ERROR: cancelled by
 * Ctrl-C or the timeout (a {@link CliError}, after the last log lines for a
 * timeout), or ended by the gateway (READY after all, deleted, or a stream
 * that broke).
 */
async function watchEnded(
  ctx: Context,
  o: {
    client: GatewayClient;
    state: WatchState;
    cancelled: CancelReason;
    timeoutS: number;
    keep: boolean;
  },
): Promise<Sandbox> {
  const { client, state: { current, logs } } = o;
  if (o.cancelled === "interrupt") throw new CliError("cancelled", EXIT_INTERRUPTED);
  if (o.cancelled === "timeout") {
    await printFailureLogs(ctx, client, current, logs);
    throw new CliError(
      `sandbox "${current.name}" is not ready after ${o.timeoutS} s (${phaseLabel(current.phase)})${
        keptNote(current.name, o.keep)
      }`,
    );
  }
  // The gateway ended the watch: the sandbox is gone, or the stream broke.
  const now = await client.getSandbox(current.name).catch(() => undefined);
  if (now?.phase === "SANDBOX_PHASE_READY") return now;
  if (!now || now.id !== current.id) {
    throw new CliError(`sandbox "${current.name}" was deleted while provisioning`);
  }
  throw new CliError(
    `the gateway stopped reporting progress of sandbox "${current.name}"${
      keptNote(current.name, o.keep)
    }`,
  );
}

/** Follows `sandbox` until READY; throws a {@link CliError} on ERROR, timeout or Ctrl-C. */
export async function waitUntilReady(
  ctx: Context,
  sandbox: Sandbox,
  options: WaitOptions,
): Promise<Sandbox> {
  const keep = options.keep ?? true;
  const client = await ctx.client();
  const progress = new Progress({
    write: (t) => ctx.err(t),
    live: ctx.streams.stderr.isTerminal(),
    style: ctx.errStyle,
  });
  const stream = client.watchSandbox({
    id: sandbox.id,
    follow_status: true,
    follow_logs: true,
    follow_events: true,
    log_tail_lines: FAILURE_TAIL_LINES,
  });
  const cancel = cancelOnTimeoutOrInterrupt(stream, {
    timeoutS: options.timeoutS,
    interrupt: ctx.interrupt,
  });
  const state: WatchState = { current: sandbox, logs: [] };
  progress.phase(...phaseText(sandbox));
  try {
    const ready = await followWatch(ctx, stream, { client, state, progress, keep });
    if (ready) return ready;
  } finally {
    cancel.dispose();
    progress.stop();
  }
  return await watchEnded(ctx, {
    client,
    state,
    cancelled: cancel.reason(),
    timeoutS: options.timeoutS,
    keep,
  });
}

/**
 * The `template` of `--cpus`, `--memory` and `--disk-gib` (undefined when
 * none is given); a {@link UsageError} for a malformed value.
 */
export function resourcesTemplate(flags: {
  cpus?: string;
  memory?: string;
  /** Already checked by the option's declaration. */
  diskGib?: number;
}): Wire<SandboxTemplate> | undefined {
  const disk = flags.diskGib;
  try {
    if (flags.cpus !== undefined) parseCpu(flags.cpus, "--cpus");
    const resources = limitsStruct({
      cpu: flags.cpus,
      memory: flags.memory,
      disk: disk !== undefined ? `${disk}Gi` : undefined,
    });
    return resources ? { resources } : undefined;
  } catch (err) {
    if (err instanceof ResourceError) {
      throw new UsageError(err.message.replace(/^(cpu|memory)\b/, "--$1"), "sandbox create");
    }
    throw err;
  }
}

/** Runs `sandbox create`; returns CMD's (or the shell's) exit status. */
export async function sandboxCreateCommand(ctx: Context): Promise<number> {
  const timeoutS = provisionTimeout(ctx);
  const environment = envOption(ctx.list("env"));
  const sized = resourcesTemplate({
    cpus: ctx.str("cpus"),
    memory: ctx.str("memory"),
    diskGib: ctx.num("disk-gib"),
  });
  const image = ctx.str("image");
  if (image !== undefined) {
    const problem = imageNameProblem(image, { allowDefault: true });
    if (problem) throw new UsageError(`--image: ${problem}`, "sandbox create");
  }
  const template = image ? { ...sized, image } : sized;
  // The YAML parser loads only for a create that sets a policy.
  const policy = ctx.str("policy") !== undefined || ctx.list("allow").length > 0 ||
      ctx.list("preset").length > 0
    ? await (await import("./policy.ts")).policyFromFlags(ctx)
    : undefined;
  const keep = !ctx.flag("no-keep");
  const command = ctx.invocation.trailing;
  const client = await ctx.client();
  ctx.handleInterrupts();
  const name = ctx.str("name") ?? "";
  let sandbox: Sandbox;
  try {
    sandbox = await client.createSandbox({
      name,
      spec: {
        environment,
        ...(template ? { template } : {}),
        ...(policy ? { policy } : {}),
      },
    });
  } catch (e) {
    if (e instanceof GatewayError && e.code === Code.ALREADY_EXISTS && name) {
      throw new CliError(nameTakenMessage(name));
    }
    throw e;
  }
  ctx.err(`Created sandbox: ${ctx.errStyle.cyan(sandbox.name)}\n`);
  if (keep) await rememberSandbox(ctx, sandbox.name);
  try {
    const ready = await waitUntilReady(ctx, sandbox, { timeoutS, keep });
    if (ctx.interrupt.aborted) throw new CliError("cancelled", EXIT_INTERRUPTED);
    const access = await sessionAccess(ctx, ready);
    const terminal = ctx.streams.stdin.isTerminal() && ctx.streams.stdout.isTerminal();
    return await runSsh(
      ctx,
      access,
      command.length ? { command, tty: terminal } : { tty: terminal },
    );
  } catch (e) {
    if (keep && e instanceof CliError && e.exitCode === EXIT_INTERRUPTED) {
      ctx.err(
        `Sandbox ${sandbox.name} is kept; delete it with 'openshell sandbox delete ${sandbox.name}'.\n`,
      );
    }
    throw e;
  } finally {
    if (!keep) {
      try {
        await client.deleteSandbox(sandbox.name);
        await forgetHostKey(ctx, sandbox.id);
        ctx.err(`Deleted sandbox ${sandbox.name}\n`);
      } catch (e) {
        ctx.err(`warning: could not delete sandbox ${sandbox.name}: ${(e as Error).message}\n`);
      }
    }
  }
}
