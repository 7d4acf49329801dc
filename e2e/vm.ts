/**
 * `deno task e2e:vm`: the whole chain on real VMs.
 *
 * Stages the VM runtime (`vm:setup`, `vm:rootfs`; cached), a driver dir with
 * an `openshell-driver-vm` wrapper (deno run with the driver's exact
 * grants), starts the gateway with `--drivers vm` under a short temp dir,
 * and runs the smoke suite through the CLI (each role with its own grants):
 *
 * 1. `status` shows Connected;  2. `sandbox create -- echo smoke-ok`;
 *    2b. the default Debian image: bash, python3, git, rsync, whoami =
 *    sandbox, sudo, / not world-writable, /tmp 1777, the clock right;
 * 3. `sandbox exec` streams stdout/stderr and the exit code;
 * 4. OpenSSH through `ssh-proxy` (from `sandbox ssh-config`) runs a command,
 *    sftp copies a file in and out, rsync copies a directory in;
 * 5. `list --names` and `logs` (boot progress, no event JSON);
 *    the guest reaches the gateway alias but no other host port; from inside
 *    a guest the user API is refused and another sandbox unreachable; a
 *    dropped connection is re-dialled; the driver carries at most 8 per VM;
 *    a process an exec leaves running is gone once the exec ended;
 *    `create --cpus 1 --memory 1536Mi --disk-gib 12` is what the guest sees
 *    (nproc, free, df) and what `sandbox get` reports; more memory than the
 *    host has is refused at once;
 *    5h. a file written to `/sandbox` survives `sandbox stop` (a clean
 *    power-off) + `sandbox start`, and the pinned host key still works;
 *    5i. a gateway SIGTERM + restart on its file database: the sandbox is
 *    READY again on its own, with its files, and its ssh config works;
 *    5j. `image build` with one extra package, `sandbox create --image` boots
 *    it; an unknown image is refused naming `image list`; an image in use
 *    cannot be deleted;
 *    5k-5q. egress (`e2e/egress_steps.ts`): two test hosts in network
 *    namespaces; a sandbox with a policy reaches the allowed one through the
 *    proxy (curl, wget), gets a 403 naming the fix for the other and
 *    NXDOMAIN for a denied name, never reaches the host's loopback or own
 *    address; `policy set --wait` allows the other one live;
 * 6. qemu runs unprivileged (not root, seccomp on) when we are root; killing
 *    it → ERROR / ProcessExited;
 * 7. `sandbox delete` → gone from the list, qemu gone, state dir gone;
 * 8. SIGTERM, then SIGKILL, of the gateway leaves no driver or qemu;
 * 9. a plaintext gateway without egress (--disable-tls --disable-gateway-auth
 *    --no-egress): create, exec; no proxy variables, look-ups fail at once; delete;
 * 10. the README's quick start with the installed commands (`e2e/installed.ts`):
 *    `deno task install`, `openshell gateway start`, `sandbox create -- echo hi`,
 *    `gateway stop` leaves nothing; 11. kill -9 of the installed gateway takes its
 *    driver and qemu along; uninstall.
 *
 * A `deno test` module that `deno test`'s default pattern (`*_test.ts`), and so
 * `deno task test`, leaves out: `deno task e2e:vm` runs `deno test -A e2e/vm.ts`
 * (add `--junit-path=FILE` for a JUnit report). One test whose steps run in
 * order and share one gateway and the sandbox of step 2. A failed step does not
 * stop the others: a step whose prerequisite is missing (the VM runtime, a
 * running gateway, the sandbox of step 2, the ssh config of step 4) is reported
 * ignored, the rest still run. The reporter prints each step's wall time; on a
 * failure the gateway logs and every console log are printed and the state dir
 * is kept.
 *
 * @module
 */
import { runCommand } from "../core/command.ts";
import { cliGrants } from "../core/grants.ts";
import { roleCommand } from "../core/launcher.ts";
import { spawnGateway, type TestGateway } from "../testing/gateway.ts";
import { ensureRuntime, type RuntimeInfo } from "../driver_vm/image/rootfs.ts";
import { setup } from "../driver_vm/image/setup.ts";
import { GUEST_NET } from "../driver_vm/guest.ts";
import { GUEST_GATEWAY_PORT } from "../core/grants.ts";
import { alive, findProcesses, freePort, waitFor } from "../core/testing.ts";
import { egressSteps, noEgressChecks } from "./egress_steps.ts";
import { installedSteps } from "./installed.ts";
import { stageDriverDir } from "./stage.ts";

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

function fmt(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** A step's prerequisite: `undefined` when met, else what is missing. */
type Need = string | undefined;

function check(cond: unknown, message: string): asserts cond {
  if (!cond) throw new Error(message);
}

function show(r: CliResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

function runCmd(
  argv: readonly string[],
  options: { env: Record<string, string>; timeoutMs?: number; stdin?: string },
): Promise<CliResult> {
  return runCommand(argv, { ...options, clearEnv: true, timeoutMs: options.timeoutMs ?? 120_000 });
}

async function md5(text: string): Promise<string> {
  const out = await new Deno.Command("md5sum", { stdin: "piped", stdout: "piped" }).spawn();
  const w = out.stdin.getWriter();
  await w.write(new TextEncoder().encode(text));
  await w.close();
  return new TextDecoder().decode((await out.output()).stdout).split(" ")[0];
}

/** The suite: steps of `t` in order, sharing the gateway and the sandbox. */
async function e2e(t: Deno.TestContext): Promise<void> {
  let abortReason: () => string | undefined = () => undefined;
  let failed = false;
  /**
   * Runs one step. A step whose prerequisite is missing (an earlier step
   * failed) is reported ignored, not failed; a step after which the gateway
   * is found dead fails.
   */
  const step = async (
    name: string,
    fn: (t: Deno.TestContext) => Promise<void>,
    needs: Need[] = [],
  ): Promise<boolean> => {
    const missing = needs.filter((n) => n !== undefined);
    if (missing.length > 0) console.error(`  - ${name}: skipped, needs ${missing.join(", ")}`);
    const passed = await t.step({
      name,
      ignore: missing.length > 0,
      fn: async (st) => {
        await fn(st);
        const reason = abortReason();
        if (reason) throw new Error(reason);
      },
    });
    if (!passed && missing.length === 0) failed = true;
    return passed;
  };

  let runtime: RuntimeInfo | undefined;
  const setUp = await step("vm:setup (host packages, kernel)", async () => {
    await setup();
  });
  await step("vm:rootfs (Debian image, initramfs, runtime disk)", async () => {
    runtime = await ensureRuntime();
    console.error(`    runtime ${runtime.dir} (${runtime.built ? "built" : "cached"})`);
  }, [setUp ? undefined : "vm:setup"]);

  // A short base dir: the driver socket path must stay under the Unix limit.
  const base = await Deno.makeTempDir({ dir: "/tmp", prefix: "osvm" });
  // qemu's unprivileged account must reach the driver's state dir below it.
  await Deno.chmod(base, 0o711);
  const S = `${base}/gw`;
  const V = `${base}/vm`;
  const D = `${base}/bin`;
  const configHome = `${base}/cfg`;
  const gateways: TestGateway[] = [];
  const background: Deno.ChildProcess[] = [];
  let port = 0;
  /** The supervisor plane's port: what the guests' forwarders dial. */
  let planePort = 0;
  let gw: TestGateway | undefined;
  let gatewayDead = false;
  abortReason = () => (gatewayDead ? "the gateway exited unexpectedly" : undefined);
  let name = "";
  let id = "";
  /** The ssh config of step 4, which later steps use again. */
  let sshConfigWritten = false;
  const needRuntime = (): Need => runtime ? undefined : "the VM runtime";
  const needGateway = (): Need => gw && !gatewayDead ? undefined : "a running gateway";
  const needSandbox = (): Need => name && id ? undefined : "the sandbox of step 2";
  const needSshConfig = (): Need => sshConfigWritten ? undefined : "the ssh config of step 4";

  const cliEnv = (): Record<string, string> => ({
    PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: Deno.env.get("HOME") ?? "/root",
    XDG_CONFIG_HOME: configHome,
    OPENSHELL_PROVISION_TIMEOUT: "240",
    NO_COLOR: "1",
  });
  const cliArgv = (args: readonly string[]) =>
    roleCommand(
      "cli",
      cliGrants({ configDir: configHome, gateways: [{ host: "127.0.0.1", port }] }),
      args,
    );
  const cli = (args: readonly string[], timeoutMs = 120_000) =>
    runCmd(cliArgv(args), { env: cliEnv(), timeoutMs });

  // Secure defaults (TLS, client certificates, the supervisor plane) unless `plaintext`:
  // then the upstream e2e flags, --disable-tls --disable-gateway-auth.
  // The secure gateway keeps its sandboxes in a file database (a restart brings them back);
  // the plaintext one uses an in-memory one (a restart forgets them: the driver's go too).
  const startGw = async (plaintext = false, samePorts = false) => {
    const rt = runtime;
    if (!rt) throw new Error("no VM runtime (vm:rootfs failed)");
    if (!samePorts || !port) {
      port = freePort();
      planePort = freePort();
    }
    // The driver's grants name the gateway address it carries guest connections to:
    // the supervisor plane; with egress (the secure gateway), the egress proxy's guest
    // socket too (the gateway keeps the proxy's state in <state-dir>/egress, and
    // spawnGateway writes the proxy's wrapper into the driver dir).
    const egress = !plaintext;
    await stageDriverDir({
      dir: D,
      stateDir: V,
      runtimeDir: rt.dir,
      gateway: { host: "127.0.0.1", port: planePort },
      ...(egress ? { egressSocket: `${S}/egress/guest.sock` } : {}),
    });
    const g = await spawnGateway({
      stateDir: S,
      driverDir: D,
      vmDriverStateDir: V,
      port,
      tls: !plaintext,
      ...(plaintext ? {} : { dbUrl: `sqlite:${base}/gateway.db` }),
      egress,
      args: [
        "--supervisor-port",
        String(planePort),
        "--vm-runtime-dir",
        rt.dir,
        "--log-level",
        "debug",
      ],
      startTimeoutMs: 60_000,
    });
    gateways.push(g);
    let exited = false;
    g.exited.then((code) => {
      exited = true;
      if (gw === g) {
        gatewayDead = true;
        console.error(`    gateway exited unexpectedly with status ${code}`);
      }
    });
    // "Server listening" comes before the driver answers; wait for that too.
    await waitFor('the gateway\'s "compute driver ready" log line', () => {
      if (exited) throw new Error("the gateway exited");
      return g.stderr().includes("compute driver ready") ? true : undefined;
    }, { timeoutMs: 60_000, intervalMs: 100 });
    // The CLI talks to it as a registered gateway: the operator's client bundle for TLS.
    // `gateway add --mtls-dir` reads the bundle where the gateway wrote it, so this one
    // call is not confined to the CLI's config dir (cli/launch.ts does the same).
    const add = await runCmd(
      roleCommand("cli", cliGrants({ gateways: [{ host: "127.0.0.1", port }] }), [
        "gateway",
        "add",
        "e2e",
        g.endpoint,
        ...(g.pki ? ["--mtls-dir", g.pki.dir] : []),
        "--force",
      ]),
      { env: cliEnv(), timeoutMs: 60_000 },
    );
    check(add.code === 0, `gateway add: ${show(add)}`);
    const sel = await cli(["gateway", "select", "e2e"]);
    check(sel.code === 0, `gateway select: ${show(sel)}`);
    return g;
  };

  // The driver, its qemus, and the forwarders (socat) qemu started for their guests.
  const driverAndQemus = async () =>
    (await findProcesses(V)).filter((p) => !p.cmdline.includes(" sandbox create "));
  const forwarderPids = async () =>
    (await findProcesses(`socat - UNIX-CONNECT:${V}/fwd/`))
      .filter((p) => p.cmdline.startsWith("socat")).map((p) => p.pid);

  await step("start gateway (--drivers vm)", async () => {
    await Deno.mkdir(S, { recursive: true });
    await Deno.mkdir(V, { recursive: true, mode: 0o700 });
    await Deno.mkdir(configHome, { recursive: true });
    gw = await startGw();
  }, [needRuntime()]);

  await step("1. status shows Connected", async () => {
    const r = await waitFor("openshell status → Connected", async () => {
      if (gatewayDead) throw new Error("the gateway exited");
      const r = await cli(["status"], 30_000);
      return r.code === 0 && /Connected/.test(r.stdout + r.stderr) ? r : undefined;
    }, { timeoutMs: 60_000, intervalMs: 1000 });
    check(r.code === 0, show(r));
  }, [needGateway()]);

  await step("2. sandbox create -- echo smoke-ok", async () => {
    // The environment set at create reaches the sandbox's sessions (checked in step 3).
    const r = await cli(
      ["sandbox", "create", "-e", "SMOKE_GREETING=set at create", "--", "echo", "smoke-ok"],
      300_000,
    );
    check(r.code === 0 && r.stdout.includes("smoke-ok"), `create failed: ${show(r)}`);
    const m = /Created sandbox:\s*(\S+)/.exec(r.stderr + r.stdout);
    check(m, `no "Created sandbox: NAME" in the output: ${show(r)}`);
    name = m[1];
    const g = await cli(["sandbox", "get", name, "-o", "json"]);
    check(g.code === 0, `sandbox get: ${show(g)}`);
    id = JSON.parse(g.stdout).id;
    check(typeof id === "string" && id !== "", `no id in ${g.stdout}`);
    console.error(`    sandbox ${name} (${id})`);
  }, [needGateway()]);

  await step(
    "2b. the default image: bash, python3, git, rsync, whoami, sudo, modes, clock",
    async () => {
      const r = await cli([
        "sandbox",
        "exec",
        name,
        "--",
        "bash",
        "-lc",
        'python3 -c "print(1+1)"; git --version; rsync --version | head -n 1; whoami; ' +
        "echo shell=$SHELL; sudo -n id -u; stat -c '%a %U' / /tmp; date +%s; " +
        ". /etc/os-release; echo os=$ID-$VERSION_ID",
      ]);
      check(r.code === 0, `exec: ${show(r)}`);
      const lines = r.stdout.trim().split("\n");
      check(lines[0] === "2", `python3: ${show(r)}`);
      check(/^git version 2\./.test(lines[1]), `git: ${show(r)}`);
      check(/^rsync\s+version/.test(lines[2]), `rsync: ${show(r)}`);
      check(lines[3] === "sandbox", `whoami: ${show(r)}`);
      check(lines[4] === "shell=/bin/bash", `login shell: ${show(r)}`);
      check(lines[5] === "0", `sudo: ${show(r)}`);
      check(lines[6] === "755 root", `/ must not be writable by others: ${show(r)}`);
      check(lines[7] === "1777 root", `/tmp must be 1777: ${show(r)}`);
      const skew = Math.abs(Number(lines[8]) - Date.now() / 1000);
      check(skew < 30, `the guest clock is ${skew.toFixed(0)} s off: ${show(r)}`);
      check(lines[9] === "os=debian-12", `os-release: ${show(r)}`);
    },
    [needGateway(), needSandbox()],
  );

  await step("3. sandbox exec streams out/err and exit 3", async () => {
    const r = await cli([
      "sandbox",
      "exec",
      name,
      "--",
      "sh",
      "-c",
      "echo out; echo err >&2; exit 3",
    ]);
    check(r.code === 3, `want exit 3: ${show(r)}`);
    check(r.stdout.includes("out") && !r.stdout.includes("err"), `stdout: ${show(r)}`);
    check(r.stderr.includes("err"), `stderr: ${show(r)}`);
    const env = await cli(["sandbox", "exec", name, "--", "sh", "-c", "echo $SMOKE_GREETING"]);
    check(env.stdout.trim() === "set at create", `sandbox environment: ${show(env)}`);
  }, [needGateway(), needSandbox()]);

  await step("4. OpenSSH via ssh-proxy: command and sftp in/out", async () => {
    const cfg = await cli(["sandbox", "ssh-config", name]);
    check(cfg.code === 0, `ssh-config: ${show(cfg)}`);
    const host = /^\s*Host\s+(\S+)/m.exec(cfg.stdout)?.[1];
    check(host, `no Host line in ssh-config: ${cfg.stdout}`);
    const cfgFile = `${base}/ssh_config`;
    await Deno.writeTextFile(cfgFile, cfg.stdout);
    sshConfigWritten = true;
    const env = cliEnv();
    const r = await runCmd(["ssh", "-F", cfgFile, host, "echo ssh-ok uid=$(id -u) home=$HOME"], {
      env,
      timeoutMs: 90_000,
    });
    check(r.code === 0 && r.stdout.includes("ssh-ok uid=1000 home=/sandbox"), `ssh: ${show(r)}`);
    const payload = `payload ${crypto.randomUUID()}\n`.repeat(200);
    await Deno.writeTextFile(`${base}/up.txt`, payload);
    const batch = `put ${base}/up.txt /tmp/e2e.txt\nget /tmp/e2e.txt ${base}/down.txt\n`;
    const s = await runCmd(["sftp", "-F", cfgFile, "-b", "-", host], {
      env,
      stdin: batch,
      timeoutMs: 90_000,
    });
    check(s.code === 0, `sftp: ${show(s)}`);
    check(
      (await Deno.readTextFile(`${base}/down.txt`)) === payload,
      "sftp round trip changed the file",
    );
    const inside = await cli(["sandbox", "exec", name, "--", "cat", "/tmp/e2e.txt"]);
    check(
      inside.code === 0 && inside.stdout === payload,
      `file in the sandbox differs: ${show(inside)}`,
    );
    // rsync of a directory over the same SSH config.
    await Deno.mkdir(`${base}/tree/sub`, { recursive: true });
    await Deno.writeTextFile(`${base}/tree/a.txt`, "alpha\n");
    await Deno.writeTextFile(`${base}/tree/sub/b.txt`, payload);
    const rs = await runCmd(
      ["rsync", "-a", "-e", `ssh -F ${cfgFile}`, `${base}/tree/`, `${host}:/sandbox/tree/`],
      { env, timeoutMs: 90_000 },
    );
    check(rs.code === 0, `rsync: ${show(rs)}`);
    const synced = await cli([
      "sandbox",
      "exec",
      name,
      "--",
      "sh",
      "-c",
      "cat /sandbox/tree/a.txt; md5sum < /sandbox/tree/sub/b.txt; stat -c %U /sandbox/tree/sub/b.txt",
    ]);
    const want = `alpha\n${await md5(payload)}  -\nsandbox\n`;
    check(synced.code === 0 && synced.stdout === want, `rsync copy differs: ${show(synced)}`);
  }, [needGateway(), needSandbox()]);

  await step("5. list --names and logs show console lines", async () => {
    const l = await cli(["sandbox", "list", "--names"]);
    check(l.code === 0 && l.stdout.split("\n").includes(name), `list: ${show(l)}`);
    // All the gateway keeps (2,000 lines): sshd's debug lines of steps 2-4 follow the boot lines.
    const logs = await cli(["sandbox", "logs", name, "-n", "2000"]);
    check(
      logs.code === 0 && logs.stdout.includes("openshell-init: guest ready after"),
      `logs lack the boot progress lines: ${show(logs)}`,
    );
    check(!logs.stdout.includes('"class_uid"'), `event JSON in the logs: ${show(logs)}`);
    // Where the boot time goes (host and guest clocks, guest uptime stamps).
    for (const line of gw!.stderr().split("\n")) {
      if (
        line.includes(id) && /VM started|supervisor session accepted|sandbox created/.test(line)
      ) {
        console.error(
          `    host:  ${
            line.replace(
              /^.*?(\d\d:\d\d:\d\d\.\d+Z).*?(VM started|supervisor session accepted|sandbox created).*$/,
              "$1 $2",
            )
          }`,
        );
      }
    }
    const consoleText = await Deno.readTextFile(`${V}/sandboxes/${id}/console.log`);
    for (const line of consoleText.split("\n")) {
      if (
        /openshell-init: (userspace|guest ready|starting supervisor)|sshd socket listening|session established/
          .test(line)
      ) {
        console.error(`    guest: ${line.replace(/ sandbox_id=\S+.*$/, "").slice(0, 110)}`);
      }
    }
  }, [needGateway(), needSandbox()]);

  await step("5b. guest reaches the gateway alias and no other host port", async () => {
    const probe = (host: string, p: number) =>
      `if echo | nc -w 3 ${host} ${p} >/dev/null 2>&1; then echo open; else echo closed; fi`;
    const r = await cli([
      "sandbox",
      "exec",
      name,
      "--",
      "sh",
      "-c",
      `echo alias=$(${probe(GUEST_NET.gatewayAlias, GUEST_GATEWAY_PORT)}); ` +
      `echo host=$(${probe(GUEST_NET.router, port)})`,
    ]);
    check(r.code === 0, `exec: ${show(r)}`);
    check(r.stdout.includes("alias=open"), `gateway alias not reachable: ${show(r)}`);
    check(
      r.stdout.includes("host=closed"),
      `guest reached the host's gateway port directly: ${show(r)}`,
    );
  }, [needGateway(), needSandbox()]);

  await step(
    "5d. from inside a guest: the user API is refused, another sandbox unreachable",
    async () => {
      // A hostile guest talks HTTP/2 gRPC by hand to the only gateway address it has.
      const probe = `
import http2 from "node:http2";
function call(path, body) {
  return new Promise((resolve) => {
    const c = http2.connect("https://gateway.openshell.internal:${GUEST_GATEWAY_PORT}", {
      rejectUnauthorized: false,
    });
    c.on("error", (e) => resolve("error:" + e.message));
    const req = c.request({
      ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers",
    });
    let status = "none";
    req.on("response", (h) => { if (h["grpc-status"]) status = h["grpc-status"]; });
    req.on("trailers", (t) => { status = t["grpc-status"] ?? status; });
    req.on("close", () => { c.close(); resolve(status); });
    req.on("error", () => {});
    const frame = new Uint8Array(5 + body.length);
    new DataView(frame.buffer).setUint32(1, body.length);
    frame.set(body, 5);
    req.end(frame);
  });
}
const other = new TextEncoder().encode("someone-elses-sandbox");
const hello = new Uint8Array([10, other.length + 2, 10, other.length, ...other]);
console.log("list=" + await call("/openshell.v1.OpenShell/ListSandboxes", new Uint8Array()));
console.log("hello=" + await call("/openshell.v1.OpenShell/ConnectSupervisor", hello));
Deno.exit(0);
`;
      const b64 = btoa(probe);
      const r = await cli([
        "sandbox",
        "exec",
        name,
        "--",
        "sh",
        "-c",
        `echo ${b64} | base64 -d > /tmp/probe.mjs && DENO_DIR=/tmp/deno HOME=/tmp ` +
        "/opt/openshell/bin/deno run --no-config --no-lock --quiet -A /tmp/probe.mjs",
      ], 180_000);
      check(r.code === 0, `probe: ${show(r)}`);
      check(
        r.stdout.includes("list=7"),
        `a user RPC from the guest was not PERMISSION_DENIED: ${show(r)}`,
      );
      check(
        r.stdout.includes("hello=16"),
        `a hello for another sandbox without its credential was not UNAUTHENTICATED: ${show(r)}`,
      );
    },
    [needGateway(), needSandbox()],
  );

  await step(
    "5c. a dropped gateway connection is re-dialled through a new forwarder",
    async () => {
      // qemu runs one forwarder (socat, to the VM's socket served by the
      // driver) per guest connection (glib detaches it from qemu); killing
      // the supervisor's makes it reconnect, which needs a fresh forwarder.
      const forwarders = await forwarderPids();
      check(forwarders.length > 0, `no forwarder process (socat … UNIX-CONNECT:${V}/fwd/…)`);
      const consoleLog = `${V}/sandboxes/${id}/console.log`;
      const sessions = async () =>
        (await Deno.readTextFile(consoleLog)).split("supervisor session established").length - 1;
      const before = await sessions();
      for (const pid of forwarders) Deno.kill(pid, "SIGKILL");
      await waitFor(
        "a new supervisor session",
        async () => (await sessions()) > before ? true : undefined,
        {
          timeoutMs: 90_000,
          intervalMs: 250,
        },
      );
      const again = await waitFor("exec after the reconnect", async () => {
        const e = await cli(["sandbox", "exec", name, "--", "echo", "back"]);
        return e.code === 0 && e.stdout.includes("back") ? e : undefined;
      }, { timeoutMs: 60_000, intervalMs: 1000 });
      check(again.code === 0, show(again));
      const now = await forwarderPids();
      check(
        now.length > 0 && now.every((p) => !forwarders.includes(p)),
        "no new forwarder process",
      );
    },
    [needGateway(), needSandbox()],
  );

  await step("5e. a guest opening 12 gateway connections gets at most 8 carried", async () => {
    // The supervisor holds one of the VM's 8; of 12 more, at least 5 are
    // closed at once by the driver (their nc ends and records it; the
    // pipeline's `sleep` does not wait for that), the rest stay open until
    // the gateway's 10 s handshake timeout.
    const r = await cli([
      "sandbox",
      "exec",
      name,
      "--",
      "sh",
      "-c",
      "rm -f /tmp/ended; for i in $(seq 1 12); do " +
      `(nc -d ${GUEST_NET.gatewayAlias} ${GUEST_GATEWAY_PORT}; echo x >> /tmp/ended) ` +
      ">/dev/null 2>&1 & done; sleep 5; echo ended=$(cat /tmp/ended 2>/dev/null | wc -l)",
    ]);
    check(r.code === 0, `exec: ${show(r)}`);
    const ended = Number(/ended=\s*(\d+)/.exec(r.stdout)?.[1] ?? NaN);
    check(ended >= 5 && ended < 12, `expected 5 to 11 refused connections: ${show(r)}`);
    check(
      gateways.at(-1)!.stderr().includes("guest connection limit reached"),
      "the driver did not log its cap",
    );
    const again = await cli(["sandbox", "exec", name, "--", "echo", "still-ok"]);
    check(again.code === 0 && again.stdout.includes("still-ok"), show(again));
  }, [needGateway(), needSandbox()]);

  await step("5f. a process an exec leaves running ends with the exec", async () => {
    // A process the exec leaves behind (no terminal, output elsewhere, reparented to
    // PID 1 when the exec's shell exits) runs while the exec lasts and ends with it
    // (the supervisor's session cgroup). The guest's busybox has no nohup, and its
    // setsid forks, which would hide the pid.
    const left = await cli([
      "sandbox",
      "exec",
      name,
      "--",
      "sh",
      "-c",
      'sleep 300 </dev/null >/dev/null 2>&1 & p=$!; sleep 0.5; kill -0 "$p" && echo "running $p"',
    ]);
    const pid = /running (\d+)/.exec(left.stdout)?.[1];
    check(left.code === 0 && pid, `background process did not start: ${show(left)}`);
    await waitFor(`the exec's background process ${pid} to end with it`, async () => {
      const r = await cli([
        "sandbox",
        "exec",
        name,
        "--",
        "sh",
        "-c",
        `kill -0 ${pid} || echo gone`,
      ]);
      return r.code === 0 && r.stdout.includes("gone") ? true : undefined;
    }, { timeoutMs: 20_000, intervalMs: 500 });
  }, [needGateway(), needSandbox()]);

  await step("5g. --cpus, --memory and --disk-gib size the VM; too much is refused", async () => {
    const r = await cli([
      "sandbox",
      "create",
      "--name",
      "sized",
      "--cpus",
      "1",
      "--memory",
      "1536Mi",
      "--disk-gib",
      "12",
      "--",
      "sh",
      "-c",
      "nproc; free -m | awk '/^Mem:/ {print $2}'; df -BG --output=size / | tail -n 1",
    ], 300_000);
    check(r.code === 0, `create: ${show(r)}`);
    const [cpus, memMib, disk] = r.stdout.trim().split("\n").map((l) => l.trim());
    check(cpus === "1", `nproc: ${show(r)}`);
    check(Number(memMib) > 1300 && Number(memMib) <= 1536, `free -m: ${show(r)}`);
    check(disk === "12G", `df: ${show(r)}`);
    const g = await cli(["sandbox", "get", "sized"]);
    check(
      g.stdout.includes("Resources=True  Allocated: 1 vCPU, 1536 MiB memory, 12 GiB disk"),
      `sandbox get: ${show(g)}`,
    );
    const d = await cli(["sandbox", "delete", "sized"]);
    check(d.code === 0, `delete: ${show(d)}`);
    const big = await cli([
      "sandbox",
      "create",
      "--name",
      "huge",
      "--memory",
      "64Ti",
      "--",
      "true",
    ]);
    check(
      big.code !== 0 && /RESOURCE_EXHAUSTED|this host has \d+ MiB/.test(big.stderr),
      `64Ti of memory was not refused: ${show(big)}`,
    );
  }, [needGateway()]);

  const sshConfigHost = async (): Promise<string> => {
    const text = await Deno.readTextFile(`${base}/ssh_config`);
    const host = /^\s*Host\s+(\S+)/m.exec(text)?.[1];
    check(host, `no Host line in ${base}/ssh_config`);
    return host;
  };
  const phaseOf = async (): Promise<{ phase: string; text: string }> => {
    const g = await cli(["sandbox", "get", name, "-o", "json"]);
    check(g.code === 0, `sandbox get: ${show(g)}`);
    return { phase: String(JSON.parse(g.stdout).phase), text: g.stdout };
  };

  await step(
    "5h. a file in /sandbox survives sandbox stop + start; the host key too",
    async () => {
      const token = `kept-${crypto.randomUUID()}`;
      const w = await cli([
        "sandbox",
        "exec",
        name,
        "--",
        "sh",
        "-c",
        `echo ${token} > /sandbox/kept.txt`,
      ]);
      check(w.code === 0, `write: ${show(w)}`);
      const pid = Number((await Deno.readTextFile(`${V}/sandboxes/${id}/qemu.pid`)).trim());
      const t0 = Date.now();
      const stop = await cli(["sandbox", "stop", name], 180_000);
      const stopMs = Date.now() - t0;
      check(stop.code === 0 && stop.stdout.includes(`Stopped sandbox ${name}`), show(stop));
      check(!(await alive(pid)), `qemu ${pid} still runs after the stop`);
      const stopped = await phaseOf();
      check(/STOPPED/.test(stopped.phase), `phase after stop: ${stopped.text}`);
      check(
        new RegExp(`sandbox stopped.*sandbox_id=${id}.*how=powerdown`).test(gw!.stderr()),
        "the guest did not power off when asked (the driver had to kill qemu)",
      );
      const t1 = Date.now();
      const start = await cli(["sandbox", "start", name], 300_000);
      const startMs = Date.now() - t1;
      check(start.code === 0 && start.stderr.includes("is ready"), `start: ${show(start)}`);
      const r = await cli(["sandbox", "exec", name, "--", "cat", "/sandbox/kept.txt"]);
      check(r.stdout.trim() === token, `the file after stop + start: ${show(r)}`);
      const ssh = await runCmd(
        ["ssh", "-F", `${base}/ssh_config`, await sshConfigHost(), "cat /sandbox/kept.txt"],
        { env: cliEnv(), timeoutMs: 90_000 },
      );
      check(
        ssh.code === 0 && ssh.stdout.trim() === token,
        `ssh after stop + start: ${show(ssh)}`,
      );
      console.error(`    stop ${fmt(stopMs)} (clean power-off), start → READY ${fmt(startMs)}`);
    },
    [needGateway(), needSandbox(), needSshConfig()],
  );

  await step(
    "5i. gateway SIGTERM + restart (file database): READY again on its own, files and ssh kept",
    async () => {
      const token = `restart-${crypto.randomUUID()}`;
      const w = await cli([
        "sandbox",
        "exec",
        name,
        "--",
        "sh",
        "-c",
        `echo ${token} > /sandbox/restart.txt`,
      ]);
      check(w.code === 0, `write: ${show(w)}`);
      const g = gw!;
      gw = undefined;
      await g.stop();
      await waitFor("driver and qemu gone after SIGTERM", async () => {
        return (await driverAndQemus()).length === 0 ? true : undefined;
      }, { timeoutMs: 15_000, intervalMs: 250 });
      const t0 = Date.now();
      gw = await startGw(false, true);
      const back = await waitFor("the sandbox READY again", async () => {
        const p = await phaseOf();
        if (/ERROR/.test(p.phase)) throw new Error(`ERROR after the restart: ${p.text}`);
        return /READY/.test(p.phase) ? p : undefined;
      }, { timeoutMs: 300_000, intervalMs: 1000 });
      const readyMs = Date.now() - t0;
      check(/READY/.test(back.phase), back.text);
      check(gw.stderr().includes("sandboxes resumed after a restart"), "no resume log line");
      const r = await cli(["sandbox", "exec", name, "--", "cat", "/sandbox/restart.txt"]);
      check(r.stdout.trim() === token, `the file after the restart: ${show(r)}`);
      const ssh = await runCmd(
        ["ssh", "-F", `${base}/ssh_config`, await sshConfigHost(), "cat /sandbox/restart.txt"],
        { env: cliEnv(), timeoutMs: 90_000 },
      );
      check(ssh.code === 0 && ssh.stdout.trim() === token, `ssh after the restart: ${show(ssh)}`);
      console.error(`    gateway start → sandbox READY again: ${fmt(readyMs)}`);
    },
    [needGateway(), needSandbox(), needSshConfig()],
  );

  await step("5j. image build --packages cowsay; sandbox create --image boots it", async () => {
    const t0 = Date.now();
    const b = await cli(["image", "build", "e2e-extra", "--packages", "cowsay"], 1_200_000);
    const buildMs = Date.now() - t0;
    check(b.code === 0 && b.stdout.includes("Built image e2e-extra"), `image build: ${show(b)}`);
    const list = await cli(["image", "list", "-o", "json"]);
    const images = JSON.parse(list.stdout) as {
      name: string;
      source: string;
      packages: string[];
    }[];
    check(
      images.some((i) => i.name === "default") &&
        images.some((i) => i.name === "e2e-extra" && i.packages.includes("cowsay")),
      `image list: ${show(list)}`,
    );
    const t1 = Date.now();
    const c = await cli([
      "sandbox",
      "create",
      "--name",
      "imaged",
      "--image",
      "e2e-extra",
      "--",
      "sh",
      "-c",
      "dpkg -s cowsay >/dev/null && /usr/games/cowsay moo | grep -c moo",
    ], 300_000);
    check(c.code === 0 && c.stdout.trim() === "1", `create --image: ${show(c)}`);
    const readyMs = Date.now() - t1;
    const unknown = await cli(["sandbox", "create", "--image", "nope", "--", "true"]);
    check(
      unknown.code !== 0 &&
        /image "nope" not found; see `openshell image list`/.test(unknown.stderr),
      `an unknown image: ${show(unknown)}`,
    );
    const busy = await cli(["image", "delete", "e2e-extra"]);
    check(
      busy.code !== 0 && /in use by 1 sandbox/.test(busy.stderr),
      `delete in use: ${show(busy)}`,
    );
    check((await cli(["sandbox", "delete", "imaged"])).code === 0, "sandbox delete imaged");
    const del = await cli(["image", "delete", "e2e-extra"]);
    check(del.code === 0 && del.stdout.includes("Deleted image e2e-extra"), show(del));
    console.error(
      `    image build ${fmt(buildMs)}, create --image → command done ${fmt(readyMs)}`,
    );
  }, [needGateway()]);

  // ---- egress (issue 14): its own steps, see e2e/egress_steps.ts ----
  await egressSteps({
    step: (label, fn, needs = []) => step(label, fn, [needGateway(), ...needs]),
    cli,
    policyDir: configHome,
  });

  await step(
    "6. qemu runs unprivileged; killing it → ERROR with reason ProcessExited",
    async (t) => {
      const pid = Number((await Deno.readTextFile(`${V}/sandboxes/${id}/qemu.pid`)).trim());
      check(pid > 0 && await alive(pid), `qemu pid ${pid} is not running`);
      const status = await Deno.readTextFile(`/proc/${pid}/status`);
      const uids = /^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/m.exec(status)?.slice(1).map(Number);
      check(uids, `no Uid line for qemu ${pid}`);
      // The driver drops qemu to its own account only when it runs as root.
      await t.step({
        name: "as root: qemu's uids are not root and it has NoNewPrivs",
        ignore: Deno.uid() !== 0,
        fn: () => {
          check(uids.every((u) => u !== 0), `qemu ${pid} runs as root (uids ${uids.join(" ")})`);
          check(/^NoNewPrivs:\s+1$/m.test(status), `qemu ${pid} may gain privileges`);
        },
      });
      // Seccomp mode 2 = a filter (qemu's -sandbox on).
      check(/^Seccomp:\s+2$/m.test(status), `qemu ${pid} has no seccomp filter`);
      console.error(`    qemu ${pid}: uid ${uids[0]}, seccomp filter on`);
      Deno.kill(pid, "SIGKILL");
      await waitFor("phase ERROR / ProcessExited", async () => {
        const g = await cli(["sandbox", "get", name, "-o", "json"]);
        if (g.code !== 0) return undefined;
        const sb = JSON.parse(g.stdout);
        const text = JSON.stringify(sb);
        return /ERROR/.test(String(sb.phase)) && text.includes("ProcessExited") ? true : undefined;
      }, { timeoutMs: 30_000, intervalMs: 500 });
    },
    [needGateway(), needSandbox()],
  );

  await step("7. sandbox delete → gone from list, qemu gone, state dir gone", async () => {
    const pidText = await Deno.readTextFile(`${V}/sandboxes/${id}/qemu.pid`).catch(() => "");
    const r = await cli(["sandbox", "delete", name]);
    check(r.code === 0, `delete: ${show(r)}`);
    await waitFor("sandbox gone from list", async () => {
      const l = await cli(["sandbox", "list", "--names"]);
      return l.code === 0 && !l.stdout.split("\n").includes(name) ? true : undefined;
    }, { timeoutMs: 30_000, intervalMs: 500 });
    const pid = Number(pidText.trim());
    if (pid > 0) check(!(await alive(pid)), `qemu ${pid} still running`);
    await waitFor("state dir removed", async () => {
      try {
        await Deno.stat(`${V}/sandboxes/${id}`);
        return undefined;
      } catch {
        return true;
      }
    }, { timeoutMs: 10_000 });
    const left = await findProcesses(`${V}/sandboxes/${id}`);
    check(
      left.length === 0,
      `processes of the sandbox remain: ${left.map((p) => p.pid).join(", ")}`,
    );
  }, [needGateway(), needSandbox()]);

  for (const signal of ["SIGTERM", "SIGKILL"] as const) {
    await step(`8. ${signal} of the gateway leaves no driver, qemu or forwarder`, async () => {
      if (!gw || gatewayDead) {
        // An earlier step left no gateway running.
        gatewayDead = false;
        gw = await startGw();
      }
      // Start a sandbox in the background; only its qemu needs to be running.
      const [exe, ...args] = cliArgv([
        "sandbox",
        "create",
        "--name",
        `orphan-${signal.toLowerCase()}`,
        "--",
        "true",
      ]);
      const creator = new Deno.Command(exe, {
        args,
        env: cliEnv(),
        clearEnv: true,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      background.push(creator);
      await waitFor("a running qemu", async () => {
        const ps = (await driverAndQemus()).filter((p) => p.cmdline.includes("qemu-system"));
        return ps.length > 0 ? ps : undefined;
      }, { timeoutMs: 60_000, intervalMs: 250 });
      const before = await driverAndQemus();
      check(
        before.some((p) => p.cmdline.includes("driver_vm/main.ts")),
        "no driver process found",
      );
      const g = gw;
      gw = undefined;
      if (signal === "SIGTERM") await g.stop();
      else await g.kill();
      await waitFor("driver and qemu processes gone", async () => {
        const left = await driverAndQemus();
        return left.length === 0 ? true : undefined;
      }, { timeoutMs: 15_000, intervalMs: 250 }).catch(async (err) => {
        const left = await driverAndQemus();
        throw new Error(
          `${err.message}: ${left.map((p) => `${p.pid} ${p.cmdline.slice(0, 120)}`).join("; ")}`,
        );
      });
      try {
        creator.kill("SIGKILL");
      } catch { /* gone */ }
      await creator.status;
    }, [needRuntime()]);
  }

  await step(
    "9. plaintext gateway without egress: create, exec, look-ups fail at once, delete",
    async () => {
      gw = await startGw(true);
      const r = await cli(
        ["sandbox", "create", "--name", "plain", "--", "echo", "plain-ok"],
        300_000,
      );
      check(r.code === 0 && r.stdout.includes("plain-ok"), `create: ${show(r)}`);
      const e = await cli(["sandbox", "exec", "plain", "--", "sh", "-c", "echo $((6*7))"]);
      check(e.code === 0 && e.stdout.trim() === "42", `exec: ${show(e)}`);
      await noEgressChecks(cli, "plain");
      const d = await cli(["sandbox", "delete", "plain"]);
      check(d.code === 0, `delete: ${show(d)}`);
      const g = gw;
      gw = undefined;
      await g.stop();
    },
    [needRuntime()],
  );

  await installedSteps((label, fn, needs = []) => step(label, fn, [needRuntime(), ...needs]));

  // ---- teardown ----------------------------------------------------------
  for (const c of background) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
    await c.status.catch(() => {});
  }
  if (failed) {
    console.error("\n==== gateway logs ====");
    for (const g of gateways) console.error(g.stderr());
    console.error("==== console logs ====");
    try {
      for await (const e of Deno.readDir(`${V}/sandboxes`)) {
        const text = await Deno.readTextFile(`${V}/sandboxes/${e.name}/console.log`).catch(() =>
          "(none)"
        );
        console.error(`---- ${e.name}/console.log\n${text}`);
      }
    } catch { /* no sandboxes dir */ }
  }
  for (const g of gateways) await g.kill().catch(() => {});
  for (const p of await findProcesses(base)) {
    try {
      Deno.kill(p.pid, "SIGKILL");
    } catch { /* gone */ }
  }
  if (failed) console.error(`\ne2e:vm: state kept in ${base}`);
  else await Deno.remove(base, { recursive: true }).catch(() => {});
}

Deno.test("e2e:vm", {
  // Gateways, drivers and qemus outlive single steps; the teardown above ends them.
  sanitizeOps: false,
  sanitizeResources: false,
}, e2e);
