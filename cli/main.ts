/**
 * `openshell`, the CLI: parses the command line, runs the command, and
 * turns every failure into one `error: …` line on stderr with a non-zero
 * exit status (a stack trace only with `--debug`).
 *
 * @module
 */
import { denoEnv } from "../core/flags.ts";
import { VERSION } from "../core/version.ts";
import { commandHelp, type Invocation, parseCommandLine, UsageError } from "./args.ts";
import type { Context, StdStreams } from "./context.ts";
import { CliError, EXIT_INTERRUPTED } from "./errors.ts";
import { colorEnabled, createStyle } from "./output.ts";

/** A second Ctrl-C later than this after the first forces the exit. */
const FORCE_AFTER_MS = 500;

/** Exit status when stdout's reader went away (128 + SIGPIPE), reported silently. */
export const EXIT_BROKEN_PIPE = 141;

/** Exit status of a command line mistake. */
export const EXIT_USAGE = 2;

/**
 * The one-line report of a failure and the exit status that goes with it.
 * A usage error points at the help of its command, or of `command` (the
 * one running) when it names none: an option value checked while the
 * command runs is listed on that command's help page, not the top level's.
 */
export function describeFailure(
  err: unknown,
  command = "",
): { message: string; exitCode: number } {
  if (err instanceof UsageError) {
    const id = err.command || command;
    const hint = !err.seeHelp || err.message.includes("--help")
      ? ""
      : ` (see 'openshell${id ? ` ${id}` : ""} --help')`;
    return { message: `${err.message}${hint}`, exitCode: EXIT_USAGE };
  }
  if (err instanceof CliError) return { message: err.message, exitCode: err.exitCode };
  if (err instanceof Deno.errors.NotCapable) {
    return { message: `not permitted: ${firstLine(err.message)}`, exitCode: 1 };
  }
  if (err instanceof Deno.errors.PermissionDenied) {
    return { message: `permission denied: ${firstLine(err.message)}`, exitCode: 1 };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { message: firstLine(message) || "unexpected failure", exitCode: 1 };
}

function firstLine(text: string): string {
  return text.split("\n")[0].trim();
}

/** Options of {@link main}. */
export interface MainOptions {
  /** Environment reader; default the process environment. */
  env?: (name: string) => string | undefined;
  /** Standard streams; default the process's. */
  streams?: StdStreams;
  /** Close the gateway client before returning (tests); a CLI process just exits. */
  closeClient?: boolean;
  /** Listen for SIGINT; default true. */
  signals?: boolean;
}

/** Writers of the standard streams: stderr synchronously and never failing, stdout in full. */
interface Writers {
  err(text: string): void;
  out(text: string): Promise<void>;
}

function writersOf(streams: StdStreams): Writers {
  const enc = new TextEncoder();
  return {
    err: (text) => {
      const bytes = enc.encode(text);
      let off = 0;
      try {
        while (off < bytes.length) off += streams.stderr.writeSync(bytes.subarray(off));
      } catch {
        // stderr closed
      }
    },
    out: async (text) => {
      const bytes = enc.encode(text);
      let off = 0;
      while (off < bytes.length) off += await streams.stdout.write(bytes.subarray(off));
    },
  };
}

/**
 * The command's handler and its context. Loaded only for a command to run:
 * `--version` and help need neither.
 */
async function loadCommand(
  invocation: Invocation,
  o: { env: (name: string) => string | undefined; streams: StdStreams },
): Promise<{ context: Context; handler: (ctx: Context) => Promise<number> }> {
  const [{ Context }, { HANDLERS }] = await Promise.all([
    import("./context.ts"),
    import("./commands/mod.ts"),
  ]);
  const handler = await HANDLERS[invocation.spec.id]();
  return { context: new Context({ invocation, env: o.env, streams: o.streams }), handler };
}

/**
 * Ctrl-C raises the context's interrupt; the process exits at once when the
 * command does not handle interrupts, or on a second Ctrl-C more than
 * {@link FORCE_AFTER_MS} after the first. Returns the listener (to remove).
 */
function listenForSigint(context: Context, writeErr: (text: string) => void): () => void {
  let first = 0;
  const onSigint = () => {
    // A second Ctrl-C forces the exit; one arriving right after the first
    // is the same keypress delivered twice (terminal + a forwarding launcher).
    const now = Date.now();
    const again = first !== 0 && now - first > FORCE_AFTER_MS;
    if (first === 0) first = now;
    context.raiseInterrupt();
    if (!context.handlesInterrupts || again) {
      writeErr("\n");
      Deno.exit(EXIT_INTERRUPTED);
    }
  };
  Deno.addSignalListener("SIGINT", onSigint);
  return onSigint;
}

/**
 * Reports a failure on stderr in one line (`error: …`, or `Cancelled.`;
 * the stack too with `--debug`); returns the exit status.
 */
function reportFailure(
  err: unknown,
  o: {
    command?: string;
    debug: boolean;
    env: (name: string) => string | undefined;
    streams: StdStreams;
    writeErr: (text: string) => void;
  },
): number {
  // Output piped into a reader that stopped (`openshell sandbox list | head -1`).
  if (err instanceof Deno.errors.BrokenPipe) return EXIT_BROKEN_PIPE;
  const { message, exitCode } = describeFailure(err, o.command);
  const style = createStyle(colorEnabled({
    isTerminal: o.streams.stderr.isTerminal(),
    noColor: o.env("NO_COLOR"),
    term: o.env("TERM"),
  }));
  if (exitCode === EXIT_INTERRUPTED && message === "cancelled") {
    o.writeErr(`${style.yellow("Cancelled.")}\n`);
  } else {
    o.writeErr(`${style.red("error:")} ${message}\n`);
  }
  if (o.debug && err instanceof Error && err.stack) o.writeErr(`${err.stack}\n`);
  return exitCode;
}

/** Runs the CLI with `argv` (without the program name); returns the exit status. */
export async function main(argv: readonly string[], options: MainOptions = {}): Promise<number> {
  const env = options.env ?? denoEnv;
  const streams: StdStreams = options.streams ?? {
    stdin: Deno.stdin,
    stdout: Deno.stdout,
    stderr: Deno.stderr,
  };
  const write = writersOf(streams);
  let ctx: Context | undefined;
  let onSigint: (() => void) | undefined;
  try {
    const parsed = parseCommandLine(argv, env);
    if (parsed.kind !== "run") {
      await write.out(parsed.kind === "version" ? `openshell ${VERSION}\n` : parsed.text);
      return 0;
    }
    const inv = parsed.invocation;
    if (inv.values.help) {
      await write.out(commandHelp(inv.spec));
      return 0;
    }
    const { context, handler } = await loadCommand(inv, { env, streams });
    ctx = context;
    if (options.signals !== false) onSigint = listenForSigint(context, write.err);
    return await handler(context);
  } catch (err) {
    return reportFailure(err, {
      command: ctx?.invocation.spec.id,
      debug: argv.includes("--debug"),
      env,
      streams,
      writeErr: write.err,
    });
  } finally {
    if (onSigint) Deno.removeSignalListener("SIGINT", onSigint);
    if (options.closeClient) ctx?.close();
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  // Exit without closing the gateway channel: a GOAWAY after streaming calls
  // can crash a Deno grpc-js server, and the process ends anyway.
  Deno.exit(code);
}
