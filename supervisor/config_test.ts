import assert from "node:assert/strict";
import { FlagError } from "../core/flags.ts";
import { DEFAULT_SESSION_CGROUP, DEFAULT_SSH_SOCKET_PATH, SUPERVISOR_ENV } from "../core/grants.ts";
import {
  CONFIG_ENV,
  DEFAULT_SSHD,
  filesRead,
  filesWritten,
  parseSupervisorConfig,
  type SupervisorConfig,
  usage,
} from "./config.ts";

const BASE = ["--sandbox-id", "sb-1", "--openshell-endpoint", "http://127.0.0.1:8080"];

function parse(args: string[], env: Record<string, string> = {}): SupervisorConfig {
  const parsed = parseSupervisorConfig(args, (name) => env[name]);
  assert.equal(parsed.kind, "run");
  return (parsed as { config: SupervisorConfig }).config;
}

function fails(args: string[], env: Record<string, string>, message: RegExp): void {
  assert.throws(() => parseSupervisorConfig(args, (n) => env[n]), (err: unknown) => {
    assert.ok(err instanceof FlagError, `expected FlagError, got ${err}`);
    assert.match(err.message, message);
    assert.ok(!err.message.includes("\n"), "one line");
    return true;
  });
}

Deno.test("config: defaults", () => {
  const c = parse(BASE);
  assert.deepEqual(c, {
    sandboxId: "sb-1",
    endpoint: "http://127.0.0.1:8080",
    scheme: "http",
    host: "127.0.0.1",
    port: 8080,
    socketPath: DEFAULT_SSH_SOCKET_PATH,
    sshd: DEFAULT_SSHD,
    hostKeyPath: undefined,
    tls: undefined,
    token: undefined,
    tokenFile: undefined,
    envFile: undefined,
    sessionCgroup: DEFAULT_SESSION_CGROUP,
    logLevel: "info",
    logFormat: "text",
  });
  assert.deepEqual(filesRead(c), []);
  assert.equal(parse([...BASE, "--session-cgroup", "none"]).sessionCgroup, undefined);
  assert.equal(
    parse(BASE, { OPENSHELL_SESSION_CGROUP: "/run/x-sessions" }).sessionCgroup,
    "/run/x-sessions",
  );
  fails(
    [...BASE, "--session-cgroup", "run/x"],
    {},
    /^--session-cgroup must be an absolute path or none, got "run\/x"$/,
  );
  fails([...BASE, "--session-cgroup", "/"], {}, /must name a directory below a cgroup2 mount/);
  const withEnv = parse([...BASE, "--env-file", "/etc/openshell/environment"]);
  assert.equal(withEnv.envFile, "/etc/openshell/environment");
  assert.deepEqual(filesRead(withEnv), ["/etc/openshell/environment"]);
});

Deno.test("config: every flag has its environment twin; flags win", () => {
  const env = {
    OPENSHELL_SANDBOX_ID: "from-env",
    OPENSHELL_ENDPOINT: "https://gw.example:9443/",
    OPENSHELL_SSH_SOCKET_PATH: "/run/x/ssh.sock",
    OPENSHELL_SSHD: "/opt/sshd",
    OPENSHELL_SSH_HOST_KEY: "/etc/openshell/host_key",
    OPENSHELL_TLS_CA: "/etc/openshell/ca.crt",
    OPENSHELL_TLS_CERT: "/etc/openshell/tls.crt",
    OPENSHELL_TLS_KEY: "/etc/openshell/tls.key",
    OPENSHELL_SUPERVISOR_TOKEN_FILE: "/etc/openshell/token",
    OPENSHELL_LOG_LEVEL: "DEBUG",
    OPENSHELL_LOG_FORMAT: "json",
  };
  const fromEnv = parse([], env);
  assert.equal(fromEnv.sandboxId, "from-env");
  assert.equal(fromEnv.endpoint, "https://gw.example:9443");
  assert.equal(fromEnv.socketPath, "/run/x/ssh.sock");
  assert.equal(fromEnv.sshd, "/opt/sshd");
  assert.equal(fromEnv.hostKeyPath, "/etc/openshell/host_key");
  assert.deepEqual(fromEnv.tls, {
    ca: "/etc/openshell/ca.crt",
    cert: "/etc/openshell/tls.crt",
    key: "/etc/openshell/tls.key",
  });
  assert.equal(fromEnv.tokenFile, "/etc/openshell/token");
  assert.equal(fromEnv.logLevel, "debug");
  assert.equal(fromEnv.logFormat, "json");
  assert.deepEqual(filesRead(fromEnv), [
    "/etc/openshell/host_key",
    "/etc/openshell/token",
    "/etc/openshell/ca.crt",
    "/etc/openshell/tls.crt",
    "/etc/openshell/tls.key",
  ]);
  // The host key file is generated there when missing: the only file it may create outside.
  assert.deepEqual(filesWritten(fromEnv), ["/etc/openshell/host_key"]);
  assert.deepEqual(filesWritten(parse(BASE)), []);
  // The supervisor plane needs only its CA: the token is the supervisor's credential.
  const caOnly = parse([], {
    OPENSHELL_SANDBOX_ID: "x",
    OPENSHELL_ENDPOINT: "https://127.0.0.1:8081",
    OPENSHELL_TLS_CA: "/etc/openshell/ca.crt",
  });
  assert.deepEqual(caOnly.tls, { ca: "/etc/openshell/ca.crt" });
  assert.deepEqual(filesRead(caOnly), ["/etc/openshell/ca.crt"]);

  const flags = parse([
    "--sandbox-id=flag-id",
    "--ssh-socket-path",
    "/tmp/s/ssh.sock",
    "--log-level",
    "warn",
  ], env);
  assert.equal(flags.sandboxId, "flag-id");
  assert.equal(flags.socketPath, "/tmp/s/ssh.sock");
  assert.equal(flags.logLevel, "warn");
  assert.equal(parse([...BASE, "--log-level", ""]).logLevel, "info");
});

Deno.test("config: every variable it reads is granted to the supervisor, and no other", () => {
  assert.deepEqual([...CONFIG_ENV].sort(), [...SUPERVISOR_ENV].sort());
});

Deno.test("config: the token comes from the environment or a file, not both", () => {
  assert.equal(parse(BASE, { OPENSHELL_SUPERVISOR_TOKEN: " t0k \n" }).token, "t0k");
  assert.equal(parse([...BASE, "--supervisor-token-file", "/x/token"]).tokenFile, "/x/token");
  fails(
    [...BASE, "--supervisor-token-file", "/x/token"],
    { OPENSHELL_SUPERVISOR_TOKEN: "t" },
    /either OPENSHELL_SUPERVISOR_TOKEN or --supervisor-token-file/,
  );
});

Deno.test("config: endpoints", () => {
  const endpointOf = (url: string) => {
    const { endpoint, scheme, host, port } = parse([
      "--sandbox-id",
      "sb-1",
      "--openshell-endpoint",
      url,
      ...(url.startsWith("https:") ? ["--tls-ca", "/ca.pem"] : []),
    ]);
    return { endpoint, scheme, host, port };
  };
  assert.deepEqual(endpointOf("http://gw:80"), {
    endpoint: "http://gw:80",
    scheme: "http",
    host: "gw",
    port: 80,
  });
  assert.equal(endpointOf("https://gw").port, 443);
  assert.equal(endpointOf("http://gw").port, 80);
  assert.deepEqual(endpointOf("http://[::1]:9000/"), {
    endpoint: "http://[::1]:9000",
    scheme: "http",
    host: "::1",
    port: 9000,
  });
});

Deno.test("config: help and version", () => {
  assert.deepEqual(parseSupervisorConfig(["--help"], () => undefined), { kind: "help" });
  assert.deepEqual(parseSupervisorConfig(["--version"], () => undefined), { kind: "version" });
  for (const flag of ["--sandbox-id", "--openshell-endpoint", "--ssh-socket-path", "--sshd"]) {
    assert.ok(usage().includes(flag), flag);
  }
});

Deno.test("config: bad input stops it with a clear message", () => {
  const cases: [string[], Record<string, string>, RegExp][] = [
    [[], {}, /^--sandbox-id \(or OPENSHELL_SANDBOX_ID\) is required$/],
    [["--sandbox-id", "x"], {}, /--openshell-endpoint \(or OPENSHELL_ENDPOINT\) is required/],
    [["--sandbox-id", "a b", "--openshell-endpoint", "http://h:1"], {}, /--sandbox-id must be/],
    [["--sandbox-id", "x".repeat(129), "--openshell-endpoint", "http://h:1"], {}, /1-128/],
    [
      ["--sandbox-id", "x", "--openshell-endpoint", "gw:8080"],
      {},
      /http:\/\/ or https:\/\/ URL, got "gw:8080"/,
    ],
    [["--sandbox-id", "x", "--openshell-endpoint", "not a url"], {}, /is not a URL/],
    [["--sandbox-id", "x", "--openshell-endpoint", "ftp://h:1"], {}, /http:\/\/ or https/],
    [["--sandbox-id", "x", "--openshell-endpoint", "http://h:1/api"], {}, /must not have a path/],
    [["--sandbox-id", "x", "--openshell-endpoint", "http://u:p@h:1"], {}, /credentials/],
    [
      ["--sandbox-id", "x"],
      { OPENSHELL_ENDPOINT: "tcp://h" },
      /^OPENSHELL_ENDPOINT \(--openshell-endpoint\) must be an http/,
    ],
    [
      ["--sandbox-id", "x", "--openshell-endpoint", "https://h:1"],
      {},
      /^an https:\/\/ endpoint needs --tls-ca \(the CA of the gateway's supervisor plane\)$/,
    ],
    [
      ["--sandbox-id", "x", "--openshell-endpoint", "https://h:1"],
      { OPENSHELL_TLS_CA: "/ca", OPENSHELL_TLS_CERT: "/c" },
      /^--tls-cert and --tls-key go together/,
    ],
    [
      ["--sandbox-id", "x", "--openshell-endpoint", "https://h:1", "--tls-key", "/k"],
      { OPENSHELL_TLS_CA: "/ca" },
      /^--tls-cert and --tls-key go together/,
    ],
    [[...BASE, "--tls-ca", "/ca"], {}, /--tls-ca only apply to an https:\/\/ endpoint/],
    [[...BASE, "--ssh-socket-path", "run/ssh.sock"], {}, /must be an absolute path/],
    [[...BASE, "--ssh-socket-path", "/ssh.sock"], {}, /must not live directly in "\/"/],
    [[...BASE, "--ssh-socket-path", "/run/x/"], {}, /must name a file/],
    [[...BASE, "--ssh-socket-path", "/" + "d".repeat(101) + "/s"], {}, /longer than 103 bytes/],
    [[...BASE, "--sshd", "sshd"], {}, /^--sshd must be an absolute path, got "sshd"$/],
    [[...BASE, "--ssh-host-key", "key"], {}, /^--ssh-host-key must be an absolute path/],
    [BASE, { OPENSHELL_TLS_CA: "ca" }, /^OPENSHELL_TLS_CA \(--tls-ca\) must be an absolute path/],
    [
      [...BASE, "--log-level", "loud"],
      {},
      /^--log-level must be one of error, warn, info, debug, trace, got "loud"$/,
    ],
    [
      [...BASE],
      { OPENSHELL_LOG_FORMAT: "xml" },
      /^OPENSHELL_LOG_FORMAT \(--log-format\) must be one of text, json, got "xml"$/,
    ],
    [[...BASE, "--port", "1"], {}, /^unknown option --port \(see --help\)$/],
    [
      [...BASE, "--supervisor-token", "s3cret"],
      {},
      /^--supervisor-token is not accepted on the command line, .* set OPENSHELL_SUPERVISOR_TOKEN instead$/,
    ],
    [[...BASE, "extra"], {}, /unexpected argument "extra" \(see --help\)/],
    [[...BASE, "--sandbox-id"], {}, /--sandbox-id needs a value/],
  ];
  for (const [args, env, message] of cases) fails(args, env, message);
});
