/**
 * What the installed CLI costs on the way into a sandbox, against Deno's and
 * OpenSSH's own floor, in one run:
 *
 * ```
 * deno run -A e2e/bench_ssh.ts [--runs N]
 * ```
 *
 * Starts the CLI test fixture over https (cli/testing.ts: a TLS gateway with
 * client certificates whose sandboxes run as host supervisors with OpenSSH,
 * testing/host_driver.ts), installs the commands into a temp dir
 * (`testing/install.ts`, Deno copied next to the wrappers), creates one
 * sandbox with the installed `openshell`, then times, round-robin so that
 * load changes hit every row alike:
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
 * (median of ssh via ssh-proxy − median of direct ssh). Nothing asserts a
 * time. Stops everything and removes the temp dirs, also on Ctrl-C.
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

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { runs: { type: "string", default: "15" } },
  });
  const runs = Math.max(3, Number(values.runs) || 15);
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
    const sshdConfig = `${socket.slice(0, socket.lastIndexOf("/"))}/sshd_config`;
    const plain = [
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
    const deno = inst.plan.manifest.deno;
    const rows: Row[] = [
      { name: "deno --version", command: `${deno} --version`, times: [] },
      { name: "openshell status", command: "openshell status", times: [] },
      {
        name: `openshell sandbox exec ${SANDBOX} -- true`,
        command: `openshell sandbox exec ${SANDBOX} -- true`,
        times: [],
      },
      {
        name: "ssh via openshell ssh-proxy (ssh-config)",
        command: shellJoin(["ssh", "-F", sshConfig, "-T", `openshell-${SANDBOX}`, "true"]),
        times: [],
      },
      {
        name: "ssh direct (socat to the sshd socket)",
        command: shellJoin([
          ...plain,
          "-o",
          `ProxyCommand=socat - UNIX-CONNECT:${socket}`,
          "sandbox@sandbox",
          "true",
        ]),
        times: [],
      },
      {
        name: "OpenSSH alone (sshd -i as ProxyCommand)",
        command: shellJoin([
          ...plain,
          "-o",
          `ProxyCommand=/usr/sbin/sshd -i -e -f ${sshdConfig}`,
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
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    await cleanup();
  }
}

if (import.meta.main) Deno.exit(await main());
