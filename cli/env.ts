/**
 * Reading the environment without failing on a missing grant (the CLI runs
 * with `--ignore-env` and a short list of variables).
 *
 * @module
 */

/** Reads an environment variable without failing on a missing grant. */
export function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}
