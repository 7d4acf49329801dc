import assert from "node:assert/strict";
import {
  BOOT_POINTS,
  type BootLogLine,
  bootStages,
  gatewayLines,
  stageTable,
} from "./bench_boot.ts";

const T0 = 1_000_000;

/** The log lines of one boot: the kernel started at T0 + 1000 (host time). */
function lines(withStamps: boolean): BootLogLine[] {
  const k = T0 + 1000;
  const c = (atMs: number, message: string): BootLogLine => ({
    timestamp_ms: String(atMs),
    source: "console",
    message,
  });
  return [
    { timestamp_ms: T0 + 100, source: "gateway", message: "vm Started: qemu started (accel tcg)" },
    // Arrived 30 ms late: the kernel start is taken from the earliest line.
    c(k + 2030, "openshell-init: userspace up after 2.00s"),
    ...(withStamps
      ? [
        c(
          k + 3300,
          "openshell-init: boot stages (uptime s): modules=2.50 disks=2.70 network=3.20",
        ),
      ]
      : []),
    c(k + 3300, "openshell-init: guest ready after 3.30s (sandbox x: 8G disk)"),
    c(k + 3500, "openshell-init: starting supervisor after 3.50s"),
    c(
      k + 6500,
      "sshd socket listening path=/run/openshell/ssh.sock loaded_ms=2000 startup_ms=3000",
    ),
    {
      timestamp_ms: k + 7000,
      source: "gateway",
      message: "supervisor session accepted sandbox=x session=s",
    },
  ];
}

Deno.test("bench_boot: stages split create → READY at each point and sum to the total", () => {
  const ready = T0 + 1000 + 7200;
  const stages = bootStages(lines(true), T0, ready);
  assert.deepEqual(stages.map((s) => s.name), BOOT_POINTS.filter((p) => p !== "init: resize2fs"));
  assert.deepEqual(stages.map((s) => Math.round(s.ms)), [
    100, // create → qemu started
    900, // qemu → kernel start
    2000, // kernel
    500, // modules
    200, // disks
    500, // network (no resize stamp: no resize stage)
    300, // → supervisor exec
    2000, // Deno + bundle
    1000, // supervisor start-up
    500, // session
    200, // READY
  ]);
  assert.equal(Math.round(stages.reduce((n, s) => n + s.ms, 0)), ready - T0);
});

Deno.test("bench_boot: a runtime's resize stamp is a stage of its own", () => {
  const withResize = lines(true).map((l) =>
    typeof l.message === "string" && l.message.includes("boot stages")
      ? { ...l, message: l.message.replace("disks=2.70", "disks=2.70 resize=3.00") }
      : l
  );
  const stages = bootStages(withResize, T0, T0 + 8200);
  assert.deepEqual(
    stages.slice(4, 7).map((s) => [s.name, Math.round(s.ms)]),
    [[BOOT_POINTS[4], 200], [BOOT_POINTS[5], 300], [BOOT_POINTS[6], 200]],
  );
});

Deno.test("bench_boot: a missing point merges its time into the next stage", () => {
  const stages = bootStages(lines(false), T0, T0 + 8200);
  const merged = stages.find((s) => s.name.startsWith(`${BOOT_POINTS[3]} + `));
  assert.equal(
    merged?.name,
    [BOOT_POINTS[3], BOOT_POINTS[4], BOOT_POINTS[6], BOOT_POINTS[7]].join(" + "),
  );
  assert.equal(Math.round(merged!.ms), 1500);
  assert.equal(Math.round(stages.reduce((n, s) => n + s.ms, 0)), 8200);
});

Deno.test("bench_boot: the table has one column per run and the median of the measured ones", () => {
  const run = (label: string, ms: number) => ({
    label,
    totalMs: ms,
    stages: [{ name: "a", ms }],
  });
  const runs = [run("warm-up", 100), run("run 1", 10), run("run 2", 30), run("run 3", 20)];
  const text = stageTable(runs, runs.slice(1));
  const row = text.split("\n").find((l) => l.startsWith("| a "))!;
  assert.deepEqual(row.split("|").map((c) => c.trim()).filter(Boolean), [
    "a",
    "100",
    "10",
    "30",
    "20",
    "20",
  ]);
});

Deno.test("bench_boot: the gateway's lines about one sandbox, with their times", () => {
  const stderr = [
    "2030-01-02T03:04:05.678Z INFO  openshell-gateway: supervisor session accepted sandbox=a session=s1",
    "2030-01-02T03:04:06.000Z INFO  openshell-gateway: supervisor session accepted sandbox=b session=s2",
    "not a log line sandbox=a",
  ].join("\n");
  assert.deepEqual(gatewayLines(stderr, "a"), [{
    timestamp_ms: Date.parse("2030-01-02T03:04:05.678Z"),
    source: "gateway",
    message: "supervisor session accepted sandbox=a session=s1",
  }]);
});
