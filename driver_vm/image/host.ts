/**
 * Host helpers of the image tasks: running commands, hashing, the cache
 * directory. The host packages the VM runtime needs are in
 * `core/host_setup.ts`.
 *
 * @module
 */
import { vmCacheRoot } from "../../core/paths.ts";

/** Result of {@link run}. */
export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@link run}. */
export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Let the child write to our stdout/stderr instead of capturing. */
  inherit?: boolean;
}

/** Runs a command to completion; never throws for a non-zero exit (only when it cannot start). */
export async function run(
  cmd: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<RunResult> {
  const out = await new Deno.Command(cmd, {
    args: [...args],
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: options.inherit ? "inherit" : "piped",
    stderr: options.inherit ? "inherit" : "piped",
  }).output();
  const dec = new TextDecoder();
  return {
    code: out.code,
    stdout: options.inherit ? "" : dec.decode(out.stdout),
    stderr: options.inherit ? "" : dec.decode(out.stderr),
  };
}

/** Runs a command and returns its stdout; throws with its stderr on failure. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  options: RunOptions = {},
): Promise<string> {
  let res: RunResult;
  try {
    res = await run(cmd, args, options);
  } catch (err) {
    throw new Error(`cannot run ${cmd}: ${(err as Error).message}`);
  }
  if (res.code !== 0) {
    const detail = (res.stderr || res.stdout).trim().split("\n").slice(-5).join("\n");
    throw new Error(`${cmd} ${args.join(" ")} failed with status ${res.code}: ${detail}`);
  }
  return res.stdout;
}

/** Hex SHA-256 of bytes or text. */
export async function sha256(data: Uint8Array | string): Promise<string> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** A short cache key from parts (order matters). */
export async function cacheKey(parts: readonly string[]): Promise<string> {
  return (await sha256(parts.join("\n"))).slice(0, 16);
}

/** Identity of a large file without reading it: path, size and modification time. */
export async function fileStamp(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${path}:${st.size}:${st.mtime?.getTime() ?? 0}`;
}

/**
 * Identity of a program that lands at a fixed path in the guest (Deno):
 * size and modification time, not where it lies on the host, so the copy
 * `deno task install` hard-links next to its wrappers builds the same
 * runtime as the deno it came from.
 */
export async function binaryStamp(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${st.size}:${st.mtime?.getTime() ?? 0}`;
}

/** Whether `path` exists. */
export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** The VM cache root (`core/paths.ts`): `$OPENSHELL_VM_CACHE_DIR`, else `~/.cache/openshell-deno/vm`. */
export function cacheRoot(env: (name: string) => string | undefined = Deno.env.get): string {
  return vmCacheRoot(env);
}

/** Whether we run as root (can use apt-get directly). */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}
