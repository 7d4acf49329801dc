/**
 * Dev launchers: start a role through `deno run` with exactly the flags its
 * compiled binary gets (see `grants.ts`), forwarding signals and the exit
 * status. Each role's `launch.ts` derives the grant parameters from the
 * role's own flags and calls {@link launchRole}.
 *
 * @module
 */
import { type Grants, type Role, runArgs } from "./grants.ts";

/** Absolute path of the repository root. */
export const REPO_ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** `deno task X -- a b` passes the `--` through; drop it so flag parsing sees `a b`. */
export function stripTaskSeparator(args: readonly string[]): string[] {
  return args[0] === "--" ? args.slice(1) : [...args];
}

/** The full command (executable first) that runs `role` with `grants` and `args`. */
export function roleCommand(role: Role, grants: Grants, args: readonly string[]): string[] {
  return [Deno.execPath(), ...runArgs(role, grants, { root: REPO_ROOT, args })];
}

/**
 * Runs `role` as a child with its grants, forwards SIGINT/SIGTERM to it and
 * exits with its status (128 + signal number when it died of a signal).
 */
export async function launchRole(
  role: Role,
  grants: Grants,
  args: readonly string[],
): Promise<never> {
  const [exe, ...rest] = roleCommand(role, grants, args);
  const child = new Deno.Command(exe, {
    args: rest,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn();
  const forward = (signal: Deno.Signal) => () => {
    try {
      child.kill(signal);
    } catch {
      // already gone
    }
  };
  const handlers: [Deno.Signal, () => void][] = [
    ["SIGINT", forward("SIGINT")],
    ["SIGTERM", forward("SIGTERM")],
  ];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  const status = await child.status;
  for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  const signals: Record<string, number> = { SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  Deno.exit(status.signal ? 128 + (signals[status.signal] ?? 1) : status.code);
}
