/**
 * How the CLI starts itself again (the `ssh-proxy` in an ssh
 * `ProxyCommand`) and which network grants a gateway needs: a compiled
 * binary runs its own executable; under `deno run` the same entry is started
 * through `roleCommand` with the CLI's grants from the one table.
 *
 * @module
 */
import { cliGrants, type HostPort } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";

/**
 * Net grant entries for reaching `host:port`. grpc-js resolves a name
 * itself (node:dns, which Deno checks against the bare name: `localhost:8080`
 * does not cover the lookup) and connects to the address; so `localhost`
 * gets the bare name and its two addresses at `port`.
 */
export function netGrantsFor(host: string, port: number): HostPort[] {
  const h = host.replace(/^\[(.*)\]$/, "$1");
  if (h.toLowerCase() === "localhost") {
    return [
      { host: "localhost", port: 0 },
      { host: "127.0.0.1", port },
      { host: "::1", port },
    ];
  }
  return [{ host: h, port }];
}

/** Whether this process is a `deno compile` binary. */
export function isStandalone(): boolean {
  return (Deno.build as { standalone?: boolean }).standalone === true;
}

/** Options of {@link selfCommand}. */
export interface SelfCommandOptions {
  /** A compiled binary (default: {@link isStandalone}). */
  standalone?: boolean;
  /** The CLI's config directory (its read/write grant under `deno run`). */
  configDir: string;
  /** Gateways the child may reach (its net grant under `deno run`). */
  gateways: readonly HostPort[];
}

/** The argv that runs `openshell <args…>`. */
export function selfCommand(args: readonly string[], options: SelfCommandOptions): string[] {
  if (options.standalone ?? isStandalone()) return [Deno.execPath(), ...args];
  return roleCommand(
    "cli",
    cliGrants({ configDir: options.configDir, gateways: options.gateways }),
    args,
  );
}
