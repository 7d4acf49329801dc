/**
 * Test fixture for the CLI: a real gateway whose sandboxes become READY
 * through the host driver (a supervisor per sandbox on this host, OpenSSH
 * `sshd` as the `sandbox` user, the host key the gateway provisioned), a
 * second gateway without a driver (its sandboxes never become READY), a
 * temporary `XDG_CONFIG_HOME`, and the CLI run as a child through
 * `roleCommand("cli", cliGrants(...))` — the exact grants it ships with.
 *
 * @module
 */
import { cliGrants, type HostPort } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { type ApiClient, apiClient, startGateway, type TestGateway } from "../gateway/testing.ts";
import { writeHostDriverDir } from "../supervisor/host_driver.ts";
import { cleanEnv, ensureSandboxUser, gatewayApi } from "../supervisor/testing.ts";

/** What a CLI run produced. */
export interface CliResult {
  /** Exit status. */
  code: number;
  /** Standard output. */
  stdout: string;
  /** Standard error. */
  stderr: string;
}

/** Options of {@link CliFixture.spawn}. */
export interface SpawnOptions {
  /** Extra environment. */
  env?: Record<string, string>;
  /** Default `piped`. */
  stdin?: "piped" | "null";
  /** Gateways its net grant covers; default both fixture gateways. */
  gateways?: HostPort[];
}

/** Options of {@link CliFixture.run}. */
export interface RunOptions extends Omit<SpawnOptions, "stdin"> {
  /** Bytes for stdin (else stdin is /dev/null). */
  stdin?: string | Uint8Array;
  /** Kill the CLI after this long; default 60 s. */
  timeoutMs?: number;
}

/** Two gateways and a CLI configuration. */
export interface CliFixture {
  /** The gateway with the host driver (the default of every run). */
  gateway: TestGateway;
  /** A gateway without a driver: its sandboxes stay PROVISIONING. */
  bare: TestGateway;
  /** `XDG_CONFIG_HOME` of the CLI runs (the CLI's config dir grant). */
  configHome: string;
  /** Environment of the CLI runs (`gateway` in `OPENSHELL_GATEWAY_ENDPOINT`). */
  env: Record<string, string>;
  /** A client of `gateway` for checking its state directly. */
  api: ApiClient;
  /** The full argv (executable first) of `openshell ARGS`. */
  argv(args: readonly string[], gateways?: HostPort[]): string[];
  /** Runs `openshell ARGS` to completion. */
  run(args: readonly string[], options?: RunOptions): Promise<CliResult>;
  /** Starts `openshell ARGS` with piped stdout/stderr. */
  spawn(args: readonly string[], options?: SpawnOptions): Deno.ChildProcess;
  /** Stops everything and removes the temp dirs. */
  close(): Promise<void>;
}

/** Starts both gateways and a CLI config dir. */
export async function startCliFixture(): Promise<CliFixture> {
  await ensureSandboxUser();
  const driverDir = await Deno.makeTempDir({ prefix: "oscli-drv-" });
  await writeHostDriverDir(driverDir);
  const [gateway, bare] = await Promise.all([startGateway({ driverDir }), startGateway()]);
  const configHome = await Deno.makeTempDir({ prefix: "oscli-" });
  const api = apiClient(gateway.port);
  const health = gatewayApi(gateway.port);
  try {
    await health.waitHealthy(); // its compute driver is attached
  } finally {
    health.close();
  }
  const own: HostPort[] = [
    { host: "127.0.0.1", port: gateway.port },
    { host: "127.0.0.1", port: bare.port },
  ];
  const env = cleanEnv({
    XDG_CONFIG_HOME: configHome,
    OPENSHELL_GATEWAY_ENDPOINT: gateway.endpoint,
  });
  const argv = (args: readonly string[], gateways: HostPort[] = own) =>
    roleCommand("cli", cliGrants({ configDir: configHome, gateways }), args);
  const spawn = (args: readonly string[], options: SpawnOptions = {}) => {
    const [exe, ...rest] = argv(args, options.gateways);
    return new Deno.Command(exe, {
      args: rest,
      clearEnv: true,
      env: { ...env, ...options.env },
      stdin: options.stdin ?? "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  };
  const run = async (args: readonly string[], options: RunOptions = {}): Promise<CliResult> => {
    const child = spawn(args, {
      ...(options.env ? { env: options.env } : {}),
      ...(options.gateways ? { gateways: options.gateways } : {}),
      stdin: options.stdin === undefined ? "null" : "piped",
    });
    const timer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
    }, options.timeoutMs ?? 60_000);
    try {
      if (options.stdin !== undefined) {
        const w = child.stdin.getWriter();
        await w.write(
          typeof options.stdin === "string"
            ? new TextEncoder().encode(options.stdin)
            : options.stdin,
        );
        await w.close();
      }
      const out = await child.output();
      const d = new TextDecoder();
      return { code: out.code, stdout: d.decode(out.stdout), stderr: d.decode(out.stderr) };
    } finally {
      clearTimeout(timer);
    }
  };
  return {
    gateway,
    bare,
    configHome,
    env,
    api,
    argv,
    run,
    spawn,
    close: async () => {
      api.close();
      await Promise.all([stop(gateway), stop(bare)]);
      await Deno.remove(configHome, { recursive: true }).catch(() => {});
      await Deno.remove(driverDir, { recursive: true }).catch(() => {});
    },
  };
}

/** SIGTERM, and SIGKILL when the gateway has not exited after 10 s. */
async function stop(gw: TestGateway): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const graceful = await Promise.race([
    gw.stop().then(() => true),
    new Promise<boolean>((r) => timer = setTimeout(() => r(false), 10_000)),
  ]);
  clearTimeout(timer);
  if (!graceful) await gw.kill();
}
