/**
 * `deno task compile`: builds the role binaries with their grants from
 * `grants.ts` baked in.
 *
 * ```
 * deno task compile [--out DIR] [--target TRIPLE] [--role ROLE]…
 *                   [--gateway-listen HOST:PORT] [--supervisor-listen HOST:PORT]
 *                   [--gateway-state-dir DIR]
 *                   [--driver-state-dir DIR] [--runtime-dir DIR]
 *                   [--supervisor-gateway HOST:PORT] [--ssh-socket-path PATH]
 *                   [--egress-state-dir DIR]
 * ```
 *
 * `deno compile` needs Deno's `denort` base binary. It is taken from
 * `DENORT_BIN` when set, else from Deno's download cache, else downloaded
 * from dl.deno.land; where none of these works the task stops with a message
 * that says so and how to provide it.
 *
 * @module
 */
import { parseArgs } from "node:util";
import {
  cliGrants,
  compileArgs,
  driverGrants,
  egressGrants,
  gatewayGrants,
  type Grants,
  type HostPort,
  PRODUCTION_PARAMS,
  type Role,
  ROLE_INFO,
  ROLES,
  supervisorGrants,
} from "./grants.ts";
import { REPO_ROOT, stripTaskSeparator } from "./launcher.ts";

/** Options of {@link compilePlan}. */
export interface CompileOptions {
  out: string;
  target?: string;
  roles: Role[];
  gatewayListen?: HostPort;
  /** The gateway's supervisor plane (what the driver carries guests to). */
  supervisorListen?: HostPort;
  gatewayStateDir?: string;
  driverStateDir?: string;
  runtimeDir?: string;
  supervisorGateway?: HostPort;
  sshSocketPath?: string;
  egressStateDir?: string;
}

/** One `deno compile` invocation. */
export interface CompileStep {
  role: Role;
  output: string;
  args: string[];
}

/** Parses `HOST:PORT` (IPv6 in brackets); throws a readable error. */
export function parseHostPort(value: string, what: string): HostPort {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new Error(`${what}: expected HOST:PORT, got "${value}"`);
  return { host: m[1].replace(/^\[|\]$/g, ""), port };
}

/**
 * Where the driver dials a gateway listening on `listen`: an unspecified
 * address on 127.0.0.1 (the endpoint the gateway gives its driver).
 */
export function loopbackOf(listen: HostPort): HostPort {
  const unspecified = ["0.0.0.0", "", "::", "[::]"].includes(listen.host);
  return { host: unspecified ? "127.0.0.1" : listen.host, port: listen.port };
}

/** The grants each role gets for a compile with `options`. */
export function compileGrants(role: Role, options: CompileOptions): Grants {
  const p = PRODUCTION_PARAMS;
  const driverStateDir = options.driverStateDir ?? p.driver.stateDir;
  switch (role) {
    case "gateway":
      return gatewayGrants({
        ...p.gateway,
        listen: options.gatewayListen ?? p.gateway.listen,
        supervisorListen: options.supervisorListen ?? p.gateway.supervisorListen,
        stateDir: options.gatewayStateDir ?? p.gateway.stateDir,
        driverStateDir,
      });
    case "driver-vm":
      return driverGrants({
        ...p.driver,
        // Guests reach the supervisor plane, whatever the user API's address.
        gateway: options.supervisorListen ? loopbackOf(options.supervisorListen) : p.driver.gateway,
        stateDir: driverStateDir,
        runtimeDir: options.runtimeDir ?? p.driver.runtimeDir,
        // The gateway's egress proxy keeps its sockets in `<gateway-state>/egress`.
        egressSocket: options.gatewayStateDir
          ? `${options.gatewayStateDir}/egress/guest.sock`
          : p.driver.egressSocket,
      });
    case "supervisor":
      return supervisorGrants({
        ...p.supervisor,
        gateway: options.supervisorGateway ?? p.supervisor.gateway,
        socketPath: options.sshSocketPath ?? p.supervisor.socketPath,
      });
    case "cli":
      return cliGrants(p.cli);
    case "egress":
      return egressGrants({ stateDir: options.egressStateDir ?? p.egress.stateDir });
  }
}

/** The `deno compile` invocations for `options`. */
export function compilePlan(options: CompileOptions): CompileStep[] {
  return options.roles.map((role) => {
    const output = `${options.out}/${ROLE_INFO[role].binary}`;
    return {
      role,
      output,
      args: compileArgs(role, compileGrants(role, options), {
        root: REPO_ROOT,
        output,
        target: options.target,
      }),
    };
  });
}

/** Parses the task's flags. */
export function parseCompileArgs(args: string[]): CompileOptions {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      out: { type: "string", default: `${REPO_ROOT}/dist` },
      target: { type: "string" },
      role: { type: "string", multiple: true },
      "gateway-listen": { type: "string" },
      "supervisor-listen": { type: "string" },
      "gateway-state-dir": { type: "string" },
      "driver-state-dir": { type: "string" },
      "runtime-dir": { type: "string" },
      "supervisor-gateway": { type: "string" },
      "ssh-socket-path": { type: "string" },
      "egress-state-dir": { type: "string" },
    },
  });
  const roles = (values.role ?? [...ROLES]) as Role[];
  for (const r of roles) {
    if (!ROLES.includes(r)) throw new Error(`--role: unknown role "${r}" (${ROLES.join(", ")})`);
  }
  return {
    out: values.out!,
    target: values.target,
    roles,
    supervisorListen: values["supervisor-listen"]
      ? parseHostPort(values["supervisor-listen"], "--supervisor-listen")
      : undefined,
    gatewayListen: values["gateway-listen"]
      ? parseHostPort(values["gateway-listen"], "--gateway-listen")
      : undefined,
    gatewayStateDir: values["gateway-state-dir"],
    driverStateDir: values["driver-state-dir"],
    runtimeDir: values["runtime-dir"],
    supervisorGateway: values["supervisor-gateway"]
      ? parseHostPort(values["supervisor-gateway"], "--supervisor-gateway")
      : undefined,
    sshSocketPath: values["ssh-socket-path"],
    egressStateDir: values["egress-state-dir"],
  };
}

/** Whether `deno compile` output says it could not obtain denort. */
export function isDenortFailure(stderr: string): boolean {
  return /denort|dl\.deno\.land|error sending request|dns error/i.test(stderr);
}

const DENORT_HELP = `deno compile needs Deno's "denort" base binary and could not obtain it
(it downloads it from dl.deno.land, which this machine cannot reach).
Provide it and run the task again, either way:
  - DENORT_BIN=/path/to/denort deno task compile
      (unzip denort-<target>.zip from https://dl.deno.land/release/v${Deno.version.deno}/)
  - or place denort-<target>.zip under $DENO_DIR/dl/release/v${Deno.version.deno}/
Everything else (tests, e2e) runs the roles through "deno run" with the same grants.`;

async function main(): Promise<number> {
  let options: CompileOptions;
  try {
    options = parseCompileArgs(stripTaskSeparator(Deno.args));
  } catch (err) {
    console.error(`compile: ${(err as Error).message}`);
    return 2;
  }
  await Deno.mkdir(options.out, { recursive: true });
  for (const step of compilePlan(options)) {
    console.log(`compiling ${step.role} → ${step.output}`);
    const out = await new Deno.Command(Deno.execPath(), {
      args: step.args,
      stdout: "inherit",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    if (!out.success) {
      if (isDenortFailure(stderr)) {
        console.error(DENORT_HELP);
      } else {
        console.error(stderr.trim());
      }
      return 1;
    }
  }
  console.log(`built ${options.roles.length} binaries in ${options.out}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main());
