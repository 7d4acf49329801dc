/**
 * `openshell-egress`: the sandboxes' egress proxy, a process of its own with
 * broad `--allow-net` and nothing else (no programs; only its state dir).
 * The gateway starts it and pushes each sandbox's network policy over
 * `<state-dir>/control.sock`; the VM driver carries each guest connection to
 * the proxy alias to `<state-dir>/guest.sock`.
 *
 * It exits when its parent (the gateway) is gone, and on SIGTERM/SIGINT.
 *
 * @module
 */
import { denoEnv, FlagError } from "../core/flags.ts";
import { stripTaskSeparator } from "../core/launcher.ts";
import { errorMessage, Logger } from "../core/log.ts";
import { UnsafePathError } from "../core/secure_fs.ts";
import { VERSION } from "../core/version.ts";
import { type EgressConfig, egressUsage, parseEgressConfig } from "./config.ts";
import { startEgress } from "./server.ts";

/** How often the parent process is checked. */
const PARENT_POLL_MS = 500;

/**
 * Throws one clear line unless this process may read the host's interface
 * addresses (without them it could not refuse the host's own addresses).
 */
export function checkInterfacesGrant(): void {
  try {
    Deno.networkInterfaces();
  } catch (err) {
    throw new Error(
      `cannot read this host's network interfaces (${errorMessage(err)}); ` +
        "the egress proxy needs --allow-sys=networkInterfaces to refuse the host's own addresses",
    );
  }
}

/** Runs the proxy until it is told to stop; resolves with the exit code. */
export async function main(args: readonly string[]): Promise<number> {
  let config: EgressConfig;
  try {
    const parsed = parseEgressConfig(stripTaskSeparator(args), denoEnv);
    if (parsed.kind === "help") {
      console.log(egressUsage());
      return 0;
    }
    if (parsed.kind === "version") {
      console.log(`openshell-egress ${VERSION}`);
      return 0;
    }
    config = parsed.config;
  } catch (err) {
    if (err instanceof FlagError) {
      console.error(`openshell-egress: ${err.message}`);
      return 2;
    }
    throw err;
  }
  const log = new Logger({ level: config.logLevel, target: "openshell-egress" });
  checkInterfacesGrant();
  const parent = Deno.ppid;
  let egress;
  try {
    egress = await startEgress({
      stateDir: config.stateDir,
      log,
      maxPerSandbox: config.maxPerSandbox,
      maxTotal: config.maxTotal,
      idleMs: config.idleSecs * 1000,
      eventsPerSec: config.eventsPerSec,
      filterGoaway: Deno.env.get("OPENSHELL_UNSAFE_KEEP_GOAWAY") !== "1",
    });
  } catch (err) {
    if (!(err instanceof UnsafePathError)) throw err;
    log.error(`cannot start: ${err.message}`);
    return 1;
  }
  log.info("listening", {
    guest: `unix:${egress.guestSocket}`,
    control: `unix:${egress.controlSocket}`,
    max_connections: config.maxTotal,
    max_connections_per_sandbox: config.maxPerSandbox,
    idle_timeout_secs: config.idleSecs,
  });
  return await new Promise<number>((resolve) => {
    let stopping = false;
    const finish = async (code: number, why: string) => {
      if (stopping) return;
      stopping = true;
      clearInterval(watchParent);
      for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
      log.info(`stopping: ${why}`);
      await egress.close();
      resolve(code);
    };
    const watchParent = setInterval(() => {
      const now = Deno.ppid;
      if (now !== parent || now === 1) finish(1, `parent process ${parent} is gone`);
    }, PARENT_POLL_MS);
    const handlers: [Deno.Signal, () => void][] = [
      ["SIGTERM", () => finish(0, "SIGTERM")],
      ["SIGINT", () => finish(0, "SIGINT")],
    ];
    for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  });
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (err) {
    console.error(`openshell-egress: ${errorMessage(err)}`);
    Deno.exit(1);
  }
}
