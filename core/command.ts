/**
 * Runs a program to completion and collects its output as text: what the
 * test fixtures, the end-to-end runs and the benchmarks do with OpenSSH,
 * the installed commands and other tools.
 *
 * @module
 */

/** How a program ended and what it printed. */
export interface CommandResult {
  /** Exit status (128 + the signal number when a signal ended it). */
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link runCommand}. */
export interface RunCommandOptions {
  /** Environment variables: added to this process's, or the only ones with `clearEnv`. */
  env?: Record<string, string>;
  /** Start from an empty environment (default false). */
  clearEnv?: boolean;
  /** Working directory. */
  cwd?: string;
  /** Text written to the program's stdin, which is then closed (default: no stdin). */
  stdin?: string;
  /** The program is killed (SIGKILL) after this long; default: no limit. */
  timeoutMs?: number;
}

/** Runs `argv[0]` with the rest of `argv` as arguments and waits for it to end. */
export async function runCommand(
  argv: readonly string[],
  options: RunCommandOptions = {},
): Promise<CommandResult> {
  const child = new Deno.Command(argv[0], {
    args: argv.slice(1),
    ...(options.env ? { env: options.env } : {}),
    clearEnv: options.clearEnv ?? false,
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, options.timeoutMs);
  try {
    if (options.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(options.stdin)).catch(() => {});
      await w.close().catch(() => {});
    }
    const out = await child.output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } finally {
    clearTimeout(timer);
  }
}
