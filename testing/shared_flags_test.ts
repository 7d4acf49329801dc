/**
 * The options the gateway passes on to the VM driver follow the driver's
 * rules: a value the driver would refuse, the gateway refuses at start
 * with the same message; a value it accepts, the driver accepts from the
 * arguments the gateway builds, and reads the same.
 */
import assert from "node:assert/strict";
import { FlagError } from "../core/flags.ts";
import { parseDriverConfig } from "../driver_vm/config.ts";
import { driverArgs, parseGatewayConfig } from "../gateway/config.ts";

const PLAIN = ["--disable-tls", "--disable-gateway-auth"];
const DRIVER_BASE = ["--state-dir", "/var/lib/openshell/vm", "--openshell-endpoint", "http://h:1"];
const ENDPOINT = "http://127.0.0.1:8081";

/** The message a parse throws, or undefined when it accepts. */
function refusal(parse: () => unknown): string | undefined {
  try {
    parse();
    return undefined;
  } catch (e) {
    assert.ok(e instanceof FlagError, String(e));
    return e.message;
  }
}

Deno.test("the gateway refuses what the VM driver would refuse, with the driver's message", () => {
  // [gateway option, driver option, values]
  const cases: [string, string, string[]][] = [
    ["vm-mem-mib", "vm-mem-mib", ["64", "255", "256", "1536", "2Gi", "1048577", "lots"]],
    ["vm-vcpus", "vm-vcpus", ["0", "1", "64", "65", "-2"]],
    ["vm-accel", "vm-accel", ["auto", "TCG", "kvm", "fast"]],
    ["log-level", "log-level", ["trace", "DEBUG", "loud"]],
    ["vm-runtime-dir", "runtime-dir", ["/opt/rt", "/opt/a,b", "rel"]],
    ["vm-driver-state-dir", "state-dir", ["/v", "/my vms", `/${"d".repeat(90)}`, "v"]],
    ["grpc-endpoint", "openshell-endpoint", ["http://10.0.2.2:9", "http://h_x:1", "ftp://h"]],
  ];
  for (const [gatewayName, driverName, values] of cases) {
    for (const value of values) {
      const gw = refusal(() =>
        parseGatewayConfig([...PLAIN, `--${gatewayName}`, value], () => undefined)
      );
      const driver = refusal(() =>
        parseDriverConfig([...DRIVER_BASE, `--${driverName}`, value], () => undefined)
      );
      const what = `--${gatewayName} ${value}`;
      assert.equal(
        gw === undefined,
        driver === undefined,
        `${what}: gateway ${gw}, driver ${driver}`,
      );
      if (gw !== undefined) {
        assert.equal(gw.replace(`--${gatewayName}`, `--${driverName}`), driver, what);
      }
    }
  }
});

Deno.test("what the gateway accepts, the driver reads the same from the arguments it is given", () => {
  const parsed = parseGatewayConfig(
    [
      ...PLAIN,
      "--vm-mem-mib",
      "2Gi",
      "--vm-vcpus",
      "4",
      "--vm-accel",
      "TCG",
      "--log-level",
      "trace",
    ],
    (k) => ({ OPENSHELL_VM_RUNTIME_DIR: "/opt/rt/" } as Record<string, string>)[k],
  );
  assert.ok(!parsed.help);
  const driver = parseDriverConfig(driverArgs(parsed.config, ENDPOINT), () => undefined);
  assert.equal(driver.kind, "run");
  const c = (driver as { config: import("../driver_vm/config.ts").DriverConfig }).config;
  assert.deepEqual(
    [c.memMib, c.vcpus, c.accel, c.logLevel, c.runtimeDir, c.stateDir],
    [2048, 4, "tcg", "trace", "/opt/rt", "/var/lib/openshell/vm"],
  );
  assert.deepEqual(c.endpoint, { scheme: "http", host: "127.0.0.1", port: 8081 });
  // Defaults are declared once: the driver gets the gateway's, which are its own.
  const defaults = parseGatewayConfig(PLAIN, () => undefined);
  assert.ok(!defaults.help);
  const d = parseDriverConfig(driverArgs(defaults.config, ENDPOINT), () => undefined);
  const own = parseDriverConfig(DRIVER_BASE, () => undefined);
  assert.ok(d.kind === "run" && own.kind === "run");
  assert.deepEqual([d.config.memMib, d.config.vcpus, d.config.accel, d.config.runtimeDir], [
    own.config.memMib,
    own.config.vcpus,
    own.config.accel,
    own.config.runtimeDir,
  ]);
});
