import assert from "node:assert/strict";
import { FlagError } from "../core/flags.ts";
import { DRIVER_FLAGS, driverUsage, parseDriverConfig, socketPath } from "./config.ts";

const base = ["--state-dir", "/var/lib/os/vm", "--openshell-endpoint", "http://127.0.0.1:8080"];
const noEnv = () => undefined;

function run(args: string[], env: (n: string) => string | undefined = noEnv) {
  const p = parseDriverConfig(args, env);
  if (p.kind !== "run") throw new Error("expected a run config");
  return p.config;
}

Deno.test("config: defaults", () => {
  const c = run(base);
  assert.equal(c.stateDir, "/var/lib/os/vm");
  assert.deepEqual(c.endpoint, { scheme: "http", host: "127.0.0.1", port: 8080 });
  assert.equal(c.accel, "auto");
  assert.equal(c.vcpus, 2);
  assert.equal(c.memMib, 1024);
  assert.equal(c.diskGiB, 8);
  assert.equal(c.logLevel, "info");
  assert.equal(c.qemu, "/usr/bin/qemu-system-x86_64");
  assert.equal(c.qemuImg, "/usr/bin/qemu-img");
  assert.equal(c.setpriv, "/usr/bin/setpriv");
  assert.equal(c.prlimit, "/usr/bin/prlimit");
  assert.equal(c.vmUser, "openshell-vm");
  assert.equal(c.forwarder, "socat");
  assert.equal(c.maxGuestConnections, 8);
  assert.equal(c.egressSocket, undefined, "no egress unless the gateway passes its socket");
  assert.equal(socketPath(c.stateDir), "/var/lib/os/vm/compute-driver.sock");
});

Deno.test("config: every flag, and flags win over their env twins", () => {
  const env: Record<string, string> = { OPENSHELL_VM_VCPUS: "8", OPENSHELL_VM_ACCEL: "kvm" };
  const c = run([
    ...base,
    "--runtime-dir",
    "/rt/",
    "--vm-accel",
    "TCG",
    "--vm-mem-mib",
    "512",
    "--log-level",
    "debug",
    "--qemu",
    "/opt/q",
    "--max-guest-connections",
    "3",
    "--prlimit",
    "/opt/prlimit",
    "--vm-user",
    "qemu-vms",
    "--egress-socket",
    "/var/lib/os/egress/guest.sock",
  ], (n) => env[n]);
  assert.equal(c.maxGuestConnections, 3);
  assert.equal(c.prlimit, "/opt/prlimit");
  assert.equal(c.vmUser, "qemu-vms");
  assert.equal(
    run(base, (n) => ({ OPENSHELL_VM_USER: "vmz" } as Record<string, string>)[n]).vmUser,
    "vmz",
  );
  for (const bad of ["root", "Bad", "a b", "x:y", "9x"]) {
    assert.throws(
      () => run([...base, "--vm-user", bad]),
      /FlagError: --vm-user must name an unprivileged account/,
      bad,
    );
  }
  assert.equal(c.runtimeDir, "/rt");
  assert.equal(c.accel, "tcg");
  assert.equal(c.vcpus, 8); // from the env twin
  assert.equal(c.memMib, 512);
  assert.equal(c.logLevel, "debug");
  assert.equal(c.qemu, "/opt/q");
  assert.equal(c.egressSocket, "/var/lib/os/egress/guest.sock");
});

Deno.test("config: --egress-socket and its twin; --allow-egress is gone", () => {
  const env = (n: string) => n === "OPENSHELL_EGRESS_SOCKET" ? "/e/guest.sock" : undefined;
  assert.equal(run(base, env).egressSocket, "/e/guest.sock");
  assert.equal(run([...base, "--egress-socket", "/f/g.sock"], env).egressSocket, "/f/g.sock");
  assert.equal(
    run(base, (n) => n === "OPENSHELL_EGRESS_SOCKET" ? "" : undefined).egressSocket,
    undefined,
  );
  assert.throws(() => run([...base, "--egress-socket", "rel.sock"]), /must be an absolute path/);
  assert.throws(
    () => run([...base, "--egress-socket", `/${"x".repeat(110)}.sock`]),
    /--egress-socket is too long/,
  );
  assert.throws(() => run([...base, "--allow-egress"]), /allow-egress/);
});

Deno.test("config: an unspecified endpoint host is dialled on loopback", () => {
  assert.equal(
    run(["--state-dir", "/s", "--openshell-endpoint", "http://0.0.0.0:9"]).endpoint.host,
    "127.0.0.1",
  );
  assert.equal(
    run(["--state-dir", "/s", "--openshell-endpoint", "http://[::]:9"]).endpoint.host,
    "::1",
  );
});

Deno.test("config: bad input gets one clear line each", () => {
  const cases: [string[], RegExp][] = [
    [[], /^--state-dir \(or OPENSHELL_VM_DRIVER_STATE_DIR\) is required$/],
    [["--state-dir", "/s"], /^--openshell-endpoint \(or OPENSHELL_GRPC_ENDPOINT\) is required$/],
    [["--state-dir", "rel", "--openshell-endpoint", "http://h:1"], /absolute path/],
    [["--state-dir", "/s", "--openshell-endpoint", "ftp://h:1"], /http:\/\/ or https:\/\//],
    [["--state-dir", "/s", "--openshell-endpoint", "nope"], /not a URL/],
    [
      [...base, "--vm-accel", "fast"],
      /^--vm-accel must be one of auto, kvm, hvf, tcg, got "fast"$/,
    ],
    [[...base, "--vm-vcpus", "0"], /^--vm-vcpus must be between 1 and 64, got 0$/],
    [[...base, "--vm-vcpus", "two"], /^--vm-vcpus must be a whole number, got "two"$/],
    [[...base, "--vm-mem-mib", "128"], /^--vm-mem-mib must be between 256 and 1048576 MiB/],
    [
      [...base, "--log-level", "loud"],
      /^--log-level must be one of error, warn, info, debug, trace/,
    ],
    [[...base, "--bogus"], /^unknown option --bogus \(see --help\)$/],
    [[...base, "extra"], /^unexpected argument "extra"/],
    [[...base, "--qemu", "/opt/q,x"], /^--qemu must not contain commas/],
    [[...base, "--forwarder", "socat;rm"], /plain program name/],
    [[...base, "--max-guest-connections", "0"], /between 1 and 1024/],
    [["--state-dir", "/my vms", "--openshell-endpoint", "http://h:1"], /only letters, digits/],
    [["--state-dir", "/a:b", "--openshell-endpoint", "http://h:1"], /only letters, digits/],
    [
      ["--state-dir", `/${"x".repeat(100)}`, "--openshell-endpoint", "http://h:1"],
      /^--state-dir is too long: .* exceeds the 103-byte Unix socket path limit/,
    ],
  ];
  for (const [args, re] of cases) {
    assert.throws(() => parseDriverConfig(args, noEnv), (e: unknown) => {
      assert.ok(e instanceof FlagError, String(e));
      assert.match(e.message, re);
      assert.ok(!e.message.includes("\n"), "one line");
      return true;
    });
  }
});

Deno.test("config: --help and --version; help lists every option with its env twin", () => {
  assert.equal(parseDriverConfig(["--help"], noEnv).kind, "help");
  assert.equal(parseDriverConfig(["--version"], noEnv).kind, "version");
  const help = driverUsage().replace(/\s+/g, " ");
  for (const [name, spec] of Object.entries(DRIVER_FLAGS)) {
    assert.ok(help.includes(`--${name}`), name);
    if ("env" in spec) assert.ok(help.includes(`env ${spec.env}`), spec.env);
  }
  // It used to leave out trace: the level's choices are now listed from the one declaration.
  assert.match(help, /--log-level LEVEL .*\[one of error, warn, info, debug, trace; default info;/);
});

Deno.test("config: the default disk size and qemu-img", () => {
  const c = run([...base, "--vm-disk-gib", "20", "--qemu-img", "/opt/qemu-img"]);
  assert.equal(c.diskGiB, 20);
  assert.equal(c.qemuImg, "/opt/qemu-img");
  assert.equal(run(base, (n) => n === "OPENSHELL_VM_DISK_GIB" ? "12" : undefined).diskGiB, 12);
  assert.equal(run([...base, "--vm-disk-gib", "16Gi"]).diskGiB, 16);
  assert.throws(() => run([...base, "--vm-disk-gib", "0"]), /between 1 and 2048 GiB/);
  assert.throws(() => run([...base, "--vm-disk-gib", "4096"]), /between 1 and 2048 GiB/);
  assert.throws(() => run([...base, "--qemu-img", "qemu-img"]), /absolute path/);
});
