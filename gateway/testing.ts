/**
 * Test fixture: a real gateway process started through `deno run` with
 * exactly the grants its flags imply (core/grants.ts), on loopback and an
 * ephemeral port.
 *
 * @module
 */
import { gatewayGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { gatewayGrantParams, parseGatewayConfig } from "./config.ts";

/** Options of {@link startGateway}. */
export interface TestGatewayOptions {
  /** Extra flags, appended after the defaults (later flags win). */
  args?: string[];
  /** State dir; default a fresh temp dir removed by `stop`/`kill`. */
  stateDir?: string;
  /** `--db-url`; default `sqlite::memory:`. */
  dbUrl?: string;
  /** Use `--drivers vm` with this driver dir. */
  driverDir?: string;
  /** With `driverDir`: the driver's state dir (default `<stateDir>/vm`). */
  vmDriverStateDir?: string;
  /** Fixed port; default 0 (ephemeral). */
  port?: number;
  /** Extra environment for the gateway process. */
  env?: Record<string, string>;
  /** How long to wait for `Server listening`; default 30 s. */
  startTimeoutMs?: number;
}

/** A gateway process under test. */
export interface TestGateway {
  /** `http://127.0.0.1:PORT`. */
  endpoint: string;
  port: number;
  stateDir: string;
  /** The process id. */
  pid: number;
  /** Everything the gateway wrote to stderr so far. */
  stderr(): string;
  /** SIGTERM; resolves with the exit code. */
  stop(): Promise<number>;
  /** SIGKILL; resolves when it is gone. */
  kill(): Promise<void>;
  /** Resolves with the exit code whenever the process ends. */
  exited: Promise<number>;
}

/** Starts a gateway and waits until it logged `Server listening on HOST:PORT`. */
export async function startGateway(options: TestGatewayOptions = {}): Promise<TestGateway> {
  const ownDir = options.stateDir === undefined;
  const stateDir = options.stateDir ?? await Deno.makeTempDir({ prefix: "osgw" });
  const args = [
    "--bind",
    "127.0.0.1",
    "--port",
    String(options.port ?? 0),
    "--state-dir",
    stateDir,
    "--db-url",
    options.dbUrl ?? "sqlite::memory:",
    "--disable-tls",
    "--disable-gateway-auth",
    "--log-level",
    "debug",
    ...(options.driverDir
      ? [
        "--drivers",
        "vm",
        "--driver-dir",
        options.driverDir,
        "--vm-driver-state-dir",
        options.vmDriverStateDir ?? `${stateDir}/vm`,
      ]
      : ["--drivers", "none"]),
    ...(options.args ?? []),
  ];
  const parsed = parseGatewayConfig(args, (k) => options.env?.[k]);
  if (parsed.help) throw new Error("--help given to the test gateway");
  const [exe, ...rest] = roleCommand(
    "gateway",
    gatewayGrants(gatewayGrantParams(parsed.config)),
    args,
  );
  const child = new Deno.Command(exe, {
    args: rest,
    env: options.env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();

  let log = "";
  let resolveListening!: (port: number) => void;
  const listening = new Promise<number>((r) => resolveListening = r);
  const pump = (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      log += decoder.decode(chunk, { stream: true });
      const m = /Server listening on [^\s]*:(\d+)/.exec(log);
      if (m) resolveListening(Number(m[1]));
    }
  })();
  const exited = child.status.then(async (s) => {
    await pump;
    if (ownDir) await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    return s.code;
  });

  const timeout = options.startTimeoutMs ?? 30_000;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const port = await Promise.race([
    listening,
    exited.then((code) => {
      throw new Error(`gateway exited with status ${code} before listening:\n${log}`);
    }),
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`gateway did not start in ${timeout} ms:\n${log}`)),
        timeout,
      );
    }),
  ]).catch(async (err) => {
    clearTimeout(timer);
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await exited;
    throw err;
  });
  clearTimeout(timer);

  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch { /* already gone */ }
  };
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    stateDir,
    pid: child.pid,
    stderr: () => log,
    stop: () => {
      signal("SIGTERM");
      return exited;
    },
    kill: async () => {
      signal("SIGKILL");
      await exited;
    },
    exited,
  };
}
