/**
 * `deno task driver-vm -- …`: runs the VM driver through `deno run` with
 * exactly its production grants (core/grants.ts), derived from its flags.
 * Without `--runtime-dir` it uses the newest runtime `deno task vm:rootfs`
 * built (`<cache>/current`).
 *
 * @module
 */
import { driverGrants, PRODUCTION_PARAMS } from "../core/grants.ts";
import { launchRole, stripTaskSeparator } from "../core/launcher.ts";
import { parseDriverConfig } from "./config.ts";
import { FlagError } from "../core/flags.ts";
import { cacheRoot } from "./image/host.ts";

const args = stripTaskSeparator(Deno.args);
const explicitRuntime = args.some((a) => a === "--runtime-dir" || a.startsWith("--runtime-dir=")) ||
  !!Deno.env.get("OPENSHELL_VM_RUNTIME_DIR");
const full = explicitRuntime ? args : [...args, "--runtime-dir", `${cacheRoot()}/current`];
let params = PRODUCTION_PARAMS.driver;
try {
  const parsed = parseDriverConfig(full, (n) => Deno.env.get(n));
  if (parsed.kind === "run") {
    const c = parsed.config;
    params = {
      stateDir: c.stateDir,
      gateway: { host: c.endpoint.host, port: c.endpoint.port },
      runtimeDir: c.runtimeDir,
      qemu: c.qemu,
      setpriv: c.setpriv,
      qemuImg: c.qemuImg,
      imageBuilder: c.imageBuilder,
      egressSocket: c.egressSocket,
    };
  }
} catch (err) {
  if (!(err instanceof FlagError)) throw err;
  console.error(`openshell-driver-vm: ${err.message}`);
  Deno.exit(2);
}
await launchRole("driver-vm", driverGrants(params), full);
