import assert from "node:assert/strict";
import { FlagError } from "../core/flags.ts";
import { gatewayGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import {
  DEFAULT_STATE_DIR,
  driverSocketPath,
  egressControlSocket,
  egressGuestSocket,
  GATEWAY_FLAGS,
  type GatewayConfig,
  gatewayGrantParams,
  gatewayHelp,
  internalSocketPath,
  MAX_UNIX_SOCKET_PATH,
  parseDbUrl,
  parseGatewayConfig,
  pkiDir,
  supervisorSocketPath,
  usesAutoPki,
} from "./config.ts";

/** Parses `args` with only `env` as the environment; returns the config. */
function parse(args: string[], env: Record<string, string> = {}): GatewayConfig {
  const r = parseGatewayConfig(args, (k) => env[k]);
  assert.ok(!r.help, "unexpected --help");
  return r.config;
}

/** Asserts parsing fails with a FlagError whose message matches `message`. */
function fails(args: string[], message: RegExp, env: Record<string, string> = {}): void {
  assert.throws(() => parseGatewayConfig(args, (k) => env[k]), (e: unknown) => {
    assert.ok(e instanceof FlagError, `not a FlagError: ${e}`);
    assert.match(e.message, message);
    assert.doesNotMatch(e.message, /\n/, "one line");
    return true;
  });
}

const PLAIN = ["--disable-tls", "--disable-gateway-auth"];

Deno.test("defaults: TLS with the automatic PKI and client certificates, a separate supervisor plane", () => {
  const c = parse([]);
  assert.deepEqual(c, {
    port: 8080,
    bind: "0.0.0.0",
    stateDir: DEFAULT_STATE_DIR,
    db: { kind: "sqlite-file", path: `${DEFAULT_STATE_DIR}/gateway.db` },
    drivers: "vm",
    driverDir: "/usr/local/libexec/openshell",
    vmDriverStateDir: "/var/lib/openshell/vm",
    vmRuntimeDir: undefined,
    vmAccel: "auto",
    vmVcpus: 2,
    vmMemMib: 1024,
    grpcEndpoint: undefined,
    sshConnectPath: "/connect/ssh",
    sshGatewayHost: undefined,
    sshGatewayPort: undefined,
    sshSessionTtlSecs: 86400,
    supervisorHeartbeatSecs: 15,
    maxConnections: 1024,
    maxConnectionsPerPeer: 64,
    connectionIdleSecs: 300,
    disableTls: false,
    disableGatewayAuth: false,
    tlsCert: undefined,
    tlsKey: undefined,
    tlsClientCa: undefined,
    tlsSans: [],
    supervisorBind: "127.0.0.1",
    supervisorPort: 8081,
    logLevel: "info",
    logFormat: "text",
    logFile: undefined,
    egress: true,
    egressStateDir: `${DEFAULT_STATE_DIR}/egress`,
  });
  assert.equal(usesAutoPki(c), true);
  assert.equal(pkiDir(c), `${DEFAULT_STATE_DIR}/pki`);
  assert.equal(usesAutoPki(parse(PLAIN)), false);
});

Deno.test("env twins set every value; a flag beats its env twin; empty env is unset", () => {
  const env = {
    OPENSHELL_SERVER_PORT: "9000",
    OPENSHELL_BIND_ADDRESS: "127.0.0.1",
    OPENSHELL_STATE_DIR: "/srv/gw/",
    OPENSHELL_DB_URL: "sqlite::memory:",
    OPENSHELL_DRIVERS: "none",
    OPENSHELL_GRPC_ENDPOINT: "http://10.0.2.2:9000",
    OPENSHELL_SSH_CONNECT_PATH: "/tunnel",
    OPENSHELL_SSH_SESSION_TTL_SECS: "0",
    OPENSHELL_SUPERVISOR_HEARTBEAT_SECS: "5",
    OPENSHELL_MAX_CONNECTIONS: "10",
    OPENSHELL_MAX_CONNECTIONS_PER_PEER: "0",
    OPENSHELL_CONNECTION_IDLE_SECS: "7",
    OPENSHELL_DISABLE_TLS: "true",
    OPENSHELL_DISABLE_GATEWAY_AUTH: "1",
    OPENSHELL_LOG_LEVEL: "debug",
    OPENSHELL_LOG_FORMAT: "json",
    OPENSHELL_VM_VCPUS: "",
    OPENSHELL_TLS_SAN: "gw.example.com",
    OPENSHELL_SUPERVISOR_BIND_ADDRESS: "10.0.2.2",
    OPENSHELL_SUPERVISOR_PORT: "9001",
  };
  const c = parse([], env);
  assert.equal(c.port, 9000);
  assert.equal(c.bind, "127.0.0.1");
  assert.equal(c.stateDir, "/srv/gw", "trailing slash dropped");
  assert.deepEqual(c.db, { kind: "sqlite-memory" });
  assert.equal(c.drivers, "none");
  assert.equal(c.grpcEndpoint, "http://10.0.2.2:9000");
  assert.equal(c.sshConnectPath, "/tunnel");
  assert.equal(c.sshSessionTtlSecs, 0);
  assert.equal(c.supervisorHeartbeatSecs, 5);
  assert.equal(c.maxConnections, 10);
  assert.equal(c.maxConnectionsPerPeer, 0);
  assert.equal(c.connectionIdleSecs, 7);
  assert.equal(c.disableTls, true);
  assert.equal(c.disableGatewayAuth, true);
  assert.equal(c.logLevel, "debug");
  assert.equal(c.logFormat, "json");
  assert.equal(c.vmVcpus, 2, "an empty twin is unset: the default");
  assert.deepEqual(c.tlsSans, ["gw.example.com"]);
  assert.equal(c.supervisorBind, "10.0.2.2");
  assert.equal(c.supervisorPort, 9001);

  const flagged = parse(["--port", "1234", "--log-format", "text"], env);
  assert.equal(flagged.port, 1234);
  assert.equal(flagged.logFormat, "text");
  // bad env values name the variable
  fails([], /^OPENSHELL_SERVER_PORT \(--port\) must be a whole number, got "abc"/, {
    ...env,
    OPENSHELL_SERVER_PORT: "abc",
  });
  fails([], /^OPENSHELL_DISABLE_TLS \(--disable-tls\) must be true or false/, {
    ...env,
    OPENSHELL_DISABLE_TLS: "maybe",
  });
});

Deno.test("the default database lives in the state dir", () => {
  assert.deepEqual(parse([...PLAIN, "--state-dir", "/x/y"]).db, {
    kind: "sqlite-file",
    path: "/x/y/gateway.db",
  });
});

Deno.test("--db-url forms", () => {
  assert.deepEqual(parseDbUrl("sqlite::memory:"), { kind: "sqlite-memory" });
  assert.deepEqual(parseDbUrl("sqlite://:memory:"), { kind: "sqlite-memory" });
  assert.deepEqual(parseDbUrl("sqlite:"), { kind: "sqlite-memory" });
  assert.deepEqual(parseDbUrl("sqlite:/var/db/gw.db"), {
    kind: "sqlite-file",
    path: "/var/db/gw.db",
  });
  assert.deepEqual(parseDbUrl("sqlite:///var/db/gw.db"), {
    kind: "sqlite-file",
    path: "/var/db/gw.db",
  });
  assert.deepEqual(parseDbUrl("postgres://u@h/db"), { kind: "postgres", url: "postgres://u@h/db" });
  assert.deepEqual(parseDbUrl("postgresql://h/db"), { kind: "postgres", url: "postgresql://h/db" });
  assert.deepEqual(parse([...PLAIN, "--db-url", "sqlite:/d/gw.db"]).db, {
    kind: "sqlite-file",
    path: "/d/gw.db",
  });
});

Deno.test("--db-url errors: relative paths, unknown schemes, postgres not yet", () => {
  fails(
    [...PLAIN, "--db-url", "sqlite:gw.db"],
    /^--db-url must name an absolute sqlite path, got "gw\.db"/,
  );
  // the URL form `sqlite://rel.db` is a relative path too, not a file at the root
  fails(
    [...PLAIN, "--db-url", "sqlite://gw.db"],
    /^--db-url must name an absolute sqlite path, got "gw\.db"/,
  );
  fails(
    [...PLAIN, "--db-url", "mysql://h/db"],
    /^--db-url is not a supported database URL: "mysql:\/\/h\/db"/,
  );
  fails([...PLAIN, "--db-url", "/abs/gw.db"], /^--db-url is not a supported database URL/);
  fails([...PLAIN, "--db-url", "postgres://h/db"], /^--db-url postgres:\/\/… is not supported yet/);
});

Deno.test("TLS and gateway auth are on by default; turning them off is explicit", () => {
  // --disable-tls alone would drop client authentication silently: refused, one line saying why.
  fails(
    ["--disable-tls"],
    /^--disable-tls needs --disable-gateway-auth as well: without TLS no client certificate can be checked/,
  );
  fails(["--disable-tls"], /^--disable-tls needs/, { OPENSHELL_DISABLE_GATEWAY_AUTH: "false" });
  const plain = parse(PLAIN);
  assert.equal(plain.disableTls, true);
  assert.equal(plain.disableGatewayAuth, true);
  // TLS without client certificates (auth off) is allowed, with the automatic PKI.
  const tlsOnly = parse(["--disable-gateway-auth"]);
  assert.equal(tlsOnly.disableTls, false);
  assert.equal(usesAutoPki(tlsOnly), true);

  // Your own certificate: cert and key go together.
  fails(["--tls-cert", "/c.pem"], /^--tls-cert and --tls-key go together/);
  fails(["--tls-key", "/k.pem"], /^--tls-cert and --tls-key go together/);
  fails(
    ["--tls-cert", "/c.pem", "--tls-key", "/k.pem"],
    /^with your own --tls-cert, gateway auth needs --tls-client-ca .*or pass --disable-gateway-auth$/,
  );
  const noAuth = parse(["--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--disable-gateway-auth"]);
  assert.equal(noAuth.disableTls, false);
  assert.equal(usesAutoPki(noAuth), false);
  const mtls = parse(["--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--tls-client-ca", "/ca.pem"]);
  assert.equal(mtls.tlsClientCa, "/ca.pem");
  assert.deepEqual(gatewayGrantParams(mtls).tlsFiles, ["/c.pem", "/k.pem", "/ca.pem"]);
  assert.deepEqual(gatewayGrantParams(noAuth).tlsFiles, ["/c.pem", "/k.pem"]);
  // with TLS disabled the files are neither required nor granted
  assert.deepEqual(gatewayGrantParams(parse([...PLAIN, "--tls-cert", "/c.pem"])).tlsFiles, []);
  // the automatic PKI lives in the state dir, which is granted already
  assert.deepEqual(gatewayGrantParams(parse([])).tlsFiles, []);
});

Deno.test("--tls-san: comma-separated DNS names or IPs, anything else refused", () => {
  assert.deepEqual(parse(["--tls-san", "gw.example.com, 10.0.0.7,,fd00::2"]).tlsSans, [
    "gw.example.com",
    "10.0.0.7",
    "fd00::2",
  ]);
  assert.deepEqual(parse(["--tls-san", "*.example.com"]).tlsSans, ["*.example.com"]);
  fails(["--tls-san", "gw example"], /^--tls-san is not a DNS name or IP address: "gw example"$/);
  fails(["--tls-san", "ok.example,a/b"], /^--tls-san is not a DNS name or IP address: "a\/b"$/);
  fails(["--tls-san", "x".repeat(254)], /^--tls-san is not a DNS name or IP address/);
});

Deno.test("the supervisor plane never shares the user API's port", () => {
  fails(
    ["--port", "9000", "--supervisor-port", "9000"],
    /^--supervisor-port must differ from --port \(the planes are separate\)$/,
  );
  fails(
    ["--bind", "127.0.0.1", "--port", "9000", "--supervisor-port", "9000"],
    /^--supervisor-port must differ from --port/,
  );
  // a wildcard bind overlaps the supervisor plane's address on the same port
  fails(
    [
      "--bind",
      "::",
      "--port",
      "9000",
      "--supervisor-bind",
      "10.0.2.2",
      "--supervisor-port",
      "9000",
    ],
    /^--supervisor-port must differ from --port/,
  );
  fails(
    ["--bind", "10.0.0.5", "--port", "9000", "--supervisor-bind", "0.0.0.0"],
    /^--supervisor-port must differ from --port/,
    { OPENSHELL_SUPERVISOR_PORT: "9000" },
  );
  // two distinct addresses may share a port; port 0 means two ephemeral ports
  const split = parse([
    "--bind",
    "10.0.0.5",
    "--port",
    "9000",
    "--supervisor-bind",
    "10.0.2.2",
    "--supervisor-port",
    "9000",
  ]);
  assert.equal(split.supervisorPort, 9000);
  assert.equal(parse(["--port", "0", "--supervisor-port", "0"]).supervisorPort, 0);
  fails(["--supervisor-bind", "a b"], /^--supervisor-bind is not an address/);
  fails(["--supervisor-port", "65536"], /^--supervisor-port must be between 0 and 65535/);
  const p = gatewayGrantParams(parse(["--supervisor-bind", "10.0.2.2", "--supervisor-port", "81"]));
  assert.deepEqual(p.supervisorListen, { host: "10.0.2.2", port: 81 });
});

Deno.test("socket paths longer than a Unix socket allows are refused at start", () => {
  const longState = "/" + "s".repeat(MAX_UNIX_SOCKET_PATH - "/grpc.sock".length);
  assert.equal(internalSocketPath({ stateDir: longState }).length, MAX_UNIX_SOCKET_PATH + 1);
  fails([...PLAIN, "--state-dir", longState], /^--state-dir is too long for a Unix socket path/);
  // the supervisor plane's socket is longer than grpc.sock: it bounds the state dir
  const longSup = "/" + "u".repeat(MAX_UNIX_SOCKET_PATH - "/supervisor.sock".length);
  assert.equal(supervisorSocketPath({ stateDir: longSup }).length, MAX_UNIX_SOCKET_PATH + 1);
  fails(
    [...PLAIN, "--drivers", "none", "--state-dir", longSup],
    /^--state-dir is too long for a Unix socket path \(.*\/supervisor\.sock exceeds/,
  );
  const okState = longSup.slice(0, -1);
  assert.equal(parse([...PLAIN, "--drivers", "none", "--state-dir", okState]).stateDir, okState);

  const longVm = "/" + "v".repeat(MAX_UNIX_SOCKET_PATH - "/compute-driver.sock".length);
  assert.equal(driverSocketPath({ vmDriverStateDir: longVm }).length, MAX_UNIX_SOCKET_PATH + 1);
  // The driver's own rule (core/shared_flags.ts), stricter than Linux's limit: it holds on macOS.
  fails([...PLAIN, "--vm-driver-state-dir", longVm], /^--vm-driver-state-dir is too long/);
  fails(
    [...PLAIN, "--drivers", "none"],
    /^OPENSHELL_VM_DRIVER_STATE_DIR \(--vm-driver-state-dir\) is too long/,
    { OPENSHELL_VM_DRIVER_STATE_DIR: longVm },
  );
});

Deno.test("bad values and unknown flags fail with one line naming the flag", () => {
  fails(["--bogus"], /^unknown option --bogus \(see --help\)$/);
  fails(["--vm-mem"], /^unknown option --vm-mem \(did you mean --vm-mem-mib\?\) \(see --help\)$/);
  fails([...PLAIN, "extra"], /^unexpected argument "extra"/);
  fails([...PLAIN, "--port", "70000"], /^--port must be between 0 and 65535, got 70000/);
  fails([...PLAIN, "--port=-1"], /^--port must be between 0 and 65535, got -1/);
  fails([...PLAIN, "--port", "-1"], /--port/);
  fails([...PLAIN, "--port"], /--port needs a value/);
  fails([...PLAIN, "--drivers", "k8s"], /^--drivers must be one of vm, none, got "k8s"/);
  fails(
    [...PLAIN, "--log-level", "loud"],
    /^--log-level must be one of error, warn, info, debug, trace, got "loud"/,
  );
  fails([...PLAIN, "--state-dir", "rel/dir"], /^--state-dir must be an absolute path/);
  fails([...PLAIN, "--driver-dir", "bin"], /^--driver-dir must be an absolute path/);
  fails([...PLAIN, "--bind", "a b"], /^--bind is not an address/);
  fails([...PLAIN, "--ssh-connect-path", "connect"], /^--ssh-connect-path must start with "\/"/);
  fails(
    [...PLAIN, "--grpc-endpoint", "grpc://h:1"],
    /^--grpc-endpoint must be an http:\/\/ or https:\/\/ URL/,
  );
  fails([...PLAIN, "--grpc-endpoint", "http://h:1/path"], /^--grpc-endpoint must not have a path/);
  assert.equal(parse([...PLAIN, "--grpc-endpoint", "https://h:1/"]).grpcEndpoint, "https://h:1/");
  assert.equal(parse([...PLAIN, "--bind", "::1"]).bind, "::1");
});

Deno.test("VM options are the driver's own: what it would refuse, the gateway refuses at start", () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [["--vm-mem-mib", "64"], {}, /^--vm-mem-mib must be between 256 and 1048576 MiB, got 64 MiB$/],
    [
      [],
      { OPENSHELL_VM_MEM_MIB: "128" },
      /^OPENSHELL_VM_MEM_MIB \(--vm-mem-mib\) must be between 256/,
    ],
    [["--vm-vcpus", "0"], {}, /^--vm-vcpus must be between 1 and 64, got 0$/],
    [["--vm-vcpus", "65"], {}, /^--vm-vcpus must be between 1 and 64, got 65$/],
    [["--vm-accel", "fast"], {}, /^--vm-accel must be one of auto, kvm, hvf, tcg, got "fast"$/],
    [["--vm-runtime-dir", "/a,b"], {}, /^--vm-runtime-dir must not contain commas/],
    [["--vm-driver-state-dir", "/my vms"], {}, /^--vm-driver-state-dir may hold only letters/],
    [["--grpc-endpoint", "http://h_x:1"], {}, /^--grpc-endpoint has an invalid host: "h_x"$/],
  ];
  for (const [args, env, message] of cases) fails([...PLAIN, ...args], message, env);
  const c = parse([...PLAIN, "--vm-mem-mib", "2Gi", "--vm-accel", "TCG", "--vm-vcpus", "4"]);
  assert.deepEqual([c.vmMemMib, c.vmAccel, c.vmVcpus], [2048, "tcg", 4]);
});

Deno.test("gatewayGrantParams: db path only outside the state dir; driver only with --drivers vm", () => {
  const inside = gatewayGrantParams(parse([...PLAIN, "--state-dir", "/s", "--port", "0"]));
  assert.deepEqual(inside, {
    listen: { host: "0.0.0.0", port: 0 },
    supervisorListen: { host: "127.0.0.1", port: 8081 },
    stateDir: "/s",
    dbPath: undefined,
    logFile: undefined,
    driverBinary: "/usr/local/libexec/openshell/openshell-driver-vm",
    driverStateDir: "/var/lib/openshell/vm",
    tlsFiles: [],
    egressBinary: "/usr/local/libexec/openshell/openshell-egress",
    egressStateDir: "/s/egress",
  });
  const outside = gatewayGrantParams(
    parse([...PLAIN, "--state-dir", "/s", "--db-url", "sqlite:/s2/gw.db", "--driver-dir", "/d"]),
  );
  assert.equal(outside.dbPath, "/s2/gw.db", "a sibling dir sharing the prefix is outside");
  assert.equal(outside.driverBinary, "/d/openshell-driver-vm");
  assert.equal(
    gatewayGrantParams(parse([...PLAIN, "--state-dir", "/s", "--db-url", "sqlite:/s/sub/g.db"]))
      .dbPath,
    undefined,
  );
  assert.equal(
    gatewayGrantParams(parse([...PLAIN, "--db-url", "sqlite::memory:"])).dbPath,
    undefined,
  );
  const none = gatewayGrantParams(parse([...PLAIN, "--drivers", "none"]));
  assert.equal(none.driverBinary, undefined);
  assert.equal(none.driverStateDir, undefined);
  // the grants follow: no run permission at all without a driver (and egress proxy)
  assert.deepEqual(gatewayGrants(none).run, []);
  assert.deepEqual(gatewayGrants(outside).run, ["/d/openshell-driver-vm", "/d/openshell-egress"]);
});

Deno.test("--egress: on with --drivers vm, off with none; --no-egress and OPENSHELL_EGRESS win", () => {
  assert.equal(parse([...PLAIN]).egress, true);
  assert.equal(parse([...PLAIN, "--drivers", "none"]).egress, false);
  assert.equal(parse([...PLAIN, "--drivers", "none", "--egress"]).egress, true);
  assert.equal(parse([...PLAIN, "--no-egress"]).egress, false);
  assert.equal(parse([...PLAIN], { OPENSHELL_EGRESS: "off" }).egress, false);
  assert.equal(parse([...PLAIN, "--drivers", "none"], { OPENSHELL_EGRESS: "on" }).egress, true);
  assert.equal(parse([...PLAIN, "--egress"], { OPENSHELL_EGRESS: "off" }).egress, true);
  assert.throws(() => parse([...PLAIN], { OPENSHELL_EGRESS: "maybe" }), /OPENSHELL_EGRESS/);
  const c = parse([...PLAIN, "--state-dir", "/s", "--egress-state-dir", "/e/"]);
  assert.equal(c.egressStateDir, "/e");
  assert.equal(egressControlSocket(c), "/e/control.sock");
  assert.equal(egressGuestSocket(c), "/e/guest.sock");
  assert.throws(
    () => parse([...PLAIN, "--egress-state-dir", "rel"]),
    /--egress-state-dir must be an absolute path/,
  );
  assert.throws(
    () => parse([...PLAIN, "--egress-state-dir", `/${"e".repeat(100)}`]),
    /--egress-state-dir is too long for a Unix socket path/,
  );
  // The proxy's own rule, also for the default <state-dir>/egress.
  assert.throws(
    () => parse([...PLAIN, "--egress-state-dir", "/e,f"]),
    /^FlagError: --egress-state-dir must not contain commas/,
  );
  assert.throws(
    () => parse([...PLAIN, "--state-dir", `/${"s".repeat(83)}`]),
    /^FlagError: --egress-state-dir is too long for a Unix socket path \(\/s+\/egress\/control\.sock/,
  );
  // Off: no egress socket length check, no grants.
  const off = parse([...PLAIN, "--no-egress", "--egress-state-dir", `/${"e".repeat(100)}`]);
  const grants = gatewayGrants(gatewayGrantParams(off));
  assert.deepEqual(grants.run, ["/usr/local/libexec/openshell/openshell-driver-vm"]);
  assert.ok(!(grants.net as string[]).some((n) => n.includes("control.sock")));
  // On: run of the binary and net/read/write of the control socket only (not guest.sock).
  const on = gatewayGrants(gatewayGrantParams(c));
  assert.ok((on.net as string[]).includes("unix:/e/control.sock"));
  assert.ok((on.read as string[]).includes("/e/control.sock"));
  assert.ok((on.write as string[]).includes("/e/control.sock"));
  assert.ok(
    ![...(on.net as string[]), ...(on.read as string[])].some((x) => x.includes("guest.sock")),
  );
});

Deno.test("--log-file: absolute; granted only when outside the state dir, with its .1", () => {
  assert.equal(parse([...PLAIN]).logFile, undefined);
  const inside = parse([...PLAIN, "--state-dir", "/s", "--log-file", "/s/gateway.log"]);
  assert.equal(inside.logFile, "/s/gateway.log");
  assert.equal(gatewayGrantParams(inside).logFile, undefined);
  const outside = parse([...PLAIN, "--state-dir", "/s"], { OPENSHELL_LOG_FILE: "/var/log/g.log" });
  assert.equal(gatewayGrantParams(outside).logFile, "/var/log/g.log");
  const g = gatewayGrants(gatewayGrantParams(outside));
  assert.ok(Array.isArray(g.write) && g.write.includes("/var/log/g.log.1"));
  fails([...PLAIN, "--log-file", "g.log"], /--log-file must be an absolute path/);
});

Deno.test("--help: asked for, and lists every flag with its env twin", () => {
  assert.deepEqual(parseGatewayConfig(["--help"], () => undefined), { help: true });
  assert.deepEqual(parseGatewayConfig(["-h", "--port", "1"], () => undefined), { help: true });
  const help = gatewayHelp();
  assert.match(help, /^Usage: openshell-gateway \[OPTIONS\]$/m);
  const flat = help.replace(/\s+/g, " ");
  for (const [name, f] of Object.entries(GATEWAY_FLAGS)) {
    assert.ok(help.includes(`--${name} `), name);
    assert.ok(flat.includes(`env ${f.env}`), f.env);
  }
  assert.match(
    flat,
    /--log-level LEVEL .*\[one of error, warn, info, debug, trace; default info; env OPENSHELL_LOG_LEVEL\]/,
  );
});

async function runMain(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const [exe, ...rest] = roleCommand(
    "gateway",
    gatewayGrants({ listen: { host: "127.0.0.1", port: 0 }, stateDir: "/nonexistent" }),
    args,
  );
  const out = await new Deno.Command(exe, { args: rest, stdin: "null" }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("main.ts with its grants: bad flags exit 2 with one line, --help exits 0", async () => {
  const [bad, badValue, insecure, help] = await Promise.all([
    runMain(["--bogus"]),
    runMain([...PLAIN, "--db-url", "postgres://h/db"]),
    runMain(["--disable-tls"]),
    runMain(["--help"]),
  ]);
  assert.equal(bad.code, 2, bad.stderr);
  assert.equal(bad.stderr, "openshell-gateway: unknown option --bogus (see --help)\n");
  assert.equal(bad.stdout, "");
  assert.equal(badValue.code, 2, badValue.stderr);
  assert.match(
    badValue.stderr,
    /^openshell-gateway: --db-url postgres:\/\/… is not supported yet.*\n$/,
  );
  assert.equal(badValue.stderr.split("\n").length, 2, "exactly one line");
  assert.equal(insecure.code, 2, insecure.stderr);
  assert.match(insecure.stderr, /^openshell-gateway: --disable-tls needs --disable-gateway-auth/);
  assert.equal(insecure.stderr.split("\n").length, 2, "exactly one line");
  assert.equal(help.code, 0, help.stderr);
  assert.equal(help.stdout, gatewayHelp() + "\n");
  assert.equal(help.stderr, "");
});
