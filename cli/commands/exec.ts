/**
 * `openshell sandbox exec [NAME] [--workdir D] [--env K=V]… [--tty]
 * [--timeout S] -- CMD…`: the `ExecSandbox` RPC with streamed output.
 *
 * @module
 */
import { Code } from "../../core/status.ts";
import { envOption } from "../args.ts";
import { GatewayError } from "../client.ts";
import type { Context } from "../context.ts";
import { CliError, EXIT_INTERRUPTED } from "../errors.ts";
import { lookupSandbox, notReadyMessage, sandboxNameArg } from "./common.ts";

/** Largest stdin forwarded (it travels in one request). */
export const MAX_STDIN_BYTES = 4 * 1024 * 1024;

/** Reads all of a non-terminal stdin, refusing more than {@link MAX_STDIN_BYTES}. */
export async function readStdin(
  stdin: { read(p: Uint8Array): Promise<number | null> },
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  const buf = new Uint8Array(64 * 1024);
  for (let n = await stdin.read(buf); n !== null; n = await stdin.read(buf)) {
    total += n;
    if (total > MAX_STDIN_BYTES) {
      throw new CliError(
        "stdin is larger than 4 MiB; copy large data with scp (see 'openshell sandbox ssh-config')",
      );
    }
    parts.push(buf.slice(0, n));
  }
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Exit status the gateway reports when `--timeout` stopped the command (as `timeout(1)`). */
export const EXIT_TIMED_OUT = 124;

/**
 * The line that says `--timeout` stopped the command, or `undefined` when
 * the command ended on its own: only exit status 124 that arrived once the
 * timeout had passed (a command may exit 124 by itself, earlier).
 */
export function timeoutMessage(
  exitCode: number,
  timeoutS: number,
  elapsedMs: number,
): string | undefined {
  if (exitCode !== EXIT_TIMED_OUT || timeoutS <= 0 || elapsedMs < timeoutS * 1000) {
    return undefined;
  }
  return `the command did not finish within ${timeoutS} s (--timeout) and was stopped`;
}

/** Runs `sandbox exec`; returns the remote exit status. */
export async function sandboxExecCommand(ctx: Context): Promise<number> {
  const environment = envOption(ctx.list("env"));
  const timeout = ctx.num("timeout") ?? 0;
  const workdir = ctx.str("workdir") ?? "";
  const sandbox = await lookupSandbox(ctx, await sandboxNameArg(ctx));
  const stdin = ctx.streams.stdin.isTerminal()
    ? new Uint8Array(0)
    : await readStdin(ctx.streams.stdin);
  const client = await ctx.client();
  ctx.handleInterrupts();
  const started = performance.now();
  const stream = client.execSandbox({
    sandbox_id: sandbox.id,
    command: ctx.invocation.trailing,
    workdir,
    environment,
    timeout_seconds: timeout,
    stdin,
    tty: ctx.flag("tty"),
  });
  let interrupted = false;
  const onInterrupt = () => {
    interrupted = true;
    stream.cancel();
  };
  ctx.interrupt.addEventListener("abort", onInterrupt, { once: true });
  let exitCode: number | undefined;
  try {
    for await (const event of stream) {
      if (event.payload === "stdout") await ctx.out(event.stdout.data);
      else if (event.payload === "stderr") writeStderr(ctx, event.stderr.data);
      else if (event.payload === "exit") exitCode = event.exit.exit_code;
    }
  } catch (e) {
    if (e instanceof GatewayError && e.code === Code.FAILED_PRECONDITION) {
      const current = await client.getSandbox(sandbox.name).catch(() => sandbox);
      throw new CliError(notReadyMessage(current, e.message));
    }
    throw e;
  } finally {
    ctx.interrupt.removeEventListener("abort", onInterrupt);
  }
  if (interrupted) return EXIT_INTERRUPTED;
  if (exitCode === undefined) {
    throw new CliError("the command's exit status never arrived (the stream ended early)");
  }
  const timedOut = timeoutMessage(exitCode, timeout, performance.now() - started);
  if (timedOut) throw new CliError(timedOut, EXIT_TIMED_OUT);
  return exitCode >= 0 && exitCode <= 255 ? exitCode : 1;
}

function writeStderr(ctx: Context, data: Uint8Array): void {
  let off = 0;
  try {
    while (off < data.length) off += ctx.streams.stderr.writeSync(data.subarray(off));
  } catch {
    // stderr closed
  }
}
