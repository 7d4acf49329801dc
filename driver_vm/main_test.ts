/**
 * The driver as a process, under exactly its production grants, with a fake
 * qemu (a shell script that sleeps): no VM boots here (that is e2e:vm).
 */
import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import { driverGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { ComputeDriverClient, unaryCall, type UnaryMethod } from "../core/protocol.ts";
import { shellJoin } from "../core/shell.ts";
import { alive, waitFor } from "../core/testing.ts";
import { Code, StatusError } from "../core/status.ts";
import { defaultImage, runtimeFiles } from "./main.ts";
import { fakeRuntime } from "./testing.ts";
import { parsePasswd } from "./vm_user.ts";

/** Run as root, the driver runs qemu as this account (present on every Debian). */
const VM_USER = "nobody";
const isRoot = Deno.uid() === 0;
const vmUser = parsePasswd(await Deno.readTextFile("/etc/passwd"), VM_USER)!;

function owner(path: string): { uid: number; gid: number; mode: number } {
  const st = Deno.statSync(path);
  return { uid: st.uid!, gid: st.gid!, mode: (st.mode ?? 0) & 0o7777 };
}

async function uidOf(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
}

function call<Req, Res>(
  client: grpc.Client,
  method: UnaryMethod<Req, Res>,
  req: NoInfer<Req>,
): Promise<Res> {
  return unaryCall(client, method, req, { deadline: Date.now() + 10_000 });
}

interface Setup {
  dir: string;
  state: string;
  argv: string[];
  client(): ComputeDriverClient;
  /** Creates a sandbox and returns its fake qemu's pid. */
  create(id: string, client: ComputeDriverClient): Promise<number>;
}

/** Options of {@link setup}. */
interface SetupOptions {
  /** The fake qemu's script body (after `#!/bin/sh`); `$DIR` is the test's temp dir. */
  qemu?: string;
  /** The gateway's port on 127.0.0.1 (default 9: nothing listens). */
  gatewayPort?: number;
  /** Extra driver flags. */
  args?: string[];
  /** The egress proxy's guest socket in its grants (and `--egress-socket`, unless `args` say). */
  egressSocket?: string;
}

async function setup(options: SetupOptions = {}): Promise<Setup> {
  const dir = await Deno.makeTempDir({ prefix: "vmmain" });
  // qemu's account must reach the fake qemu (and the state dir) below it.
  await Deno.chmod(dir, 0o755);
  const state = `${dir}/state`;
  const rt = `${dir}/rt`;
  await fakeRuntime(rt);
  const qemu = `${dir}/fake-qemu`;
  const body = options.qemu ??
    'echo "fake guest console"\necho "fake qemu started: $*" >&2\nexec sleep 600\n';
  await Deno.writeTextFile(qemu, `#!/bin/sh\nDIR=${dir}\n${body}`, { mode: 0o755 });
  const gatewayPort = options.gatewayPort ?? 9;
  await Deno.mkdir(state);
  const argv = roleCommand(
    "driver-vm",
    driverGrants({
      stateDir: state,
      gateway: { host: "127.0.0.1", port: gatewayPort },
      runtimeDir: rt,
      qemu,
      setpriv: "/usr/bin/setpriv",
      egressSocket: options.egressSocket,
    }),
    [
      "--state-dir",
      state,
      "--openshell-endpoint",
      `http://127.0.0.1:${gatewayPort}`,
      "--runtime-dir",
      rt,
      "--vm-accel",
      "tcg",
      "--qemu",
      qemu,
      "--vm-user",
      VM_USER,
      ...(options.egressSocket && !options.args
        ? ["--egress-socket", options.egressSocket]
        : options.args ?? []),
    ],
  );
  const client = () =>
    new ComputeDriverClient(
      `unix:${state}/compute-driver.sock`,
      grpc.credentials.createInsecure(),
    );
  const create = async (id: string, c: ComputeDriverClient) => {
    await waitFor("GetCapabilities", () => call(c, c.GetCapabilities, {}), { ignoreErrors: true });
    await call(c, c.CreateSandbox, { sandbox: { id, name: id, spec: {} } });
    const got = await call(c, c.GetSandbox, {
      sandbox_id: id,
    });
    return Number(got.sandbox!.status!.instance_id);
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

Deno.test("runtime dir: its files and the default image its manifest names", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmrt" });
  try {
    const files = await fakeRuntime(dir);
    assert.deepEqual(files, runtimeFiles(dir));
    assert.deepEqual(await defaultImage(dir), {
      path: `${dir}/rootfs.img`,
      key: "fakeimage",
      format: "raw",
    });
    const bad = async (manifest: unknown, re: RegExp) => {
      await Deno.writeTextFile(`${dir}/manifest.json`, JSON.stringify(manifest));
      await assert.rejects(defaultImage(dir), (e: StatusError) => {
        assert.equal(e.code, Code.FAILED_PRECONDITION);
        assert.match(e.message, re);
        assert.match(e.message, /deno task vm:rootfs$/);
        return true;
      });
    };
    await bad({}, /names no guest image/);
    await bad(
      { image: { key: "../x", file: "rootfs.img", format: "raw" } },
      /names no guest image/,
    );
    await bad(
      { image: { key: "k", file: "../../etc/passwd", format: "raw" } },
      /names no guest image/,
    );
    await bad({ image: { key: "k", file: "rootfs.img", format: "vmdk" } }, /names no guest image/);
    await Deno.remove(`${dir}/manifest.json`);
    await assert.rejects(defaultImage(dir), /cannot read the VM runtime's manifest/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver process: serves its socket, runs qemu, reports exits, stops cleanly on SIGTERM", async (t) => {
  const s = await setup();
  await Deno.writeTextFile(`${s.state}/compute-driver.sock`, "stale");
  const child = spawn(s.argv);
  const out = stderrOf(child);
  const c = s.client();
  try {
    const pid1 = await s.create("sb-1", c);
    assert.ok(await alive(pid1), "qemu runs");
    // setpriv exec's qemu: the pid we hold becomes qemu's (a forking setpriv would stay setpriv).
    await waitFor(`setpriv to exec qemu (pid ${pid1})`, async () => {
      const cmdline = await Deno.readTextFile(`/proc/${pid1}/cmdline`);
      return cmdline.split("\0")[0] === "sleep";
    }, { timeoutMs: 5_000, intervalMs: 10 });
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

    await t.step({
      name: "as root: qemu runs as the VM user and owns only the files it uses",
      ignore: !isRoot,
      fn: async () => {
        // qemu runs as the VM user, owning only the files it uses, in dirs it can reach but
        // not change.
        assert.equal(await uidOf(pid1), vmUser.uid, "qemu must not run as root");
        const sb = `${s.state}/sandboxes/sb-1`;
        for (const f of [`${sb}/qemu.pid`, `${sb}/guest/config`]) {
          assert.deepEqual(owner(f), { uid: vmUser.uid, gid: vmUser.gid, mode: 0o600 }, f);
        }
        // The driver writes the console log itself: qemu cannot touch it.
        assert.deepEqual(owner(`${sb}/console.log`), { uid: 0, gid: 0, mode: 0o600 });
        for (const d of [s.state, `${s.state}/sandboxes`, sb, `${sb}/guest`]) {
          assert.deepEqual(owner(d), { uid: 0, gid: vmUser.gid, mode: 0o710 }, d);
        }
        assert.deepEqual(owner(`${s.state}/compute-driver.sock`).mode, 0o600);
        // The fake qemu printed its arguments into the console log.
        assert.ok(
          (await Deno.readTextFile(console1)).includes(
            `filename=${s.state}/runtime/openshell.img,`,
          ),
          "boots the staged runtime copy",
        );
        assert.deepEqual(owner(`${s.state}/runtime/openshell.img`), {
          uid: 0,
          gid: vmUser.gid,
          mode: 0o640,
        });
        // The sandbox's disk is qemu's; the image under it root's, read-only to qemu's group.
        assert.deepEqual(owner(`${sb}/disk.qcow2`), {
          uid: vmUser.uid,
          gid: vmUser.gid,
          mode: 0o600,
        });
        assert.deepEqual(owner(`${s.state}/images/fakeimage.img`), {
          uid: 0,
          gid: vmUser.gid,
          mode: 0o640,
        });
      },
    });

    const pid2 = await s.create("sb-2", c);
    Deno.kill(pid2, "SIGKILL");
    const exited = await waitFor("ProcessExited", async () => {
      const g = await call(c, c.GetSandbox, { sandbox_id: "sb-2" });
      const cond = g.sandbox!.status!.conditions[0];
      return cond.reason === "ProcessExited" ? cond : undefined;
    }, { ignoreErrors: true });
    assert.match(
      exited.message,
      /^VM process exited with status 137 \(SIGKILL\); its disk is kept/,
    );

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

/**
 * A fake qemu with a monitor: it connects to the driver's QMP socket (as
 * qemu does, through socat) and answers every command; ctrl-alt-delete
 * powers its "guest" off (it exits 0).
 */
const QMP_RESPONDER = `echo '{"QMP": {"version": {}, "capabilities": []}}'
while read -r line; do
  id=$(printf '%s' "$line" | sed -e 's/.*"id":"//' -e 's/".*//')
  printf '{"return": {}, "id": "%s"}\\n' "$id"
  case "$line" in *send-key*) kill "$1" ;; esac
done
`;
const QMP_QEMU = `
for a in "$@"; do case "$a" in socket,id=qmp,path=*) qmp=\${a#socket,id=qmp,path=} ;; esac; done
echo "fake guest console"
sleep 600 & guest=$!
trap 'kill $guest; exit 143' TERM
[ -n "$qmp" ] && socat UNIX-CONNECT:"$qmp" SYSTEM:"sh $DIR/qmp-responder.sh $guest" &
wait $guest
echo "fake guest powered off"
`;

Deno.test("driver process: stop powers off through QMP; a restart keeps every sandbox, stopped until started", async () => {
  const s = await setup({ qemu: QMP_QEMU });
  await Deno.writeTextFile(`${s.dir}/qmp-responder.sh`, QMP_RESPONDER, { mode: 0o644 });
  let child = spawn(s.argv);
  let out = stderrOf(child);
  let c = s.client();
  type Got = {
    sandbox: {
      status: { instance_id: string; conditions: { reason: string; message: string }[] };
    };
  };
  const get = (id: string) => call(c, c.GetSandbox, { sandbox_id: id });
  try {
    const pid1 = await s.create("sb-1", c);
    const pid2 = await s.create("sb-2", c);
    await call(c, c.StopSandbox, { sandbox_id: "sb-2" });
    const stopped = (await get("sb-2")).sandbox!.status!;
    assert.deepEqual(
      [stopped.conditions[0].reason, stopped.conditions[0].message, stopped.instance_id],
      ["Stopped", "VM powered off; its disk is kept", ""],
      "the guest powered off when asked (no signal needed)",
    );
    assert.ok(!(await alive(pid2)));
    assert.match(
      await Deno.readTextFile(`${s.state}/sandboxes/sb-2/console.log`),
      /fake guest powered off/,
    );
    c.close();
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0, await out);
    await waitFor("qemu gone", async () => !(await alive(pid1)), { timeoutMs: 5000 });
    for (const id of ["sb-1", "sb-2"]) {
      for (const f of ["sandbox.json", "guest/config", "console.log"]) {
        assert.ok((await Deno.stat(`${s.state}/sandboxes/${id}/${f}`)).isFile, `${id}/${f} kept`);
      }
    }

    // The driver comes back: both sandboxes are known, stopped, until started.
    child = spawn(s.argv);
    out = stderrOf(child);
    c = s.client();
    await waitFor("GetCapabilities", () => call(c, c.GetCapabilities, {}), { ignoreErrors: true });
    const list = await call(c, c.ListSandboxes, {});
    assert.deepEqual(
      list.sandboxes.map((x) => [x.id, x.status!.conditions[0].reason]),
      [["sb-1", "Stopped"], ["sb-2", "Stopped"]],
    );
    await call(c, c.StartSandbox, { sandbox_id: "sb-1" });
    const pid3 = Number((await get("sb-1")).sandbox!.status!.instance_id);
    assert.ok(pid3 > 0 && pid3 !== pid1 && await alive(pid3), "a new qemu runs");
    await waitFor("the second boot in the same console log", async () => {
      const text = await Deno.readTextFile(`${s.state}/sandboxes/sb-1/console.log`);
      return text.split("fake guest console").length === 3 ? true : undefined;
    }, { ignoreErrors: true });
    assert.equal(
      (await call(c, c.DeleteSandbox, { sandbox_id: "sb-2" }))
        .deleted,
      true,
    );
    await assert.rejects(Deno.stat(`${s.state}/sandboxes/sb-2`), Deno.errors.NotFound);
    c.close();
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0, await out);
    assert.ok(!(await alive(pid3)));
  } finally {
    c.close();
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await out;
    await Deno.remove(s.dir, { recursive: true });
  }
});

/**
 * What the fake qemu below does: run its guestfwd command 12 times at once,
 * like 12 guest connections, recording into `$DIR/out` (writable by qemu's account).
 */
const GUEST_FLOOD_QEMU = `
for a in "$@"; do case "$a" in *guestfwd=*) cmd=\${a#*-cmd:} ;; esac; done
echo "fake qemu started: $cmd"
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do
  ( (echo "hello $i"; sleep 2) | $cmd > "$DIR/out/conn.$i" 2>/dev/null; echo "$i" >> "$DIR/out/ended" ) &
done
exec sleep 600
`;

Deno.test("driver process: guest connections reach the gateway through socat and the VM's socket, 3 at most", async () => {
  // The "gateway": echoes each connection's bytes and records how many are open at once.
  let open = 0;
  let peak = 0;
  const gateway = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const conn of gateway) {
      open++;
      peak = Math.max(peak, open);
      conn.readable.pipeTo(conn.writable).catch(() => {}).finally(() => open--);
    }
  })();
  const s = await setup({
    qemu: GUEST_FLOOD_QEMU,
    gatewayPort: (gateway.addr as Deno.NetAddr).port,
    args: ["--max-guest-connections", "3"],
  });
  // Run as root, the driver starts qemu as VM_USER: only its own directory is writable to it.
  const outDir = `${s.dir}/out`;
  await Deno.mkdir(outDir, { mode: 0o700 });
  if (isRoot) await Deno.chown(outDir, vmUser.uid, vmUser.gid);
  const child = spawn(s.argv);
  const out = stderrOf(child);
  const c = s.client();
  try {
    await s.create("sb-f", c);
    const ended = await waitFor("all 12 guest connections to end", async () => {
      const lines = (await Deno.readTextFile(`${outDir}/ended`)).trim().split("\n");
      return lines.length === 12 ? lines : undefined;
    }, { ignoreErrors: true, timeoutMs: 20_000 });
    assert.equal(ended.length, 12);
    const replies = await Promise.all(
      Array.from({ length: 12 }, (_, i) => Deno.readTextFile(`${outDir}/conn.${i + 1}`)),
    );
    const carried = replies.filter((r) => /^hello \d+\n$/.test(r));
    const refused = replies.filter((r) => r === "");
    assert.equal(carried.length, 3, `carried: ${JSON.stringify(replies)}`);
    assert.equal(refused.length, 9, "the rest were closed at once, unanswered");
    assert.equal(peak, 3, "never more than 3 at the gateway");
    // The bind path is free again and the VM's socket sits in fwd/.
    await assert.rejects(Deno.stat(`${s.state}/guest-fwd.sock`), Deno.errors.NotFound);
    assert.ok((await Deno.stat(`${s.state}/fwd/0.sock`)).isSocket);
    c.close();
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0, await out);
    assert.match(await out, /guest connection limit reached/);
  } finally {
    c.close();
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await out;
    gateway.close();
    await serving.catch(() => {});
    await Deno.remove(s.dir, { recursive: true });
  }
});

/** A fake qemu that opens one proxy and one DNS connection through its egress forwarders. */
const EGRESS_QEMU = `
for a in "$@"; do case "$a" in *guestfwd=*) net=$a ;; esac; done
fwd() { echo "$net" | tr ',' '\\n' | sed -n "s/^guestfwd=tcp:10.0.2.101:$1-cmd://p"; }
proxy=$(fwd 3128)
dns=$(fwd 53)
echo "fake qemu started: proxy=[$proxy] dns=[$dns]"
(echo "CONNECT example.com:443 HTTP/1.1"; sleep 5) | $proxy > "$DIR/out/proxy" 2>/dev/null &
(echo "dns-query"; sleep 5) | $dns > "$DIR/out/dns" 2>/dev/null &
exec sleep 600
`;

Deno.test("driver process: with --egress-socket, the egress alias's connections reach the proxy after the driver's header", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vmegr" });
  const egressSocket = `${dir}/guest.sock`;
  // The egress proxy stand-in: answers each connection with its first two lines.
  const proxy = Deno.listen({ transport: "unix", path: egressSocket });
  const serving = (async () => {
    for await (const conn of proxy) {
      (async () => {
        let got = "";
        const buf = new Uint8Array(1024);
        while (got.split("\n").length <= 2) {
          const n = await conn.read(buf);
          if (n === null) break;
          got += new TextDecoder().decode(buf.subarray(0, n));
        }
        const lines = got.split("\n").slice(0, 2).join("|");
        await conn.write(new TextEncoder().encode(`proxy got: ${lines}\n`));
        conn.close();
      })().catch(() => {});
    }
  })();
  const s = await setup({ qemu: EGRESS_QEMU, egressSocket });
  const outDir = `${s.dir}/out`;
  await Deno.mkdir(outDir, { mode: 0o700 });
  if (isRoot) await Deno.chown(outDir, vmUser.uid, vmUser.gid);
  const child = spawn(s.argv);
  const out = stderrOf(child);
  const c = s.client();
  try {
    await s.create("sb-e", c);
    const replies = await waitFor("the proxy's replies", async () => {
      const p = await Deno.readTextFile(`${outDir}/proxy`);
      const d = await Deno.readTextFile(`${outDir}/dns`);
      return p && d ? [p, d] : undefined;
    }, { ignoreErrors: true, timeoutMs: 20_000 }).catch(async (err) => {
      child.kill("SIGTERM");
      throw new Error(`${err.message}\n${await out}`);
    });
    assert.deepEqual(replies, [
      "proxy got: OPENSHELL-EGRESS/1 sb-e http|CONNECT example.com:443 HTTP/1.1\n",
      "proxy got: OPENSHELL-EGRESS/1 sb-e dns|dns-query\n",
    ]);
    c.close();
    child.kill("SIGTERM");
    assert.equal((await child.status).code, 0, await out);
    assert.match(await out, /egress=unix:\S+\/guest\.sock/);
  } finally {
    c.close();
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await out;
    proxy.close();
    await serving.catch(() => {});
    await Deno.remove(s.dir, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("driver process: an --egress-socket its grants do not cover stops it at start", async () => {
  const s = await setup({ args: ["--egress-socket", "/run/elsewhere/guest.sock"] });
  try {
    const out = await spawn(s.argv).output();
    const stderr = new TextDecoder().decode(out.stderr).trim();
    assert.equal(out.code, 1, stderr);
    assert.match(
      stderr,
      /not permitted to use the egress proxy's socket \/run\/elsewhere\/guest\.sock/,
    );
  } finally {
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
  await Deno.chmod(dir, 0o755);
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
    driverGrants({
      stateDir: state,
      gateway: { host: "127.0.0.1", port: 9 },
      runtimeDir: rt,
      qemu,
      setpriv: "/usr/bin/setpriv",
    }),
    [
      "--state-dir",
      state,
      "--openshell-endpoint",
      "http://127.0.0.1:9",
      "--runtime-dir",
      rt,
      "--qemu",
      qemu,
      "--vm-user",
      VM_USER,
    ],
  );
  let runs = 0;
  const runOnce = async (): Promise<string> => {
    const child = spawn(argv);
    const out = stderrOf(child);
    const c = new ComputeDriverClient(
      `unix:${state}/compute-driver.sock`,
      grpc.credentials.createInsecure(),
    );
    try {
      await waitFor("GetCapabilities", () => call(c, c.GetCapabilities, {}), {
        ignoreErrors: true,
      });
      await call(c, c.CreateSandbox, { sandbox: { id: `a${++runs}`, name: "a", spec: {} } });
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

Deno.test({
  name: "driver process (root): a missing VM user stops it at start, naming the command",
  ignore: !isRoot,
  async fn() {
    const s = await setup({ args: ["--vm-user", "openshell-no-such-user"] });
    try {
      const out = await spawn(s.argv).output();
      const stderr = new TextDecoder().decode(out.stderr).trim();
      assert.equal(out.code, 1, stderr);
      assert.equal(
        stderr,
        'openshell-driver-vm: qemu runs as the unprivileged user "openshell-no-such-user", ' +
          "which does not exist; create it with: useradd --system --no-create-home " +
          "--home-dir /nonexistent --shell /usr/sbin/nologin openshell-no-such-user " +
          "(or run deno task vm:setup as root, or pass --vm-user NAME)",
      );
    } finally {
      await Deno.remove(s.dir, { recursive: true });
    }
  },
});

Deno.test("driver process: a state dir others can write, or a symlink, stops it at start", async () => {
  const s = await setup();
  try {
    await Deno.chmod(s.state, 0o777);
    const open = await spawn(s.argv).output();
    const openErr = new TextDecoder().decode(open.stderr);
    assert.equal(open.code, 1, openErr);
    assert.match(
      openErr,
      /cannot start: state dir .* can be written by other users \(mode 0777\); run `chmod go-w /,
    );
    await Deno.chmod(s.state, 0o700);
    await Deno.rename(s.state, `${s.state}.real`);
    await Deno.symlink(`${s.state}.real`, s.state);
    const link = await spawn(s.argv).output();
    const linkErr = new TextDecoder().decode(link.stderr);
    assert.equal(link.code, 1, linkErr);
    assert.match(linkErr, /cannot start: state dir .* is a symlink; refusing/);
  } finally {
    await Deno.remove(s.dir, { recursive: true });
  }
});
