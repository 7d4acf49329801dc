/**
 * The one table of every role's Deno permissions (design §2).
 *
 * Each role's grants are a function of what varies per deployment (gateway
 * address, socket path, state dir, listen address …). The role launchers
 * (`deno task gateway -- …`) fill the parameters from the role's own flags,
 * `deno task compile` from its options with production defaults, and the
 * tests and the e2e from their fixtures; all of them render the flags here,
 * so what runs in tests is what ships.
 *
 * Deno facts this table relies on: net grants match the literal host string
 * (`localhost` ≠ `127.0.0.1`); a host without a port covers every port; a
 * Unix socket needs read + write + `net=unix:<exact path>`; `--ignore-env`
 * turns reads of non-granted variables into `undefined` (grpc-js reads
 * fourteen of them at import).
 *
 * @module
 */

/** The roles. */
export type Role = "gateway" | "driver-vm" | "supervisor" | "cli" | "egress";

/** Every role, in data-flow order. */
export const ROLES: readonly Role[] = ["cli", "gateway", "driver-vm", "supervisor", "egress"];

/** Binary name and entry module (relative to the repository root) of each role. */
export const ROLE_INFO: Readonly<Record<Role, { binary: string; entry: string }>> = {
  "gateway": { binary: "openshell-gateway", entry: "gateway/main.ts" },
  "driver-vm": { binary: "openshell-driver-vm", entry: "driver_vm/main.ts" },
  "supervisor": { binary: "openshell-sandbox", entry: "supervisor/main.ts" },
  "cli": { binary: "openshell", entry: "cli/main.ts" },
  "egress": { binary: "openshell-egress", entry: "egress/main.ts" },
};

/** A permission: a list of allowed values (empty = denied) or `true` (all). */
export type Grant = readonly string[] | true;

/** The permissions of one role. */
export interface Grants {
  net: Grant;
  read: Grant;
  write: Grant;
  run: Grant;
  /** Environment variable names (`PREFIX_*` globs allowed). */
  env: Grant;
  /** System information (`Deno.systemMemoryInfo` …); absent = none. */
  sys?: Grant;
  /** Read non-granted variables as `undefined` instead of failing. */
  ignoreEnv: boolean;
}

/** A `host:port` pair as written in a net grant. */
export interface HostPort {
  host: string;
  /** 0 = any port on `host` (needed to listen on an ephemeral port). */
  port: number;
}

/** What the gateway's grants depend on. */
export interface GatewayGrantParams {
  /** Listen address of the user API. */
  listen: HostPort;
  /** Listen address of the supervisor plane (absent: none). */
  supervisorListen?: HostPort;
  /** State dir: internal sockets, driver socket, PKI. */
  stateDir: string;
  /** SQLite database file when it lives outside the state dir. */
  dbPath?: string;
  /** `--log-file` (and its rotated `.1`) when it lives outside the state dir. */
  logFile?: string;
  /** The compute driver binary it may run; absent with `--drivers none`. */
  driverBinary?: string;
  /** The VM driver's state dir (the driver socket lives there). */
  driverStateDir?: string;
  /** TLS files it reads. */
  tlsFiles?: readonly string[];
  /** The egress proxy binary it runs; absent with `--no-egress`. */
  egressBinary?: string;
  /** The egress proxy's state dir (the gateway uses only its control socket there). */
  egressStateDir?: string;
}

/** What the VM driver's grants depend on. */
export interface DriverGrantParams {
  /** Its state dir: sockets, per-sandbox dirs, console logs. */
  stateDir: string;
  /**
   * The gateway as the host reaches it: the driver carries its guests'
   * connections there (a Deno net grant also covers listening on that
   * address, which the gateway already holds).
   */
  gateway: HostPort;
  /** Read-only VM runtime dir: kernel, initramfs, guest payload. */
  runtimeDir: string;
  /** The qemu binary. */
  qemu: string;
  /** The helper that starts each qemu unprivileged and tied to the driver's life (`setpriv`). */
  setpriv: string;
  /** qemu-img (creates each sandbox's disk); default `/usr/bin/qemu-img`. */
  qemuImg?: string;
  /** The image builder it runs for `image build|import` (see {@link imageBuilderGrants}). */
  imageBuilder?: string;
  /**
   * The egress proxy's guest socket (`--egress-socket`): the driver carries
   * its guests' proxy and DNS connections there. Absent: no egress.
   */
  egressSocket?: string;
}

/** What the supervisor's grants depend on. */
export interface SupervisorGrantParams {
  /** The gateway it dials: the only network peer it may reach. */
  gateway: HostPort;
  /**
   * Addresses `gateway.host` resolves to, when it is a name. grpc-js resolves
   * names itself (node:dns) and connects to the address (node:net), and Deno
   * checks each step: the lookup against the bare host name, the connect
   * against `address:port`. With addresses given, the grant becomes the bare
   * name plus each `address:port` (so only that port is reachable); without
   * them a name endpoint cannot be dialled. Ignored for IP literals.
   */
  gatewayAddresses?: readonly string[];
  /** The sshd Unix socket path; its directory is the supervisor's to read and write. */
  socketPath: string;
  /** The OpenSSH `sshd` binary. */
  sshd: string;
  /** Files outside its socket dir it may create (a host key file generated once). */
  writeFiles?: readonly string[];
  /** TLS files and host key file it reads. */
  readFiles?: readonly string[];
  /** The cgroup v2 directory it owns for its SSH sessions (read and write). */
  sessionCgroup?: string;
}

/** What the CLI's grants depend on. */
export interface CliGrantParams {
  /** Its config dir; absent = any path (a compiled CLI serves every user). */
  configDir?: string;
  /** Gateways it may reach; absent = any host. */
  gateways?: readonly HostPort[];
  /**
   * Programs it may run besides `ssh`: an installed CLI's `gateway start`
   * runs the installed gateway and the guest image builder, and
   * `gateway stop` signals through `kill` (Deno.kill needs every program).
   */
  run?: readonly string[];
}

/** What the egress proxy's grants depend on. */
export interface EgressGrantParams {
  /** Its state dir: `guest.sock`, `control.sock` and grpc-js's internal socket. */
  stateDir: string;
}

/** Environment variables the supervisor reads; nothing else. */
export const SUPERVISOR_ENV: readonly string[] = [
  "OPENSHELL_SANDBOX_ID",
  "OPENSHELL_ENDPOINT",
  "OPENSHELL_SSH_SOCKET_PATH",
  "OPENSHELL_SSH_HOST_KEY",
  "OPENSHELL_SSHD",
  "OPENSHELL_TLS_CA",
  "OPENSHELL_TLS_CERT",
  "OPENSHELL_TLS_KEY",
  "OPENSHELL_SUPERVISOR_TOKEN",
  "OPENSHELL_SUPERVISOR_TOKEN_FILE",
  "OPENSHELL_ENV_FILE",
  "OPENSHELL_SESSION_CGROUP",
  "OPENSHELL_LOG_LEVEL",
  "OPENSHELL_LOG_FORMAT",
];

/** Environment variables the CLI reads besides its `OPENSHELL_*` settings. */
export const CLI_EXTRA_ENV: readonly string[] = ["HOME", "XDG_CONFIG_HOME", "NO_COLOR", "TERM"];

/** Renders `host:port` for a grant (IPv6 literals in brackets; port 0 = host only). */
export function hostPortGrant(hp: HostPort): string {
  const host = hp.host.includes(":") && !hp.host.startsWith("[") ? `[${hp.host}]` : hp.host;
  return hp.port === 0 ? host : `${host}:${hp.port}`;
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

function unique(items: (string | undefined)[]): string[] {
  return [...new Set(items.filter((x): x is string => typeof x === "string" && x !== ""))];
}

/**
 * The gateway: listen, its state dir (+ DB file), the driver binary and
 * socket, the egress proxy binary and its control socket.
 */
export function gatewayGrants(p: GatewayGrantParams): Grants {
  const driverSocket = p.driverStateDir ? `${p.driverStateDir}/compute-driver.sock` : undefined;
  const egressSocket = p.egressStateDir ? `${p.egressStateDir}/control.sock` : undefined;
  return {
    net: unique([
      hostPortGrant(p.listen),
      p.supervisorListen ? hostPortGrant(p.supervisorListen) : undefined,
      `unix:${p.stateDir}/grpc.sock`,
      `unix:${p.stateDir}/supervisor.sock`,
      driverSocket ? `unix:${driverSocket}` : undefined,
      egressSocket ? `unix:${egressSocket}` : undefined,
    ]),
    read: unique([
      p.stateDir,
      p.dbPath,
      p.logFile,
      p.logFile && `${p.logFile}.1`,
      driverSocket,
      egressSocket,
      ...(p.tlsFiles ?? []),
    ]),
    // SQLite's WAL companions: the gateway narrows their mode to 0600.
    write: unique([
      p.stateDir,
      p.dbPath,
      p.dbPath && `${p.dbPath}-wal`,
      p.dbPath && `${p.dbPath}-shm`,
      p.logFile,
      p.logFile && `${p.logFile}.1`,
      driverSocket,
      egressSocket,
    ]),
    run: unique([p.driverBinary, p.egressBinary]),
    env: ["OPENSHELL_*"],
    ignoreEnv: true,
  };
}

/**
 * The VM driver: its sockets (the public one, grpc-js's internal one, the
 * paths where each VM's forwarder and QMP sockets are bound before they are
 * renamed into `fwd/` and `qmp/`), the gateway, the egress proxy's guest
 * socket (exactly that path, when given), its state dir, the runtime dir,
 * `/etc/passwd` (to find qemu's account), qemu, setpriv and qemu-img, and
 * the host's memory size (a sandbox may not ask for more).
 */
export function driverGrants(p: DriverGrantParams): Grants {
  return {
    net: unique([
      `unix:${p.stateDir}/compute-driver.sock`,
      `unix:${p.stateDir}/grpc.sock`,
      `unix:${p.stateDir}/guest-fwd.sock`,
      `unix:${p.stateDir}/qmp-bind.sock`,
      p.egressSocket && `unix:${p.egressSocket}`,
      hostPortGrant(p.gateway),
    ]),
    read: unique([p.stateDir, p.runtimeDir, "/etc/passwd", p.egressSocket]),
    write: unique([p.stateDir, p.egressSocket]),
    run: unique([p.qemu, p.setpriv, p.qemuImg ?? "/usr/bin/qemu-img", p.imageBuilder]),
    env: ["OPENSHELL_*"],
    sys: ["systemMemoryInfo"],
    ignoreEnv: true,
  };
}

/** The image builder's module (run by the VM driver through its own wrapper). */
export const IMAGE_BUILDER_ENTRY = "driver_vm/image_builder.ts";

/**
 * The image builder the VM driver runs for `image build|import` (as root,
 * like the driver): `debootstrap`, `chroot`, `mount`/`umount`, `mke2fs` and
 * `tar`; its work dir (`<driver-state>/image-build`) and the images dir
 * (`<driver-state>/images`); the host's resolver config (apt in the
 * chroot) and mount table (it refuses to remove a tree with a mount left
 * inside); its own uid. No network grant: debootstrap and apt fetch
 * packages as child processes, outside Deno's grants — as does anything a
 * build's `--script` runs in the chroot, as root. The driver's own grant
 * widens only by this one program.
 */
export function imageBuilderGrants(p: { stateDir: string }): Grants {
  const work = `${p.stateDir}/image-build`;
  const images = `${p.stateDir}/images`;
  return {
    net: [],
    read: [work, images, "/etc/resolv.conf", "/proc/self/mounts", "/usr/sbin/debootstrap"],
    write: [work, images],
    run: ["debootstrap", "chroot", "mount", "umount", "mke2fs", "tar"],
    env: [],
    sys: ["uid"],
    ignoreEnv: true,
  };
}

/** `deno run` arguments of the image builder with {@link imageBuilderGrants}. */
export function imageBuilderRunArgs(root: string, stateDir: string): string[] {
  return [
    "run",
    "--quiet",
    `--config=${root}/deno.json`,
    ...renderFlags(imageBuilderGrants({ stateDir })),
    `${root}/${IMAGE_BUILDER_ENTRY}`,
  ];
}

/** The supervisor: one gateway host:port, its socket dir and session cgroup, its files, sshd. */
export function supervisorGrants(p: SupervisorGrantParams): Grants {
  const socketDir = dirOf(p.socketPath);
  const isName = !/^[0-9.]+$/.test(p.gateway.host) && !p.gateway.host.includes(":");
  const gateway = isName && p.gatewayAddresses?.length
    ? [
      p.gateway.host,
      ...p.gatewayAddresses.map((host) => hostPortGrant({ host, port: p.gateway.port })),
    ]
    : [hostPortGrant(p.gateway)];
  return {
    net: [...gateway, `unix:${p.socketPath}`],
    read: unique([socketDir, p.sessionCgroup, ...(p.readFiles ?? [])]),
    write: unique([socketDir, p.sessionCgroup, ...(p.writeFiles ?? [])]),
    run: [p.sshd],
    env: SUPERVISOR_ENV,
    ignoreEnv: true,
  };
}

/** The CLI: gateways, `ssh` (and the programs of {@link CliGrantParams.run}), its config dir. */
export function cliGrants(p: CliGrantParams): Grants {
  return {
    net: p.gateways ? p.gateways.map(hostPortGrant) : true,
    read: p.configDir ? [p.configDir] : true,
    write: p.configDir ? [p.configDir] : true,
    run: unique(["ssh", ...(p.run ?? [])]),
    env: ["OPENSHELL_*", ...CLI_EXTRA_ENV],
    ignoreEnv: true,
  };
}

/**
 * The egress proxy: any host and port (it dials what each sandbox's policy
 * allows, which only it decides, and listens on its two Unix sockets), its
 * state dir, the host's interface addresses (to refuse them as
 * destinations); no program, no other file.
 */
export function egressGrants(p: EgressGrantParams): Grants {
  return {
    net: true,
    read: [p.stateDir],
    write: [p.stateDir],
    run: [],
    env: ["OPENSHELL_*"],
    sys: ["networkInterfaces"],
    ignoreEnv: true,
  };
}

function flag(name: string, grant: Grant): string[] {
  if (grant === true) return [`--allow-${name}`];
  return grant.length === 0 ? [] : [`--allow-${name}=${grant.join(",")}`];
}

/**
 * The permission flags for `deno run` and `deno compile` (identical, so a
 * test run exercises the shipped permission set). Nothing is granted that
 * the table does not list, and Deno never prompts.
 */
export function renderFlags(grants: Grants): string[] {
  return [
    ...flag("net", grants.net),
    ...flag("read", grants.read),
    ...flag("write", grants.write),
    ...flag("run", grants.run),
    ...flag("env", grants.env),
    ...(grants.sys ? flag("sys", grants.sys) : []),
    ...(grants.ignoreEnv ? ["--ignore-env"] : []),
    "--no-prompt",
  ];
}

/** Options of {@link runArgs}. */
export interface RunArgsOptions {
  /** Absolute path of the repository root (where `deno.json` lives). */
  root: string;
  /** The role's own arguments. */
  args?: readonly string[];
}

/** `deno run` arguments (after the deno executable) that start `role` with `grants`. */
export function runArgs(role: Role, grants: Grants, options: RunArgsOptions): string[] {
  return [
    "run",
    "--quiet",
    `--config=${options.root}/deno.json`,
    ...renderFlags(grants),
    `${options.root}/${ROLE_INFO[role].entry}`,
    ...(options.args ?? []),
  ];
}

/** Options of {@link compileArgs}. */
export interface CompileArgsOptions {
  /** Absolute path of the repository root. */
  root: string;
  /** Output file. */
  output: string;
  /** Target triple, e.g. `x86_64-unknown-linux-gnu`; default: the host. */
  target?: string;
}

/** `deno compile` arguments that build `role` with `grants` baked in. */
export function compileArgs(role: Role, grants: Grants, options: CompileArgsOptions): string[] {
  return [
    "compile",
    "--quiet",
    `--config=${options.root}/deno.json`,
    ...renderFlags(grants),
    ...(options.target ? [`--target=${options.target}`] : []),
    `--output=${options.output}`,
    `${options.root}/${ROLE_INFO[role].entry}`,
  ];
}

/** Host name under which a VM guest reaches its gateway. */
export const GUEST_GATEWAY_HOST = "gateway.openshell.internal";
/**
 * Address the guest's `/etc/hosts` gives {@link GUEST_GATEWAY_HOST}; the VM
 * driver forwards its port to the real gateway.
 */
export const GUEST_GATEWAY_ADDRESS = "10.0.2.100";
/** Port under which a VM guest reaches its gateway (forwarded to the real one). */
export const GUEST_GATEWAY_PORT = 8080;
/** The sshd socket inside a sandbox. */
export const DEFAULT_SSH_SOCKET_PATH = "/run/openshell/ssh.sock";
/**
 * The supervisor's session cgroup directory: the guest init bind-mounts its
 * cgroup `/sys/fs/cgroup/openshell` here, because Deno refuses any path
 * under `/sys` without `--allow-all`.
 */
export const DEFAULT_SESSION_CGROUP = "/run/openshell-sessions";

/**
 * Grant parameters of a production install, used by `deno task compile`
 * unless its options say otherwise. A compiled binary's grants are fixed at
 * build time: a binary built for `/var/lib/openshell` cannot use another
 * state dir.
 */
export const PRODUCTION_PARAMS: {
  gateway: GatewayGrantParams;
  driver: DriverGrantParams;
  supervisor: SupervisorGrantParams;
  cli: CliGrantParams;
  egress: EgressGrantParams;
} = {
  gateway: {
    listen: { host: "0.0.0.0", port: 8080 },
    supervisorListen: { host: "127.0.0.1", port: 8081 },
    stateDir: "/var/lib/openshell/gateway",
    driverBinary: "/usr/local/libexec/openshell/openshell-driver-vm",
    driverStateDir: "/var/lib/openshell/vm",
    egressBinary: "/usr/local/libexec/openshell/openshell-egress",
    egressStateDir: "/var/lib/openshell/gateway/egress",
  },
  driver: {
    stateDir: "/var/lib/openshell/vm",
    gateway: { host: "127.0.0.1", port: 8081 },
    runtimeDir: "/usr/local/share/openshell/vm-runtime",
    qemu: "/usr/bin/qemu-system-x86_64",
    setpriv: "/usr/bin/setpriv",
    qemuImg: "/usr/bin/qemu-img",
    imageBuilder: "/usr/local/libexec/openshell/openshell-image-builder",
    // The gateway's egress proxy (its `<egress-state-dir>/guest.sock`).
    egressSocket: "/var/lib/openshell/gateway/egress/guest.sock",
  },
  supervisor: {
    gateway: { host: GUEST_GATEWAY_HOST, port: GUEST_GATEWAY_PORT },
    gatewayAddresses: [GUEST_GATEWAY_ADDRESS],
    socketPath: DEFAULT_SSH_SOCKET_PATH,
    sshd: "/usr/sbin/sshd",
    readFiles: ["/etc/openshell"],
    sessionCgroup: DEFAULT_SESSION_CGROUP,
  },
  cli: {},
  // Inside the gateway's state dir: the gateway's default `--egress-state-dir`.
  egress: { stateDir: "/var/lib/openshell/gateway/egress" },
};

/** The grants of every role with {@link PRODUCTION_PARAMS}, as a Markdown table (README). */
export function renderGrantsTable(): string {
  const p = PRODUCTION_PARAMS;
  const rows: [Role, Grants][] = [
    ["gateway", gatewayGrants(p.gateway)],
    ["driver-vm", driverGrants(p.driver)],
    ["supervisor", supervisorGrants(p.supervisor)],
    ["cli", cliGrants(p.cli)],
    ["egress", egressGrants(p.egress)],
  ];
  const cell = (g: Grant) =>
    g === true ? "any" : g.length === 0 ? "—" : g.map((x) => `\`${x}\``).join("<br>");
  const lines = [
    "| role | binary | net | read | write | run | env |",
    "| --- | --- | --- | --- | --- | --- | --- |",
    ...rows.map(([role, g]) =>
      `| ${role} | \`${ROLE_INFO[role].binary}\` | ${cell(g.net)} | ${cell(g.read)} | ${
        cell(g.write)
      } | ${cell(g.run)} | ${cell(g.env)}${g.ignoreEnv ? " (others read as unset)" : ""}${
        g.sys ? `<br>sys: ${cell(g.sys)}` : ""
      } |`
    ),
  ];
  return lines.join("\n");
}
