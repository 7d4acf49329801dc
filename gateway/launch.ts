/**
 * `deno task gateway -- …`: runs the gateway through `deno run` with exactly
 * the grants its configuration needs (see core/grants.ts). Without
 * `--state-dir` a development state dir under the repository is used.
 *
 * @module
 */
import { denoEnv, FlagError } from "../core/flags.ts";
import { gatewayGrants } from "../core/grants.ts";
import { launchRole, REPO_ROOT, stripTaskSeparator } from "../core/launcher.ts";
import { gatewayGrantParams, parseGatewayConfig } from "./config.ts";

const args = stripTaskSeparator(Deno.args);
if (
  !args.some((a) => a === "--state-dir" || a.startsWith("--state-dir=")) &&
  !denoEnv("OPENSHELL_STATE_DIR")
) {
  args.push("--state-dir", `${REPO_ROOT}/.state/gateway`);
}
try {
  const parsed = parseGatewayConfig(args, denoEnv);
  const grants = parsed.help
    ? gatewayGrants({ listen: { host: "127.0.0.1", port: 0 }, stateDir: "/nonexistent" })
    : gatewayGrants(gatewayGrantParams(parsed.config));
  await launchRole("gateway", grants, args);
} catch (err) {
  if (err instanceof FlagError) {
    console.error(`openshell-gateway: ${err.message}`);
    Deno.exit(2);
  }
  throw err;
}
