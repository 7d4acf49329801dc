/**
 * Test fixture for the CLI: a real gateway whose sandboxes become READY
 * through the host driver (a supervisor per sandbox on this host, OpenSSH
 * `sshd` as the `sandbox` user, the host key the gateway provisioned), a
 * second gateway without a driver (its sandboxes never become READY), a
 * temporary `XDG_CONFIG_HOME`, and the CLI run as a child through
 * `roleCommand("cli", cliGrants(...))` — the exact grants it ships with.
 *
 * With `scheme: "https"` both gateways serve TLS and require client
 * certificates (mTLS, gateway auth on) from a PKI made with core/pki.ts;
 * the CLI's config registers both through `gateway add --mtls-dir`; the
 * host supervisors dial the gateway's TLS supervisor plane.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { cliGrants, type HostPort } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { OpenShellClient, unaryCall } from "../core/protocol.ts";
import { grpcTlsCredentials } from "../core/tls.ts";
import { type ApiClient, spawnGateway, type TestGateway } from "../testing/gateway.ts";
import { writeHostDriverDir } from "../testing/host_driver.ts";
import { readsNamedFiles } from "./launch.ts";
import { cleanEnv, ensureSandboxUser, gatewayApi } from "../testing/supervisor.ts";
import { gatewayTlsArgs, type TestGatewayPki, writeGatewayPki } from "../testing/tls.ts";

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

/** How the CLI talks to the fixture's gateways. */
export type Scheme = "http" | "https";

/** Two gateways and a CLI configuration. */
export interface CliFixture {
  /** `http` (plaintext) or `https` (TLS + client certificates). */
  scheme: Scheme;
  /** The gateway with the host driver (the default of every run). */
  gateway: TestGateway;
  /** Its URL with the fixture's scheme. */
  url: string;
  /** A gateway without a driver: its sandboxes stay PROVISIONING. */
  bare: TestGateway;
  /** Its URL with the fixture's scheme. */
  bareUrl: string;
  /** https: the PKI both gateways use (bundles included). */
  pki?: TestGatewayPki;
  /** The names `gateway` and `bare` are registered under (https), for `--gateway-name`. */
  names: { gateway?: string; bare?: string };
  /** What `gateway add NAME URL` needs besides the URL ([] for http). */
  addArgs: string[];
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

/** Options of {@link startCliFixture}. */
export interface CliFixtureOptions {
  /** Default `http`. */
  scheme?: Scheme;
}

/** A promisified `OpenShell` client (TLS with the operator's bundle when given). */
function testApiClient(port: number, pki?: TestGatewayPki): ApiClient {
  const { credentials, options } = pki
    ? grpcTlsCredentials("127.0.0.1", {
      ca: Deno.readTextFileSync(pki.bundle.ca),
      cert: Deno.readTextFileSync(pki.bundle.cert),
      key: Deno.readTextFileSync(pki.bundle.key),
    })
    : { credentials: grpc.credentials.createInsecure(), options: {} };
  const raw = new OpenShellClient(`127.0.0.1:${port}`, credentials, options);
  return {
    raw,
    call: (method, request) => unaryCall(raw, method, request),
    close: () => raw.close(),
  };
}

/** Starts both gateways and a CLI config dir. */
export async function startCliFixture(options: CliFixtureOptions = {}): Promise<CliFixture> {
  const scheme = options.scheme ?? "http";
  await ensureSandboxUser();
  const driverDir = await Deno.makeTempDir({ prefix: "oscli-drv-" });
  await writeHostDriverDir(driverDir);
  if (scheme === "https") {
    const pki = await writeGatewayPki(driverDir);
    // Its own certificate on the user API; the host supervisors dial the supervisor plane,
    // which keeps the gateway's automatic PKI (the driver hands them its CA).
    const tlsArgs = gatewayTlsArgs(pki);
    const started = await Promise.allSettled([
      spawnGateway({ driverDir, tls: true, args: tlsArgs }),
      spawnGateway({ tls: true, args: tlsArgs }),
    ]);
    if (started.some((s) => s.status === "rejected")) {
      for (const s of started) if (s.status === "fulfilled") await s.value.shutdown(10_000);
      throw started.find((s) => s.status === "rejected")!.reason;
    }
    const [gateway, bare] = started.map((s) => (s as PromiseFulfilledResult<TestGateway>).value);
    return await finishFixture({ scheme, gateway, bare, pki, driverDir });
  }
  const [gateway, bare] = await Promise.all([spawnGateway({ driverDir }), spawnGateway()]);
  return await finishFixture({ scheme, gateway, bare, driverDir });
}

async function finishFixture(o: {
  scheme: Scheme;
  gateway: TestGateway;
  bare: TestGateway;
  pki?: TestGatewayPki;
  driverDir: string;
}): Promise<CliFixture> {
  const { scheme, gateway, bare, pki, driverDir } = o;
  const configHome = await Deno.makeTempDir({ prefix: "oscli-" });
  const api = testApiClient(gateway.port, pki);
  const health = gatewayApi(
    gateway.port,
    pki ? { ca: pki.bundle.ca, cert: pki.bundle.cert, key: pki.bundle.key } : undefined,
  );
  try {
    await health.waitHealthy(); // its compute driver is attached
  } finally {
    health.close();
  }
  const url = `${scheme}://127.0.0.1:${gateway.port}`;
  const bareUrl = `${scheme}://127.0.0.1:${bare.port}`;
  const own: HostPort[] = [
    { host: "127.0.0.1", port: gateway.port },
    { host: "127.0.0.1", port: bare.port },
  ];
  const env = cleanEnv({
    XDG_CONFIG_HOME: configHome,
    OPENSHELL_GATEWAY_ENDPOINT: url,
  });
  // As the dev launcher does: `gateway add --mtls-dir D` may read D wherever it is.
  const argv = (args: readonly string[], gateways: HostPort[] = own) =>
    roleCommand(
      "cli",
      cliGrants({ ...(readsNamedFiles(args) ? {} : { configDir: configHome }), gateways }),
      args,
    );
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
  const addArgs = pki ? ["--mtls-dir", pki.bundle.dir] : [];
  const names: CliFixture["names"] = {};
  if (pki) {
    // The https gateways are registered by the CLI itself, the way an operator does it;
    // a run then finds their TLS files by URL (OPENSHELL_GATEWAY_ENDPOINT or --gateway-endpoint).
    for (const [name, u] of [["main", url], ["bare", bareUrl]] as const) {
      const r = await run(["gateway", "add", name, u, ...addArgs]);
      if (r.code !== 0) throw new Error(`gateway add ${name} failed: ${r.stderr}`);
    }
    names.gateway = "main";
    names.bare = "bare";
  }
  return {
    scheme,
    gateway,
    url,
    bare,
    bareUrl,
    ...(pki ? { pki } : {}),
    names,
    addArgs,
    configHome,
    env,
    api,
    argv,
    run,
    spawn,
    close: async () => {
      api.close();
      await Promise.all([gateway.shutdown(10_000), bare.shutdown(10_000)]);
      await Deno.remove(configHome, { recursive: true }).catch(() => {});
      await Deno.remove(driverDir, { recursive: true }).catch(() => {});
    },
  };
}
