/**
 * Dev launcher (`deno task cli -- ARGS`): starts `cli/main.ts` through
 * `deno run` with the CLI's grants from `core/grants.ts`, narrowed to this
 * run: its config directory and the gateway the arguments (or the
 * environment, or the config) select.
 *
 * @module
 */
import { denoEnv, type EnvReader } from "../core/flags.ts";
import { cliGrants, type HostPort } from "../core/grants.ts";
import { launchRole, stripTaskSeparator } from "../core/launcher.ts";
import { parseCommandLine, sshProxyGateway } from "./args.ts";
import { configRoot, ConfigStore, parseGatewayUrl, resolveGateway } from "./config.ts";
import { netGrantsFor } from "./self.ts";

/** The gateways a command line will talk to ([] when none can be determined). */
export async function gatewaysOf(
  args: readonly string[],
  root: string,
  env: EnvReader = denoEnv,
): Promise<HostPort[]> {
  try {
    const parsed = parseCommandLine(args, env);
    if (parsed.kind !== "run") return [];
    const { values, from } = parsed.invocation;
    // Given on the command line; resolveGateway applies the env twins in its own order.
    const str = (name: string) =>
      typeof values[name] === "string" && from[name] === "argv"
        ? values[name] as string
        : undefined;
    const proxy = parsed.invocation.spec.id === "ssh-proxy" ? sshProxyGateway(str) : undefined;
    if (proxy?.url) {
      const ep = parseGatewayUrl(proxy.url, { allowPath: true });
      return netGrantsFor(ep.host, ep.port);
    }
    const gw = await resolveGateway(new ConfigStore(root), {
      endpointFlag: str("gateway-endpoint"),
      gatewayFlag: proxy ? proxy.name : str("gateway"),
      env,
    });
    return netGrantsFor(gw.endpoint.host, gw.endpoint.port);
  } catch {
    // The CLI itself reports what is wrong with the arguments or the config.
    return [];
  }
}

/** Whether the command reads files named on the command line (`gateway add --mtls-dir …`). */
export function readsNamedFiles(args: readonly string[]): boolean {
  try {
    const parsed = parseCommandLine(args);
    if (parsed.kind !== "run") return false;
    const v = parsed.invocation.values;
    // `sandbox credentials --out DIR` writes DIR wherever it is.
    if (parsed.invocation.spec.id === "sandbox credentials") return v.out !== undefined;
    // `image import NAME FILE` and `image build --script FILE` read FILE wherever it is.
    if (parsed.invocation.spec.id === "image import") return true;
    if (parsed.invocation.spec.id === "image build") return v.script !== undefined;
    // `sandbox create --policy FILE` and `policy set --policy FILE` read FILE.
    if (
      parsed.invocation.spec.id === "sandbox create" || parsed.invocation.spec.id === "policy set"
    ) {
      return v.policy !== undefined;
    }
    if (parsed.invocation.spec.id !== "gateway add") return false;
    return v.ca !== undefined || v.cert !== undefined || v.key !== undefined ||
      v["mtls-dir"] !== undefined;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  const args = stripTaskSeparator(Deno.args);
  const root = configRoot(denoEnv);
  // `gateway add --mtls-dir D` reads D and `sandbox credentials --out D` writes D
  // wherever it is, as the compiled CLI (no config dir restriction) does; every
  // other command sees only its config dir.
  const grants = cliGrants({
    ...(readsNamedFiles(args) ? {} : { configDir: root }),
    gateways: await gatewaysOf(args, root),
  });
  await launchRole("cli", grants, args);
}
