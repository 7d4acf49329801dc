/**
 * `deno task egress -- …`: runs the egress proxy through `deno run` with
 * exactly its production grants (core/grants.ts), derived from its flags.
 *
 * @module
 */
import { egressGrants, PRODUCTION_PARAMS } from "../core/grants.ts";
import { denoEnv, FlagError } from "../core/flags.ts";
import { launchRole, stripTaskSeparator } from "../core/launcher.ts";
import { parseEgressConfig } from "./config.ts";

const args = stripTaskSeparator(Deno.args);
let params = PRODUCTION_PARAMS.egress;
try {
  const parsed = parseEgressConfig(args, denoEnv);
  if (parsed.kind === "run") params = { stateDir: parsed.config.stateDir };
} catch (err) {
  if (!(err instanceof FlagError)) throw err;
  console.error(`openshell-egress: ${err.message}`);
  Deno.exit(2);
}
await launchRole("egress", egressGrants(params), args);
