/**
 * `openshell`, the CLI: parses the command line, runs the command, and
 * turns every failure into one `error: …` line on stderr with a non-zero
 * exit status (a stack trace only with `--debug`).
 *
 * @module
 */
import { VERSION } from "../core/version.ts";
import { commandHelp, parseCommandLine, UsageError } from "./args.ts";
import type { Context, StdStreams } from "./context.ts";
import { readEnv } from "./env.ts";
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

/** Runs the CLI with `argv` (without the program name); returns the exit status. */
export async function main(argv: readonly string[], options: MainOptions = {}): Promise<number> {
  const env = options.env ?? readEnv;
  const streams: StdStreams = options.streams ?? {
    stdin: Deno.stdin,
    stdout: Deno.stdout,
    stderr: Deno.stderr,
  };
  const debug = argv.includes("--debug");
  const enc = new TextEncoder();
  const writeErr = (text: string) => {
    const bytes = enc.encode(text);
    let off = 0;
    try {
      while (off < bytes.length) off += streams.stderr.writeSync(bytes.subarray(off));
    } catch {
      // stderr closed
    }
  };
  const writeOut = async (text: string) => {
    const bytes = enc.encode(text);
    let off = 0;
    while (off < bytes.length) off += await streams.stdout.write(bytes.subarray(off));
  };
  let ctx: Context | undefined;
  let onSigint: (() => void) | undefined;
  try {
    const parsed = parseCommandLine(argv, env);
    if (parsed.kind === "version") {
      await writeOut(`openshell ${VERSION}\n`);
      return 0;
    }
    if (parsed.kind === "help") {
      await writeOut(parsed.text);
      return 0;
    }
    const inv = parsed.invocation;
    if (inv.values.help) {
      await writeOut(commandHelp(inv.spec));
      return 0;
    }
    // Loaded only for a command to run: `--version` and help need neither.
    const [{ Context }, { HANDLERS }] = await Promise.all([
      import("./context.ts"),
      import("./commands/mod.ts"),
    ]);
    const handler = await HANDLERS[inv.spec.id]();
    const context = new Context({ invocation: inv, env, streams });
    ctx = context;
    if (options.signals !== false) {
      let first = 0;
      onSigint = () => {
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
    }
    return await handler(context);
  } catch (err) {
    // Output piped into a reader that stopped (`openshell sandbox list | head -1`).
    if (err instanceof Deno.errors.BrokenPipe) return EXIT_BROKEN_PIPE;
    const { message, exitCode } = describeFailure(err, ctx?.invocation.spec.id);
    const style = createStyle(colorEnabled({
      isTerminal: streams.stderr.isTerminal(),
      noColor: env("NO_COLOR"),
      term: env("TERM"),
    }));
    if (exitCode === EXIT_INTERRUPTED && message === "cancelled") {
      writeErr(`${style.yellow("Cancelled.")}\n`);
    } else {
      writeErr(`${style.red("error:")} ${message}\n`);
    }
    if (debug && err instanceof Error && err.stack) writeErr(`${err.stack}\n`);
    return exitCode;
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
