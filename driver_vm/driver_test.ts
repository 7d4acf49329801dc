import assert from "node:assert/strict";
import { PROVISION_SSH_HOST_KEY, PROVISION_SUPERVISOR_TOKEN } from "../core/provisioning.ts";
import type { DriverSandbox, DriverWatchSandboxesEvent, Wire } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import {
  MANIFEST_FILE,
  parseManifest,
  validateSandbox,
  VmDriver,
  type VmDriverOptions,
} from "./driver.ts";
import { CONSOLE_LOG_MAX_BYTES } from "./console.ts";
import { LOG_LINE_BURST } from "../core/rate_limit.ts";
import { MAX_LINE_BYTES } from "../core/text.ts";
import { Disks, type RunProgram } from "./disk.ts";
import { FakeLauncher, FakeQmp, fakeRuntime, memoryLogger } from "./testing.ts";
import { Images } from "./images.ts";
import { toStruct } from "../core/resources.ts";

/** A template as the gateway sends it for `--cpus`, `--memory`, `--disk-gib` (upstream's shape). */
function sized(o: { cpu?: string; memory?: string; disk?: string }) {
  return {
    resources: o.cpu || o.memory
      ? {
        cpu_request: "",
        cpu_limit: o.cpu ?? "",
        memory_request: "",
        memory_limit: o.memory ?? "",
      }
      : null,
    platform_config: o.disk
      ? toStruct({ resources_raw: { limits: { "ephemeral-storage": o.disk } } })
      : null,
  };
}
import { waitFor } from "../core/testing.ts";

interface Fixture {
  dir: string;
  driver: VmDriver;
  launcher: FakeLauncher;
  qmp: FakeQmp;
  /** qemu-img runs (arguments). */
  qemuImg: string[][];
  events: DriverWatchSandboxesEvent[];
  /** A second driver over the same state dir (a driver restart); shut down with the fixture. */
  restart(
    o?: { egressSocket?: string },
  ): Promise<{ driver: VmDriver; launcher: FakeLauncher; qmp: FakeQmp }>;
  [Symbol.asyncDispose](): Promise<void>;
}

async function fixture(
  options: {
    stopGraceMs?: number;
    powerdownGraceMs?: number;
    consoleLogMaxBytes?: number;
    now?: () => number;
    vm?: Pick<VmDriverOptions, "vmUser" | "bootRuntime">;
    /** Named images over the fixture's state dir. */
    images?: (stateDir: string, users: () => Map<string, string[]>) => Images;
    /** The egress proxy's guest socket (egress on); `restart` may say otherwise. */
    egressSocket?: string;
  } = {},
): Promise<Fixture> {
  const dir = await Deno.makeTempDir({ prefix: "vmdrv" });
  const runtime = await fakeRuntime(`${dir}/rt`);
  await Deno.writeFile(`${dir}/rt/rootfs.img`, new Uint8Array(4096));
  const qemuImg: string[][] = [];
  // qemu-img's stand-in: records the call and creates the overlay file.
  const run: RunProgram = async (_program, args) => {
    qemuImg.push([...args]);
    await Deno.writeTextFile(args[args.length - 2], "overlay");
    return { code: 0, stderr: "" };
  };
  const make = (launcher: FakeLauncher, qmp: FakeQmp, egressSocket = options.egressSocket) =>
    new VmDriver({
      stateDir: `${dir}/state`,
      runtime,
      launcher,
      qmp,
      image: () => Promise.resolve({ path: `${dir}/rt/rootfs.img`, key: "img1", format: "raw" }),
      disks: new Disks({
        stateDir: `${dir}/state`,
        qemuImg: "/usr/bin/qemu-img",
        vmUser: options.vm?.vmUser,
        run,
      }),
      host: { cpus: 4, memMib: 4096 },
      accel: () => Promise.resolve("tcg"),
      vcpus: 2,
      memMib: 512,
      logLevel: "info",
      gateway: { host: "127.0.0.1", port: 4000 },
      forwarder: "socat",
      ...(egressSocket ? { egressSocket } : {}),
      log: memoryLogger().log,
      stopGraceMs: options.stopGraceMs ?? 50,
      powerdownGraceMs: options.powerdownGraceMs ?? 50,
      consoleLogMaxBytes: options.consoleLogMaxBytes,
      now: options.now,
      ...(images ? { images } : {}),
      ...options.vm,
    });
  let users = () => new Map<string, string[]>();
  const images = options.images?.(`${dir}/state`, () => users());
  const launcher = new FakeLauncher();
  const qmp = new FakeQmp(launcher);
  const driver = make(launcher, qmp);
  users = () => driver.imageUsers();
  const others: VmDriver[] = [];
  const events: DriverWatchSandboxesEvent[] = [];
  const unwatch = driver.watch((e) => events.push(e));
  return {
    dir,
    driver,
    launcher,
    qmp,
    qemuImg,
    events,
    async restart(o = { egressSocket: options.egressSocket }) {
      const l = new FakeLauncher();
      const q = new FakeQmp(l);
      const d = make(l, q, o.egressSocket);
      others.push(d);
      await d.restore();
      return { driver: d, launcher: l, qmp: q };
    },
    async [Symbol.asyncDispose]() {
      unwatch();
      await driver.shutdown(10);
      for (const d of others) await d.shutdown(10);
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function sandbox(id: string, extra: Wire<DriverSandbox> = {}): Wire<DriverSandbox> {
  return { id, name: `name-${id}`, namespace: "default", spec: { environment: {} }, ...extra };
}

function reasons(events: DriverWatchSandboxesEvent[], id: string): string[] {
  return events.flatMap((e) =>
    e.payload === "sandbox" && e.sandbox.sandbox!.id === id
      ? e.sandbox.sandbox!.status!.conditions.filter((c) => c.type === "Ready")
        .map((c) => `${c.status}/${c.reason}`)
      : []
  );
}

Deno.test("driver: create writes the guest files and starts one VM reporting Starting", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("sb-1", {
    spec: {
      log_level: "debug",
      environment: {
        FOO: "bar",
        [PROVISION_SSH_HOST_KEY]: "KEY",
        [PROVISION_SUPERVISOR_TOKEN]: "TOK",
      },
    },
  }));
  assert.equal(f.launcher.vms.length, 1);
  const spec = f.launcher.vms[0].spec;
  const sdir = `${f.dir}/state/sandboxes/sb-1`;
  assert.equal((await Deno.stat(`${sdir}/console.log`)).mode! & 0o777, 0o600);
  assert.equal(spec.accel, "tcg");
  assert.deepEqual(spec.fwCfg.map((x) => x.name), [
    "config",
    "environment",
    "network",
    "ssh_host_key",
    "supervisor_token",
  ]);
  // No egress: no proxy forwards, the sandbox's environment alone, no name server.
  assert.equal(spec.egress, undefined);
  const files = await fwCfgContents(spec);
  assert.equal(files.environment, '{"FOO":"bar"}\n');
  assert.match(files.network, /^OPENSHELL_EGRESS_PROXY=''$/m);
  assert.equal(await Deno.readTextFile(`${sdir}/guest/ssh_host_key`), "KEY\n");
  assert.equal(await Deno.readTextFile(`${sdir}/guest/supervisor_token`), "TOK");
  assert.equal((await Deno.stat(`${sdir}/guest/supervisor_token`)).mode! & 0o777, 0o600);
  const env = await Deno.readTextFile(`${sdir}/guest/environment`);
  assert.equal(env, '{"FOO":"bar"}\n', "provisioning secrets never reach the user environment");
  assert.match(await Deno.readTextFile(`${sdir}/guest/config`), /OPENSHELL_LOG_LEVEL=debug/);
  const snap = f.driver.get("sb-1", "");
  assert.deepEqual(snap.status!.conditions.map((c) => [c.type, c.status, c.reason]), [
    ["Ready", "False", "Starting"],
    ["Resources", "True", "Allocated"],
  ]);
  assert.ok(!reasons(f.events, "sb-1").some((r) => r.startsWith("True")), "never Ready=True");
});

Deno.test("driver: what it cannot honour is FAILED_PRECONDITION; bad input INVALID_ARGUMENT", async () => {
  await using f = await fixture();
  const cases: [Wire<DriverSandbox> | null, number, RegExp][] = [
    [null, Code.INVALID_ARGUMENT, /sandbox is required/],
    [{ id: "", spec: {} }, Code.INVALID_ARGUMENT, /sandbox.id is required/],
    [{ id: "../x", spec: {} }, Code.INVALID_ARGUMENT, /sandbox.id must be/],
    [{ id: "a" }, Code.INVALID_ARGUMENT, /spec is required/],
    [sandbox("g", { spec: { gpu: true } }), Code.FAILED_PRECONDITION, /GPU/],
    [
      sandbox("i", { spec: { template: { image: "ubuntu" } } }),
      Code.FAILED_PRECONDITION,
      /template.image/,
    ],
    [
      sandbox("s", { spec: { template: { agent_socket_path: "/x" } } }),
      Code.FAILED_PRECONDITION,
      /agent_socket_path/,
    ],
    [
      sandbox("r", { spec: { template: { resources: { cpu_limit: "two" } } } }),
      Code.INVALID_ARGUMENT,
      /cpu limit must be a number of CPUs/,
    ],
    [
      sandbox("m", { spec: { template: { resources: { memory_limit: "8Gi" } } } }),
      Code.RESOURCE_EXHAUSTED,
      /asks for 8192 MiB; this host has 4096 MiB/,
    ],
    [
      sandbox("c", { spec: { template: { resources: { cpu_limit: "6" } } } }),
      Code.RESOURCE_EXHAUSTED,
      /asks for 6 CPUs; this host has 4/,
    ],
    [
      sandbox("p", { spec: { template: { platform_config: { fields: { a: {} } } } } }),
      Code.FAILED_PRECONDITION,
      /platform_config\.a/,
    ],
    [
      sandbox("e", { spec: { environment: { "A-B": "1" } } }),
      Code.INVALID_ARGUMENT,
      /variable name/,
    ],
  ];
  for (const [sb, code, re] of cases) {
    await assert.rejects(f.driver.create(sb), (e: unknown) => {
      assert.ok(e instanceof StatusError);
      assert.equal(e.code, code, e.message);
      assert.match(e.message, re);
      return true;
    });
  }
  assert.equal(f.launcher.vms.length, 0);
  // An empty template with empty resources is fine.
  validateSandbox(
    sandbox("ok", { spec: { template: { resources: {}, platform_config: { fields: {} } } } }),
  );
});

Deno.test("driver: resources from the template size the VM and its disk; reported as a condition", async () => {
  await using f = await fixture();
  // What the gateway sends for `sandbox create --cpus 1500m --memory 1536Mi --disk-gib 12`.
  const template = sized({ cpu: "1500m", memory: "1536Mi", disk: "12Gi" });
  await f.driver.validate(sandbox("big", { spec: { template } }));
  await f.driver.create(sandbox("big", { spec: { template } }));
  const spec = f.launcher.vms[0].spec;
  assert.deepEqual([spec.vcpus, spec.memMib], [2, 1536]);
  const sdir = `${f.dir}/state/sandboxes/big`;
  assert.deepEqual(spec.rootDisk, {
    overlay: `${sdir}/disk.qcow2`,
    base: `${f.dir}/state/images/img1.img`,
    baseFormat: "raw",
  });
  assert.deepEqual(f.qemuImg, [[
    "create",
    "-q",
    "-f",
    "qcow2",
    "-b",
    `${f.dir}/state/images/img1.img`,
    "-F",
    "raw",
    `${sdir}/disk.qcow2`,
    "12G",
  ]]);
  const res = f.driver.get("big", "").status!.conditions.find((c) => c.type === "Resources")!;
  assert.equal(res.message, "2 vCPUs, 1536 MiB memory, 12 GiB disk");
  assert.deepEqual(JSON.parse(await Deno.readTextFile(`${sdir}/vm.json`)), {
    resources: { vcpus: 2, memMib: 1536, diskGiB: 12 },
    image: { key: "img1", format: "raw" },
  });
  // Nothing asked: the driver's defaults.
  await f.driver.create(sandbox("small"));
  assert.deepEqual([f.launcher.vms[1].spec.vcpus, f.launcher.vms[1].spec.memMib], [2, 512]);
  assert.equal(f.qemuImg[1].at(-1), "8G");
  // The disk goes with the sandbox.
  await f.driver.delete("big", "");
  await assert.rejects(Deno.stat(`${sdir}/disk.qcow2`), Deno.errors.NotFound);
});

Deno.test("driver: a disk too small for the image is INVALID_ARGUMENT before any VM starts", async () => {
  await using f = await fixture();
  await Deno.truncate(`${f.dir}/rt/rootfs.img`, 2 * 2 ** 30 + 1); // sparse: 2 GiB + 1 byte
  const sb = sandbox("tiny", { spec: { template: sized({ disk: "2Gi" }) } });
  for (const call of [() => f.driver.validate(sb), () => f.driver.create(sb)]) {
    await assert.rejects(call(), (e: StatusError) => {
      assert.equal(e.code, Code.INVALID_ARGUMENT);
      assert.match(e.message, /cannot hold the image .*ask for at least 3 GiB/);
      return true;
    });
  }
  assert.equal(f.launcher.vms.length, 0);
  assert.equal(f.driver.list().length, 0);
});

Deno.test("driver: a duplicate id is ALREADY_EXISTS, also while the first is starting", async () => {
  await using f = await fixture();
  const first = f.driver.create(sandbox("dup"));
  await assert.rejects(
    f.driver.create(sandbox("dup")),
    (e: StatusError) => e.code === Code.ALREADY_EXISTS,
  );
  await first;
  await assert.rejects(
    f.driver.create(sandbox("dup")),
    (e: StatusError) => e.code === Code.ALREADY_EXISTS,
  );
  assert.equal(f.launcher.vms.length, 1);
});

Deno.test("driver: a missing runtime is FAILED_PRECONDITION naming vm:rootfs", async () => {
  await using f = await fixture();
  await Deno.remove(`${f.dir}/rt/openshell.img`);
  await assert.rejects(f.driver.create(sandbox("x")), (e: StatusError) => {
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.match(e.message, /openshell\.img is missing; build it with: deno task vm:rootfs/);
    return true;
  });
});

Deno.test("driver: a VM that exits is ProcessExited with its status plus a Warning event", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("ex"));
  f.launcher.vms[0].exit(137, "SIGKILL");
  await waitFor(
    "ProcessExited",
    () => reasons(f.events, "ex").includes("False/ProcessExited"),
    { timeoutMs: 3000, intervalMs: 10 },
  );
  const c = f.driver.get("ex", "").status!.conditions[0];
  assert.equal(c.reason, "ProcessExited");
  assert.equal(
    c.message,
    "VM process exited with status 137 (SIGKILL); its disk is kept: start the sandbox again, " +
      "or delete it",
  );
  const ev = f.events.find((e) =>
    e.payload === "platform_event" && e.platform_event.event!.reason === "ProcessExited"
  );
  assert.ok(ev && ev.payload === "platform_event");
  assert.equal(ev.platform_event.event!.source, "vm");
  assert.equal(ev.platform_event.event!.type, "Warning");
  assert.equal(ev.platform_event.sandbox_id, "ex");
});

Deno.test("driver: delete sends SIGTERM, removes the state dir and reports Deleted", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("del"));
  assert.equal(await f.driver.delete("", "name-del"), true, "by name");
  assert.deepEqual(f.launcher.vms[0].signals, ["SIGTERM"]);
  await assert.rejects(Deno.stat(`${f.dir}/state/sandboxes/del`), Deno.errors.NotFound);
  assert.ok(reasons(f.events, "del").includes("False/Deleting"));
  assert.ok(
    !reasons(f.events, "del").includes("False/ProcessExited"),
    "a deleted VM is not an error",
  );
  assert.equal(f.events.at(-1)?.payload, "deleted");
  assert.equal(f.driver.list().length, 0);
  assert.equal(await f.driver.delete("del", ""), false, "unknown → deleted=false");
});

Deno.test("driver: delete escalates to SIGKILL when SIGTERM is ignored", async () => {
  await using f = await fixture({ stopGraceMs: 30 });
  f.launcher.ignoreTerm = true;
  await f.driver.create(sandbox("stubborn"));
  assert.equal(await f.driver.delete("stubborn", ""), true);
  assert.deepEqual(f.launcher.vms[0].signals, ["SIGTERM", "SIGKILL"]);
});

Deno.test("driver: watch delivers current snapshots first, then live events; list sorted by name", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("b", { name: "zeta" }));
  await f.driver.create(sandbox("a", { name: "alpha" }));
  const seen: DriverWatchSandboxesEvent[] = [];
  const stop = f.driver.watch((e) => seen.push(e));
  assert.deepEqual(
    seen.map((e) => e.payload === "sandbox" ? e.sandbox.sandbox!.name : e.payload),
    ["alpha", "zeta"],
  );
  await f.driver.delete("a", "");
  assert.equal(seen.at(-1)?.payload, "deleted");
  stop();
  assert.deepEqual(f.driver.list().map((s) => s.name), ["zeta"]);
  assert.throws(() => f.driver.get("", ""), (e: StatusError) => e.code === Code.INVALID_ARGUMENT);
  assert.throws(() => f.driver.get("nope", ""), (e: StatusError) => e.code === Code.NOT_FOUND);
  assert.throws(
    () => f.driver.get("b", "alpha"),
    (e: StatusError) => e.code === Code.FAILED_PRECONDITION,
  );
});

function consoleEvents(events: DriverWatchSandboxesEvent[], id: string): string[] {
  return events.flatMap((e) =>
    e.payload === "platform_event" && e.platform_event.sandbox_id === id &&
      e.platform_event.event!.source === "console"
      ? [e.platform_event.event!.message]
      : []
  );
}

Deno.test("driver: console lines become console platform events and console.log", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("con"));
  const vm = f.launcher.vms[0];
  await vm.writeConsole("\x1b[2Jfirst line\r\nsecond\n\x1b]52;c;ZXZpbA==\x07third\npart");
  await vm.writeStderr("qemu-system-x86_64: warning: something\n");
  const lines = () => consoleEvents(f.events, "con");
  await waitFor("console events", () => lines().length >= 4, { timeoutMs: 3000, intervalMs: 10 });
  assert.deepEqual(
    lines().filter((l) => !l.startsWith("qemu: ")),
    ["first line", "second", "third"],
    "escapes (OSC 52 too) and CRs removed; the partial last line waits for its newline",
  );
  assert.ok(lines().includes("qemu: qemu-system-x86_64: warning: something"));
  const log = await Deno.readTextFile(`${f.dir}/state/sandboxes/con/console.log`);
  assert.ok(log.includes("first line\r\nsecond\n"), "console.log keeps the raw bytes");
  assert.ok(log.includes("qemu: qemu-system-x86_64: warning: something\n"));
  vm.exit(0);
  await waitFor("the last line at exit", () => lines().includes("part") || undefined);
});

Deno.test("driver: a console flood is capped in lines, rate and console.log size", async () => {
  await using f = await fixture({ now: () => 1_000_000 }); // a frozen clock: no refill
  await f.driver.create(sandbox("flood"));
  const vm = f.launcher.vms[0];
  // one 1 MiB line, then 3,000 short ones, then 9 MiB more of long lines: 13 MiB in all
  await vm.writeConsole("y".repeat(1024 * 1024) + "\n");
  for (let i = 0; i < 3_000; i++) await vm.writeConsole(`line ${i}\n`);
  const chunk = ("z".repeat(64 * 1024 - 1) + "\n").repeat(16);
  for (let i = 0; i < 9; i++) await vm.writeConsole(chunk);
  vm.exit(0);
  const dir = `${f.dir}/state/sandboxes/flood`;
  await waitFor("the console drained", () => {
    const lines = consoleEvents(f.events, "flood");
    return lines.length >= LOG_LINE_BURST ? lines : undefined;
  });
  // the pump finishes when the VM's output ends
  await waitFor("console.log rotated", async () => {
    try {
      return (await Deno.stat(`${dir}/console.log.1`)).size > 0 ? true : undefined;
    } catch {
      return undefined;
    }
  });
  const lines = consoleEvents(f.events, "flood");
  assert.equal(
    lines[0],
    "y".repeat(MAX_LINE_BYTES) + `…[truncated ${1024 * 1024 - MAX_LINE_BYTES} bytes]`,
  );
  assert.ok(lines.every((l) => l.length <= MAX_LINE_BYTES + 40));
  // the burst went through, the rest was dropped (the clock did not move)
  assert.equal(lines.length, LOG_LINE_BURST);
  assert.ok((await Deno.stat(`${dir}/console.log`)).size <= CONSOLE_LOG_MAX_BYTES);
  assert.ok((await Deno.stat(`${dir}/console.log.1`)).size <= CONSOLE_LOG_MAX_BYTES);
});

Deno.test("driver: after a burst, one event says how many console lines were dropped", async () => {
  let now = 1_000_000;
  await using f = await fixture({ now: () => now });
  await f.driver.create(sandbox("burst"));
  const vm = f.launcher.vms[0];
  await vm.writeConsole("x\n".repeat(LOG_LINE_BURST + 500));
  const lines = () => consoleEvents(f.events, "burst");
  await waitFor("the burst", () => lines().length >= LOG_LINE_BURST || undefined);
  now += 60_000;
  await vm.writeConsole("after\n");
  await waitFor("the line after", () => lines().includes("after") || undefined);
  const tail = lines().slice(-2);
  assert.match(tail[0], /^500 console lines dropped: more than 200 lines or 256 KiB per second$/);
  assert.equal(tail[1], "after");
});

Deno.test("driver: a failed launch cleans up and reports INTERNAL", async () => {
  await using f = await fixture();
  f.launcher.failWith = "qemu: not found";
  await assert.rejects(f.driver.create(sandbox("bad")), (e: StatusError) => {
    assert.equal(e.code, Code.INTERNAL);
    assert.match(e.message, /qemu: not found/);
    return true;
  });
  assert.equal(f.driver.list().length, 0);
  await assert.rejects(Deno.stat(`${f.dir}/state/sandboxes/bad`), Deno.errors.NotFound);
});

Deno.test("driver: qemu boots the runtime copy it can read; the files qemu uses are its own", async (t) => {
  const isRoot = Deno.uid() === 0;
  const vmUser = { name: "nobody", uid: 65534, gid: 65534 };
  let boots = 0;
  await using f = await fixture({
    vm: {
      vmUser: isRoot ? vmUser : undefined,
      bootRuntime: () => {
        boots++;
        return Promise.resolve({ kernel: "/copy/vmlinuz", initramfs: "/copy/i", disk: "/copy/d" });
      },
    },
  });
  await f.driver.create(sandbox("sb-own"));
  const spec = f.launcher.vms[0].spec;
  assert.deepEqual([spec.kernel, spec.initramfs, spec.disk], [
    "/copy/vmlinuz",
    "/copy/i",
    "/copy/d",
  ]);
  assert.equal(boots, 1);
  const sdir = `${f.dir}/state/sandboxes/sb-own`;
  assert.equal(spec.pidFile, `${sdir}/qemu.pid`);
  assert.equal(await Deno.readTextFile(spec.pidFile), "", "qemu's pid file exists before qemu");
  await t.step({
    name: "as root: qemu's files are the VM user's, its dirs root's and only searchable",
    ignore: !isRoot,
    fn: async () => {
      for (const file of [spec.pidFile, ...spec.fwCfg.map((x) => x.file)]) {
        const st = await Deno.stat(file);
        assert.deepEqual([st.uid, st.gid, st.mode! & 0o777], [65534, 65534, 0o600], file);
      }
      for (const d of [`${f.dir}/state/sandboxes`, sdir, `${sdir}/guest`]) {
        const st = await Deno.stat(d);
        assert.deepEqual([st.uid, st.gid, st.mode! & 0o777], [0, 65534, 0o710], d);
      }
    },
  });
});

// ---- egress ----------------------------------------------------------------

Deno.test("driver: with an egress socket, each VM gets proxy and DNS forwards and the proxy variables", async () => {
  const egressSocket = "/run/egress/guest.sock";
  await using f = await fixture({ egressSocket });
  await f.driver.create(sandbox("eg", { spec: { environment: { FOO: "bar" } } }));
  const spec = f.launcher.vms[0].spec;
  assert.ok(spec.egress, "the VM gets the egress forwards");
  const fwd = `${f.dir}/state/fwd/`;
  const paths = [spec.gatewaySocket, spec.egress.proxySocket, spec.egress.dnsSocket];
  assert.equal(new Set(paths).size, 3, "one socket per route");
  for (const p of paths) assert.ok(p.startsWith(fwd) && (await Deno.stat(p)).isSocket, p);
  const files = await fwCfgContents(spec);
  const env = JSON.parse(files.environment);
  assert.equal(env.FOO, "bar");
  assert.equal(env.HTTPS_PROXY, "http://10.0.2.101:3128");
  assert.equal(env.http_proxy, "http://10.0.2.101:3128");
  assert.equal(env.NO_PROXY, "localhost,127.0.0.1,::1");
  assert.match(files.network, /^OPENSHELL_EGRESS_DNS=10\.0\.2\.101$/m);
  // The sandbox's own environment is kept apart (a boot without egress drops the proxy's).
  assert.equal(
    await Deno.readTextFile(`${f.dir}/state/sandboxes/eg/guest/environment`),
    '{"FOO":"bar"}\n',
  );
  // Stopped: its forwarder sockets go.
  await f.driver.stop("eg", "");
  for (const p of paths) await assert.rejects(Deno.stat(p), Deno.errors.NotFound);
});

Deno.test("driver: egress is decided at every boot, not at create", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("flip", { spec: { environment: { FOO: "bar" } } }));
  await f.driver.shutdown(10);
  const on = await f.restart({ egressSocket: "/run/egress/guest.sock" });
  await on.driver.start("flip", "");
  const spec = on.launcher.vms[0].spec;
  assert.ok(spec.egress);
  const files = await fwCfgContents(spec);
  assert.equal(JSON.parse(files.environment).ALL_PROXY, "http://10.0.2.101:3128");
  assert.match(files.network, /^OPENSHELL_EGRESS_PROXY=http:\/\/10\.0\.2\.101:3128$/m);
  await on.driver.shutdown(10);
  const off = await f.restart({});
  await off.driver.start("flip", "");
  const again = off.launcher.vms[0].spec;
  assert.equal(again.egress, undefined);
  const offFiles = await fwCfgContents(again);
  assert.equal(offFiles.environment, '{"FOO":"bar"}\n', "the proxy variables are gone");
  assert.match(offFiles.network, /^OPENSHELL_EGRESS_DNS=''$/m);
});

Deno.test("driver: a damaged guest environment file stops the boot with a clear reason", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("dmg"));
  await f.driver.stop("dmg", "");
  await Deno.writeTextFile(`${f.dir}/state/sandboxes/dmg/guest/environment`, '{"A":1}');
  await assert.rejects(f.driver.start("dmg", ""), (e: StatusError) => {
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.match(e.message, /guest\/environment is damaged \(the value of A is not a string\)/);
    return true;
  });
});

// ---- stop, start, restore ---------------------------------------------------

const KEYED = {
  spec: {
    environment: {
      FOO: "bar",
      [PROVISION_SSH_HOST_KEY]: "HOST KEY",
      [PROVISION_SUPERVISOR_TOKEN]: "TOKEN",
    },
  },
};

async function fwCfgContents(spec: { fwCfg: readonly { name: string; file: string }[] }) {
  return Object.fromEntries(
    await Promise.all(spec.fwCfg.map(async (f) => [f.name, await Deno.readTextFile(f.file)])),
  );
}

Deno.test("driver: stop powers the guest off, keeps its dir and reports Stopping then Stopped", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("st", KEYED));
  const vm = f.launcher.vms[0];
  await f.driver.stop("st", "");
  assert.deepEqual(f.qmp.powerdowns, [vm.spec.qmpSocket], "asked the guest to power off");
  assert.deepEqual(vm.signals, [], "no signal: the guest powered off");
  assert.ok(f.qmp.closed.has(vm.spec.qmpSocket!), "its QMP channel is closed");
  const r = reasons(f.events, "st");
  assert.deepEqual(r.slice(-2), ["False/Stopping", "False/Stopped"]);
  assert.ok(!r.includes("False/ProcessExited"), "a stopped VM is not a failure");
  const snap = f.driver.get("st", "").status!;
  assert.equal(snap.instance_id, "");
  assert.equal(snap.conditions[0].message, "VM powered off; its disk is kept");
  const sdir = `${f.dir}/state/sandboxes/st`;
  for (const file of [MANIFEST_FILE, "console.log", "guest/ssh_host_key", "guest/config"]) {
    assert.ok((await Deno.stat(`${sdir}/${file}`)).isFile, `${file} is kept`);
  }
  // Idempotent: a second stop asks nothing of anyone.
  await f.driver.stop("", "name-st");
  assert.equal(f.qmp.powerdowns.length, 1);
  assert.equal(f.driver.get("st", "").status!.conditions[0].reason, "Stopped");
});

Deno.test("driver: a guest that ignores the power-off gets SIGTERM, then SIGKILL", async () => {
  await using f = await fixture({ powerdownGraceMs: 20, stopGraceMs: 20 });
  f.qmp.ignorePowerdown = true;
  await f.driver.create(sandbox("deaf"));
  await f.driver.stop("deaf", "");
  assert.deepEqual(f.launcher.vms[0].signals, ["SIGTERM"]);
  assert.match(f.driver.get("deaf", "").status!.conditions[0].message, /SIGTERM/);
  f.launcher.ignoreTerm = true;
  await f.driver.start("deaf", "");
  await f.driver.stop("deaf", "");
  assert.deepEqual(f.launcher.vms[1].signals, ["SIGTERM", "SIGKILL"]);
  assert.equal(f.driver.get("deaf", "").status!.conditions[0].reason, "Stopped");
});

Deno.test("driver: start boots a stopped sandbox again from the same guest files; running: no-op", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("again", KEYED));
  const first = f.launcher.vms[0].spec;
  const files = await fwCfgContents(first);
  await f.driver.start("again", "");
  assert.equal(f.launcher.vms.length, 1, "already running: nothing started");
  await f.driver.stop("again", "");
  await f.driver.start("", "name-again");
  assert.equal(f.launcher.vms.length, 2);
  const second = f.launcher.vms[1].spec;
  assert.deepEqual(await fwCfgContents(second), files, "same config, key and token");
  assert.equal(files.ssh_host_key, "HOST KEY\n");
  assert.notEqual(second.qmpSocket, first.qmpSocket, "a fresh QMP channel");
  assert.equal(f.driver.get("again", "").status!.conditions[0].reason, "Starting");
  assert.equal(f.driver.get("again", "").status!.instance_id, String(f.launcher.vms[1].handle.pid));
  // The new VM's console appends to the same log.
  await f.launcher.vms[1].writeConsole("second boot\n");
  await waitFor(
    "second boot in console.log",
    async () =>
      (await Deno.readTextFile(`${f.dir}/state/sandboxes/again/console.log`)).includes(
        "second boot",
      ) || undefined,
  );
});

Deno.test("driver: a VM that exited on its own can be started again", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("crash"));
  f.launcher.vms[0].exit(1);
  await waitFor("ProcessExited", () => reasons(f.events, "crash").includes("False/ProcessExited"));
  await f.driver.start("crash", "");
  assert.equal(f.launcher.vms.length, 2);
  assert.equal(f.driver.get("crash", "").status!.conditions[0].reason, "Starting");
});

Deno.test("driver: a start that cannot launch leaves the sandbox stopped and says why", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("nolaunch"));
  await f.driver.stop("nolaunch", "");
  f.launcher.failWith = "qemu: cannot allocate memory";
  await assert.rejects(f.driver.start("nolaunch", ""), (e: StatusError) => {
    assert.equal(e.code, Code.INTERNAL);
    assert.match(e.message, /cannot allocate memory/);
    return true;
  });
  const c = f.driver.get("nolaunch", "").status!.conditions[0];
  assert.equal(c.reason, "Stopped");
  assert.match(c.message, /VM could not start: .*cannot allocate memory/);
  assert.ok((await Deno.stat(`${f.dir}/state/sandboxes/nolaunch/${MANIFEST_FILE}`)).isFile);
});

Deno.test("driver: stop/start of an unknown sandbox is NOT_FOUND; of one being deleted FAILED_PRECONDITION", async () => {
  await using f = await fixture();
  await assert.rejects(f.driver.stop("nope", ""), (e: StatusError) => e.code === Code.NOT_FOUND);
  await assert.rejects(f.driver.start("", "nope"), (e: StatusError) => e.code === Code.NOT_FOUND);
  await assert.rejects(
    f.driver.stop("", ""),
    (e: StatusError) => e.code === Code.INVALID_ARGUMENT,
  );
  await f.driver.create(sandbox("gone"));
  const deleting = f.driver.delete("gone", "");
  await assert.rejects(
    f.driver.start("gone", ""),
    (e: StatusError) => e.code === Code.FAILED_PRECONDITION || e.code === Code.NOT_FOUND,
  );
  assert.equal(await deleting, true);
});

Deno.test("driver: start, stop and delete of one sandbox run one at a time, in order", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("seq"));
  const order: string[] = [];
  await Promise.all([
    f.driver.stop("seq", "").then(() => order.push("stop")),
    f.driver.start("seq", "").then(() => order.push("start")),
    f.driver.stop("seq", "").then(() => order.push("stop")),
  ]);
  assert.deepEqual(order, ["stop", "start", "stop"]);
  assert.equal(f.launcher.vms.length, 2);
  assert.equal(f.driver.get("seq", "").status!.conditions[0].reason, "Stopped");
  assert.equal(await f.driver.delete("seq", ""), true);
  await assert.rejects(Deno.stat(`${f.dir}/state/sandboxes/seq`), Deno.errors.NotFound);
});

Deno.test("driver: a restarted driver restores every sandbox as stopped and boots it on start", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("r1", { ...KEYED, name: "one" }));
  await f.driver.create(sandbox("r2", { name: "two" }));
  await f.driver.stop("r2", "");
  const files = await fwCfgContents(f.launcher.vms[0].spec);
  await f.driver.shutdown(10);
  assert.equal(f.qmp.powerdowns.length, 2, "shutdown asks each running guest to power off");
  // A dir without a manifest is an unfinished create; a broken manifest is left alone.
  const root = `${f.dir}/state/sandboxes`;
  await Deno.mkdir(`${root}/half`);
  await Deno.mkdir(`${root}/broken`);
  await Deno.writeTextFile(`${root}/broken/${MANIFEST_FILE}`, "{");
  const next = await f.restart();
  assert.deepEqual(
    next.driver.list().map((s) => [s.id, s.name, s.status!.conditions[0].reason]),
    [["r1", "one", "Stopped"], ["r2", "two", "Stopped"]],
  );
  await assert.rejects(Deno.stat(`${root}/half`), Deno.errors.NotFound);
  assert.ok((await Deno.stat(`${root}/broken`)).isDirectory);
  assert.equal(next.launcher.vms.length, 0, "nothing boots until it is started");
  await next.driver.start("r1", "");
  assert.deepEqual(await fwCfgContents(next.launcher.vms[0].spec), files);
  const before = f.launcher.vms[0].spec;
  const after = next.launcher.vms[0].spec;
  assert.deepEqual(after.rootDisk, before.rootDisk, "the same disk over the same image");
  assert.deepEqual([after.vcpus, after.memMib], [before.vcpus, before.memMib]);
  assert.equal(f.qemuImg.length, 2, "no new overlay: one per sandbox, at create");
  assert.deepEqual([...next.driver.imageKeys()], ["img1"], "images under kept disks");
  assert.equal(next.driver.get("r1", "").status!.conditions[0].reason, "Starting");
  assert.equal(await next.driver.delete("r2", ""), true, "a restored sandbox can be deleted");
  await assert.rejects(Deno.stat(`${root}/r2`), Deno.errors.NotFound);
  assert.equal(await next.driver.restore(), 0, "restoring twice adds nothing");
});

Deno.test("driver: manifests are checked (format, id = dir name, types, size)", () => {
  const good = {
    format: "openshell-vm-sandbox/1",
    id: "sb",
    name: "n",
    namespace: "default",
    created_at_ms: 1,
  };
  assert.deepEqual(parseManifest(JSON.stringify(good), "sb"), good);
  const bad: [unknown, RegExp][] = [
    [{ ...good, format: "x/2" }, /format/],
    [{ ...good, id: "other" }, /does not match/],
    [{ ...good, id: ".." }, /does not match/],
    [{ ...good, name: 5 }, /name is invalid/],
    [{ ...good, created_at_ms: -1 }, /created_at_ms/],
    [[1], /format/],
  ];
  for (const [m, re] of bad) assert.throws(() => parseManifest(JSON.stringify(m), "sb"), re);
  assert.throws(() => parseManifest("{", "sb"), /not JSON/);
  assert.throws(() => parseManifest(" ".repeat(65 * 1024), "sb"), /too large/);
});

Deno.test("driver: a restored sandbox whose disk is gone cannot start, and says what to do", async () => {
  await using f = await fixture();
  await f.driver.create(sandbox("nodisk"));
  await f.driver.shutdown(10);
  await Deno.remove(`${f.dir}/state/sandboxes/nodisk/disk.qcow2`);
  const next = await f.restart();
  await assert.rejects(next.driver.start("nodisk", ""), (e: StatusError) => {
    assert.equal(e.code, Code.FAILED_PRECONDITION);
    assert.match(e.message, /disk \(.*disk\.qcow2\) is gone; delete the sandbox and create it/);
    return true;
  });
  assert.equal(next.launcher.vms.length, 0);
  assert.equal(next.driver.get("nodisk", "").status!.conditions[0].reason, "Stopped");
});

Deno.test("driver: template.image boots a named image; an unknown one is NOT_FOUND naming image list", async () => {
  await using f = await fixture({
    images: (stateDir, users) =>
      new Images({
        stateDir,
        defaultImage: () =>
          Promise.resolve({ path: `${stateDir}/../rt/rootfs.img`, key: "img1", format: "raw" }),
        inUse: users,
        log: memoryLogger().log,
      }),
  });
  // What a build leaves: the image's file and its name.
  const st = `${f.dir}/state`;
  await Deno.mkdir(`${st}/images`, { recursive: true });
  await Deno.mkdir(`${st}/image-names`, { recursive: true });
  await Deno.writeFile(`${st}/images/custom1.img`, new Uint8Array(2048));
  await Deno.writeTextFile(
    `${st}/image-names/tools.json`,
    JSON.stringify({
      name: "tools",
      key: "custom1",
      size_bytes: 2048,
      created_at_ms: 1,
      source: "build",
      packages: ["cowsay"],
    }),
  );
  const withImage = (id: string, image: string) => sandbox(id, { spec: { template: { image } } });
  await f.driver.validate(withImage("t1", "tools"));
  await f.driver.create(withImage("t1", "tools"));
  const spec = f.launcher.vms[0].spec;
  assert.equal(spec.rootDisk?.base, `${st}/images/custom1.img`, "an overlay of the named image");
  const vm = JSON.parse(await Deno.readTextFile(`${st}/sandboxes/t1/vm.json`));
  assert.deepEqual(vm.image, { key: "custom1", format: "raw" });
  assert.deepEqual([...f.driver.imageUsers()], [["custom1", ["name-t1"]]]);
  await f.driver.create(withImage("t2", "default"));
  assert.equal(f.launcher.vms[1].spec.rootDisk?.base, `${st}/images/img1.img`);
  for (
    const op of [
      f.driver.validate(withImage("t3", "nope")),
      f.driver.create(withImage("t3", "nope")),
    ]
  ) {
    await assert.rejects(op, (e: StatusError) => {
      assert.equal(e.code, Code.NOT_FOUND);
      assert.match(e.message, /image "nope" not found; see `openshell image list`/);
      return true;
    });
  }
  assert.equal(f.launcher.vms.length, 2, "nothing boots for an unknown image");
  await assert.rejects(Deno.stat(`${st}/sandboxes/t3`), Deno.errors.NotFound);
});
