/**
 * Where things live by default, for every tool that needs to agree on it:
 * the VM cache (`vm:setup`, `vm:rootfs`, the installed image builder and the
 * installed driver's grants) and the state of an installed gateway.
 *
 * @module
 */

/** Reads one environment variable. */
export type PathEnv = (name: string) => string | undefined;

function trim(path: string): string {
  return path.replace(/\/+$/, "") || "/";
}

/**
 * The VM cache root: `$OPENSHELL_VM_CACHE_DIR`, else
 * `${XDG_CACHE_HOME:-$HOME/.cache}/openshell-deno/vm`.
 */
export function vmCacheRoot(env: PathEnv): string {
  const explicit = env("OPENSHELL_VM_CACHE_DIR");
  if (explicit) return trim(explicit);
  const xdg = env("XDG_CACHE_HOME");
  const base = xdg ? xdg : `${env("HOME") ?? "/root"}/.cache`;
  return `${trim(base)}/openshell-deno/vm`;
}

/**
 * The state of an installed gateway and its VM driver (`gateway/` and `vm/`
 * below it): `/var/lib/openshell` for root, else
 * `${XDG_STATE_HOME:-$HOME/.local/state}/openshell`.
 */
export function stateBase(env: PathEnv, options: { root: boolean }): string {
  if (options.root) return "/var/lib/openshell";
  const xdg = env("XDG_STATE_HOME");
  const base = xdg && xdg.startsWith("/") ? xdg : `${env("HOME") ?? "/root"}/.local/state`;
  return `${trim(base)}/openshell`;
}
