/**
 * The installed CLI and the relay on the way into a sandbox, against Deno's
 * and OpenSSH's own floor, in one run:
 *
 * ```
 * deno run -A e2e/bench_ssh.ts [startup|throughput]... [--runs N] [--mib N]
 * ```
 *
 * Starts the CLI test fixture over https (cli/testing.ts: a TLS gateway with
 * client certificates whose sandboxes run as host supervisors with OpenSSH,
 * testing/host_driver.ts), installs the commands into a temp dir
 * (`testing/install.ts`, Deno copied next to the wrappers), creates one
 * sandbox with the installed `openshell`, then runs the sections asked for
 * (default: both).
 *
 * `startup` times, round-robin so that load changes hit every row alike:
 *
 * - `deno --version` (the installed Deno copy);
 * - `openshell status` (a TLS `Health` call);
 * - `openshell sandbox exec NAME -- true`;
 * - `ssh` through `openshell ssh-proxy` (the `sandbox ssh-config` block) running `true`;
 * - `ssh` directly to the same sandbox's sshd: its supervisor's Unix socket through a
 *   `socat` ProxyCommand, running `true`;
 * - OpenSSH alone: `ssh` to `sshd -i` with that sandbox's sshd config and host key as the
 *   ProxyCommand (no supervisor, no socket), running `true`.
 *
 * Times run until the command exits (ssh: not until its ProxyCommand, which
 * revokes its token after ssh hung up on it, has exited too). Prints median
 * and min wall time per row and the proxy's added time
 * (median of ssh via ssh-proxy − median of direct ssh).
 *
 * `throughput` moves `--mib` MiB (default 256) of zeros through OpenSSH,
 * upload (`head -c N /dev/zero | ssh … 'sink'`) and download
 * (`ssh … 'head -c N /dev/zero' | sink`), over the relay (ssh-proxy →
 * gateway → relay → host supervisor → sshd) and directly to the same sshd
 * (`socat` to its Unix socket), alternating paths and directions per round.
 * The sink stamps the clock after the first byte arrived and after the last
 * (`head -c 1; date; wc -c; date`), so the SSH handshake is not in the rate.
 * Prints medians, min–max, relay/direct, and the gateway's and supervisor's
 * CPU per MiB over the relay runs.
 *
 * Nothing asserts a time. Stops everything and removes the temp dirs, also
 * on Ctrl-C.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { shellJoin } from "../core/shell.ts";
import { startCliFixture } from "../cli/testing.ts";
import { makeTestInstall } from "../testing/install.ts";

interface Row {
  name: string;
  command: string;
  times: number[];
}

const SANDBOX = "bench";

async function run(
  command: string,
  env: Record<string, string>,
  cwd: string,
): Promise<{ ms: number; stdout: string }> {
  const t0 = performance.now();
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", command],
    cwd,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output();
  // Until the command exits (what a shell waits for), not until every copy of its
  // stderr closes: ssh's ProxyCommand may still be revoking its token after ssh is gone.
  await child.status;
  const ms = performance.now() - t0;
  const out = await output;
  const dec = new TextDecoder();
  if (!out.success) {
    throw new Error(`${command} failed (${out.code}): ${dec.decode(out.stderr).trim()}`);
  }
  return { ms, stdout: dec.decode(out.stdout) };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
}

/** The sandbox's sshd socket under the host driver's state dir (`<state>/vm/r/<short>/ssh.sock`). */
async function findSocket(stateDir: string): Promise<string> {
  const base = `${stateDir}/vm/r`;
  for await (const e of Deno.readDir(base)) {
    const path = `${base}/${e.name}/ssh.sock`;
    if (await Deno.lstat(path).then(() => true, () => false)) return path;
  }
  throw new Error(`no sshd socket under ${base}`);
}

/** What both sections need: the fixture, the install, and the ways into the sandbox. */
interface Rig {
  env: Record<string, string>;
  cwd: string;
  /** The installed Deno copy. */
  deno: string;
  /** The `sandbox ssh-config` file (ProxyCommand `openshell ssh-proxy`). */
  sshConfig: string;
  /** The sandbox's sshd socket (its supervisor's end). */
  socket: string;
  /** That sshd's config file. */
  sshdConfig: string;
  /** The gateway process. */
  gatewayPid: number;
}

/** `ssh` without a config file, for the direct paths. */
const PLAIN_SSH = [
  "ssh",
  "-F",
  "/dev/null",
  "-o",
  "BatchMode=yes",
  "-o",
  "StrictHostKeyChecking=no",
  "-o",
  "UserKnownHostsFile=/dev/null",
  "-o",
  "LogLevel=ERROR",
  "-T",
];

/** `ssh` over the relay (the ssh-config block), then the remote command. */
function viaRelay(rig: Rig, remote: string): string {
  return shellJoin(["ssh", "-F", rig.sshConfig, "-T", `openshell-${SANDBOX}`, remote]);
}

/** `ssh` straight to the sandbox's sshd socket through socat, then the remote command. */
function viaSocket(rig: Rig, remote: string): string {
  return shellJoin([
    ...PLAIN_SSH,
    "-o",
    `ProxyCommand=socat - UNIX-CONNECT:${rig.socket}`,
    "sandbox@sandbox",
    remote,
  ]);
}

async function startup(rig: Rig, runs: number): Promise<void> {
  const { env, cwd } = rig;
  const rows: Row[] = [
    { name: "deno --version", command: `${rig.deno} --version`, times: [] },
    { name: "openshell status", command: "openshell status", times: [] },
    {
      name: `openshell sandbox exec ${SANDBOX} -- true`,
      command: `openshell sandbox exec ${SANDBOX} -- true`,
      times: [],
    },
    { name: "ssh via openshell ssh-proxy (ssh-config)", command: viaRelay(rig, "true"), times: [] },
    { name: "ssh direct (socat to the sshd socket)", command: viaSocket(rig, "true"), times: [] },
    {
      name: "OpenSSH alone (sshd -i as ProxyCommand)",
      command: shellJoin([
        ...PLAIN_SSH,
        "-o",
        `ProxyCommand=/usr/sbin/sshd -i -e -f ${rig.sshdConfig}`,
        "sandbox@sandbox",
        "true",
      ]),
      times: [],
    },
  ];
  const load0 = await loadAverage();
  for (const r of rows) await run(r.command, env, cwd); // warm caches
  for (let i = 0; i < runs; i++) {
    for (const r of rows) r.times.push((await run(r.command, env, cwd)).ms);
  }
  const load1 = await loadAverage();
  console.log(
    `Into a sandbox, ${runs} runs each, round-robin; load average ${load0} → ${load1}; ` +
      `Deno ${Deno.version.deno}`,
  );
  console.log("| command | median ms | min ms |");
  console.log("| --- | ---: | ---: |");
  for (const r of rows) {
    console.log(
      `| ${r.name} | ${median(r.times).toFixed(0)} | ${Math.min(...r.times).toFixed(0)} |`,
    );
  }
  const added = median(rows[3].times) - median(rows[4].times);
  console.log(`\nssh-proxy adds ${added.toFixed(0)} ms (median via ssh-proxy − median direct)`);
}

/**
 * Reads what the sink printed: the clock after the first byte, the count of
 * the bytes after it, the clock after the last; returns MB/s of those bytes.
 */
function sinkRate(stdout: string, expected: number): number {
  const [t0, count, t1] = stdout.trim().split(/\s+/).map(Number);
  if (count !== expected - 1) {
    throw new Error(`the sink counted ${count} bytes after the first, expected ${expected - 1}`);
  }
  return (count / 1e6) / ((t1 - t0) / 1e9);
}

/** Counts stdin after its first byte, stamping the clock (ns) before and after. */
const SINK = "head -c 1 >/dev/null; date +%s%N; wc -c; date +%s%N";

/** The CPU ms (user + system) of `pid` so far; 0 when it is gone. */
async function cpuOf(pid: number | undefined): Promise<number> {
  if (pid === undefined) return 0;
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

/** The pid of the process whose command line names `needle` (the sandbox's supervisor). */
async function pidNaming(needle: string): Promise<number | undefined> {
  for await (const e of Deno.readDir("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const cmd = await Deno.readTextFile(`/proc/${e.name}/cmdline`).catch(() => "");
    const argv = cmd.split("\0");
    if (argv.includes(needle) && !argv.some((a) => a.endsWith("setpriv"))) return Number(e.name);
  }
  return undefined;
}

async function throughput(rig: Rig, runs: number, mib: number): Promise<void> {
  const bytes = mib * 1024 * 1024;
  const { env, cwd } = rig;
  const supervisorPid = await pidNaming(rig.socket);
  const paths = [
    { name: "relay", ssh: (remote: string) => viaRelay(rig, remote) },
    { name: "direct", ssh: (remote: string) => viaSocket(rig, remote) },
  ] as const;
  const directions = {
    upload: (ssh: (r: string) => string) => `head -c ${bytes} /dev/zero | ${ssh(SINK)}`,
    download: (ssh: (r: string) => string) => `${ssh(`head -c ${bytes} /dev/zero`)} | { ${SINK}; }`,
  };
  type Dir = keyof typeof directions;
  const rates: Record<string, number[]> = {};
  const cpu: Record<Dir, { gateway: number; supervisor: number }> = {
    upload: { gateway: 0, supervisor: 0 },
    download: { gateway: 0, supervisor: 0 },
  };
  const load0 = await loadAverage();
  // Warm-up: one small transfer each way on each path.
  for (const p of paths) {
    for (const d of ["upload", "download"] as const) {
      const small = directions[d](p.ssh).replaceAll(String(bytes), String(1024 * 1024));
      await run(small, env, cwd);
    }
  }
  for (let i = 0; i < runs; i++) {
    // Alternate which path goes first, so a load change does not favour one.
    const order = i % 2 === 0 ? paths : [...paths].reverse();
    for (const d of ["upload", "download"] as const) {
      for (const p of order) {
        const g0 = await cpuOf(rig.gatewayPid);
        const s0 = await cpuOf(supervisorPid);
        const out = await run(directions[d](p.ssh), env, cwd);
        if (p.name === "relay") {
          cpu[d].gateway += await cpuOf(rig.gatewayPid) - g0;
          cpu[d].supervisor += await cpuOf(supervisorPid) - s0;
        }
        (rates[`${p.name} ${d}`] ??= []).push(sinkRate(out.stdout, bytes));
      }
    }
  }
  const load1 = await loadAverage();
  console.log(
    `\nOpenSSH throughput, ${mib} MiB of zeros, ${runs} runs per row (MB/s = 10^6 bytes/s; ` +
      `median, min–max); load average ${load0} → ${load1}; Deno ${Deno.version.deno}`,
  );
  console.log(
    "| direction | direct: socat to the sshd socket (baseline) | relay: ssh-proxy → gateway → " +
      "supervisor | relay/direct | gateway CPU ms/MiB | supervisor CPU ms/MiB |",
  );
  console.log("| --- | ---: | ---: | ---: | ---: | ---: |");
  const spread = (xs: number[]) =>
    `${median(xs).toFixed(1)} (${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)})`;
  for (const d of ["upload", "download"] as const) {
    const direct = rates[`direct ${d}`];
    const relay = rates[`relay ${d}`];
    const perMiB = (ms: number) => (ms / (runs * mib)).toFixed(2);
    console.log(
      `| ${d} | ${spread(direct)} | ${spread(relay)} | ` +
        `${(median(relay) / median(direct)).toFixed(2)} | ${perMiB(cpu[d].gateway)} | ` +
        `${supervisorPid === undefined ? "?" : perMiB(cpu[d].supervisor)} |`,
    );
  }
}

const SECTIONS = ["startup", "throughput"] as const;

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      runs: { type: "string" },
      mib: { type: "string", default: "256" },
    },
  });
  for (const p of positionals) {
    if (!(SECTIONS as readonly string[]).includes(p)) {
      console.error(`bench_ssh: unknown section "${p}" (expected ${SECTIONS.join(", ")})`);
      return 2;
    }
  }
  const wanted = positionals.length ? positionals : [...SECTIONS];
  const mib = Math.max(1, Number(values.mib) || 256);
  const fixture = await startCliFixture({ scheme: "https" });
  const inst = await makeTestInstall({ copyDeno: true });
  let stopped = false;
  const cleanup = async () => {
    if (stopped) return;
    stopped = true;
    await inst.remove();
    await fixture.close();
  };
  const onInt = () => cleanup().then(() => Deno.exit(130));
  Deno.addSignalListener("SIGINT", onInt);
  try {
    const env = { ...fixture.env, PATH: inst.env.PATH, HOME: inst.env.HOME, NO_COLOR: "1" };
    const cwd = inst.cwd;
    await run(`openshell sandbox create --name ${SANDBOX} -- true`, env, cwd);
    const sshConfig = `${inst.dir}/ssh_config`;
    const cfg = await run(`openshell sandbox ssh-config ${SANDBOX}`, env, cwd);
    await Deno.writeTextFile(sshConfig, cfg.stdout);
    const socket = await findSocket(fixture.gateway.stateDir);
    const rig: Rig = {
      env,
      cwd,
      deno: inst.plan.manifest.deno,
      sshConfig,
      socket,
      sshdConfig: `${socket.slice(0, socket.lastIndexOf("/"))}/sshd_config`,
      gatewayPid: fixture.gateway.pid,
    };
    if (wanted.includes("startup")) {
      await startup(rig, Math.max(3, Number(values.runs) || 15));
    }
    if (wanted.includes("throughput")) {
      await throughput(rig, Math.max(1, Number(values.runs) || 5), mib);
    }
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    await cleanup();
  }
}

if (import.meta.main) Deno.exit(await main());
