/**
 * The driver as a process, under exactly its production grants, with a fake
 * qemu (a shell script that sleeps): no VM boots here (that is e2e:vm).
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { driverGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { ComputeDriverClient } from "../core/protocol.ts";
import { shellJoin } from "../core/shell.ts";
import { alive, waitFor } from "../core/testing.ts";
import { fakeRuntime } from "./testing.ts";

type AnyClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

function call<T>(client: AnyClient, method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    (client[method] as (
      r: unknown,
      o: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null, r: T) => void,
    ) => void)
      .call(
        client,
        req,
        { deadline: Date.now() + 10_000 },
        (err, res) => (err ? reject(err) : resolve(res)),
      );
  });
}

interface Setup {
  dir: string;
  state: string;
  argv: string[];
  client(): AnyClient;
  /** Creates a sandbox and returns its fake qemu's pid. */
  create(id: string, client: AnyClient): Promise<number>;
}

async function setup(): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "vmmain" });
  const state = `${dir}/state`;
  const rt = `${dir}/rt`;
  await fakeRuntime(rt);
  const qemu = `${dir}/fake-qemu`;
  await Deno.writeTextFile(
    qemu,
    '#!/bin/sh\necho "fake guest console"\necho "fake qemu started" >&2\nexec sleep 600\n',
    {
      mode: 0o755,
    },
  );
  await Deno.mkdir(state);
  const argv = roleCommand(
    "driver-vm",
    driverGrants({ stateDir: state, runtimeDir: rt, qemu, setpriv: "/usr/bin/setpriv" }),
    [
      "--state-dir",
      state,
      "--openshell-endpoint",
      "http://127.0.0.1:9",
      "--runtime-dir",
      rt,
      "--vm-accel",
      "tcg",
      "--qemu",
      qemu,
    ],
  );
  const client = () =>
    new ComputeDriverClient(
      `unix:${state}/compute-driver.sock`,
      grpc.credentials.createInsecure(),
    ) as AnyClient;
  const create = async (id: string, c: AnyClient) => {
    await waitFor("GetCapabilities", () => call(c, "GetCapabilities", {}), { ignoreErrors: true });
    await call(c, "CreateSandbox", { sandbox: { id, name: id, spec: {} } });
    const got = await call<{ sandbox: { status: { instance_id: string } } }>(c, "GetSandbox", {
      sandbox_id: id,
    });
    return Number(got.sandbox.status.instance_id);
  };
  return { dir, state, argv, client, create };
}

function spawn(argv: string[]): Deno.ChildProcess {
  return new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

async function stderrOf(child: Deno.ChildProcess): Promise<string> {
  return new TextDecoder().decode((await child.output()).stderr);
}

Deno.test("driver process: serves its socket, runs qemu, reports exits, stops cleanly on SIGTERM", async () => {
  const s = await setup();
  await Deno.writeTextFile(`${s.state}/compute-driver.sock`, "stale");
  const child = spawn(s.argv);
  const out = stderrOf(child);
  const c = s.client();
  try {
    const pid1 = await s.create("sb-1", c);
    assert.ok(await alive(pid1), "qemu runs");
    const cmdline = await Deno.readTextFile(`/proc/${pid1}/cmdline`);
    assert.equal(cmdline.split("\0")[0], "sleep", "setpriv exec'd qemu: the pid we hold is qemu's");
    const console1 = `${s.state}/sandboxes/sb-1/console.log`;
    // qemu's stdout is the guest's console, its stderr goes in as "qemu: …" lines
    await waitFor(
      "qemu output in the console log",
      async () => {
        const text = await Deno.readTextFile(console1);
        return text.includes("fake guest console\n") && text.includes("qemu: fake qemu started")
          ? true
          : undefined;
      },
      { ignoreErrors: true },
    );

    const pid2 = await s.create("sb-2", c);
    Deno.kill(pid2, "SIGKILL");
    const exited = await waitFor("ProcessExited", async () => {
      const g = await call<
        { sandbox: { status: { conditions: { reason: string; message: string }[] } } }
      >(
        c,
        "GetSandbox",
        { sandbox_id: "sb-2" },
      );
      const cond = g.sandbox.status.conditions[0];
      return cond.reason === "ProcessExited" ? cond : undefined;
    }, { ignoreErrors: true });
    assert.equal(exited.message, "VM process exited with status 137 (SIGKILL)");

    c.close();
    child.kill("SIGTERM");
    const status = await child.status;
    assert.equal(status.code, 0, await out);
    assert.ok(!(await alive(pid1)), "SIGTERM stops the VMs");
    await assert.rejects(Deno.stat(`${s.state}/compute-driver.sock`), Deno.errors.NotFound);
    assert.match(await out, /stopping: SIGTERM/);
  } finally {
    c.close();
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await out;
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("driver process: SIGKILL of the driver takes its qemus along (parent-death signal)", async () => {
  const s = await setup();
  const child = spawn(s.argv);
  const out = stderrOf(child);
  const c = s.client();
  try {
    const pid = await s.create("sb-k", c);
    assert.ok(await alive(pid));
    child.kill("SIGKILL");
    await child.status;
    await waitFor("qemu gone", async () => !(await alive(pid)), { timeoutMs: 5000 });
  } finally {
    c.close();
    await out;
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("driver process: when its parent dies it kills its qemus and exits", async () => {
  const s = await setup();
  // A parent shell that starts the driver and then dies (SIGKILL) under it.
  const parent = new Deno.Command("sh", {
    args: ["-c", `${shellJoin(s.argv)} 2>/dev/null & echo $!; wait`],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = parent.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const c = s.client();
  let driverPid = 0;
  try {
    driverPid = Number((await reader.read()).value?.trim());
    assert.ok(driverPid > 0);
    const pid = await s.create("sb-p", c);
    parent.kill("SIGKILL");
    await parent.status;
    await waitFor("driver exits", async () => !(await alive(driverPid)), { timeoutMs: 8000 });
    await waitFor("qemu gone", async () => !(await alive(pid)), { timeoutMs: 5000 });
  } finally {
    c.close();
    await reader.cancel().catch(() => {});
    if (driverPid > 0 && await alive(driverPid)) Deno.kill(driverPid, "SIGKILL");
    await Deno.remove(s.dir, { recursive: true });
  }
});

Deno.test("driver process: auto accelerator probes once, logs which and why, caches the verdict", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmaccel" });
  const state = `${dir}/state`;
  const rt = `${dir}/rt`;
  const qemu = `${dir}/fake-qemu`;
  await fakeRuntime(rt);
  await Deno.writeTextFile(
    qemu,
    [
      "#!/bin/sh",
      'case "$*" in',
      '  -version*) echo "QEMU emulator version 7.2.0 (fake)"; exit 0;;',
      '  *openshell.probe*) echo "qemu: kvm_buf_set_msrs: Assertion failed" >&2; exit 134;;',
      "esac",
      "exec sleep 600",
    ].join("\n") + "\n",
    { mode: 0o755 },
  );
  const argv = roleCommand(
    "driver-vm",
    driverGrants({ stateDir: state, runtimeDir: rt, qemu, setpriv: "/usr/bin/setpriv" }),
    [
      "--state-dir",
      state,
      "--openshell-endpoint",
      "http://127.0.0.1:9",
      "--runtime-dir",
      rt,
      "--qemu",
      qemu,
    ],
  );
  const runOnce = async (): Promise<string> => {
    const child = spawn(argv);
    const out = stderrOf(child);
    const c = new ComputeDriverClient(
      `unix:${state}/compute-driver.sock`,
      grpc.credentials.createInsecure(),
    ) as AnyClient;
    try {
      await waitFor("GetCapabilities", () => call(c, "GetCapabilities", {}), {
        ignoreErrors: true,
      });
      await call(c, "CreateSandbox", { sandbox: { id: "a1", name: "a1", spec: {} } });
    } finally {
      c.close();
      child.kill("SIGTERM");
    }
    return await out;
  };
  try {
    const first = await runOnce();
    assert.match(
      first,
      /accelerator: tcg \(\/dev\/kvm exists but a KVM probe boot failed \(qemu: qemu: kvm_buf_set_msrs: Assertion failed\)\)/,
    );
    const cached = JSON.parse(await Deno.readTextFile(`${state}/accel-probe.json`));
    assert.equal(cached.ok, false);
    assert.match(cached.key, /^QEMU emulator version 7\.2\.0 \(fake\) [0-9a-f]{64}$/);
    const second = await runOnce();
    assert.match(second, /accelerator: tcg .*\[cached verdict\]/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
