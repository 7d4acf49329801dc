/**
 * Start-up of the installed CLI against Deno's own, in one run:
 *
 * ```
 * deno run -A e2e/bench_cli.ts [--runs N]
 * ```
 *
 * Installs into a temp dir (`testing/install.ts`: the real wrappers, Deno
 * copied next to them), starts the local gateway there with
 * `openshell gateway start --drivers none`, then times, round-robin so
 * that load changes hit every row alike: `deno --version` and an empty
 * `deno run` (the floor), the installed `openshell --version` and
 * `openshell status` (a TLS Health call to that gateway), and the same
 * two through `npx deno task cli` (the way before the install existed).
 * Prints the median and min wall time of each row. Nothing asserts a time.
 * Stops the gateway and removes the temp dir, also on Ctrl-C.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { REPO_ROOT } from "../core/launcher.ts";
import { makeTestInstall, runInstalled, type TestInstall } from "../testing/install.ts";

interface Row {
  name: string;
  command: string;
  times: number[];
}

async function timeOnce(inst: TestInstall, command: string): Promise<number> {
  const t0 = performance.now();
  const child = new Deno.Command("/bin/sh", {
    args: ["-c", command],
    cwd: inst.cwd,
    env: inst.env,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const out = await child.output();
  const ms = performance.now() - t0;
  if (!out.success) {
    throw new Error(`${command} failed: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

async function loadAverage(): Promise<string> {
  return (await Deno.readTextFile("/proc/loadavg").catch(() => "?")).split(" ")[0];
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { runs: { type: "string", default: "15" } },
  });
  const runs = Math.max(3, Number(values.runs) || 15);
  const inst = await makeTestInstall({ copyDeno: true });
  const m = inst.plan.manifest;
  let stopped = false;
  const cleanup = async () => {
    if (stopped) return;
    stopped = true;
    await runInstalled(inst, "openshell gateway stop").catch(() => {});
    await inst.remove();
  };
  const onInt = () => cleanup().then(() => Deno.exit(130));
  Deno.addSignalListener("SIGINT", onInt);
  try {
    const start = await runInstalled(inst, "openshell gateway start --drivers none");
    if (start.code !== 0) throw new Error(`gateway start: ${start.stderr}`);
    await Deno.writeTextFile(`${inst.dir}/empty.ts`, "");
    const npx = `cd ${REPO_ROOT} && XDG_CONFIG_HOME=${inst.env.XDG_CONFIG_HOME} ` +
      "npx --yes deno@2.9.6 task -q cli --";
    const rows: Row[] = [
      { name: "deno --version", command: `${m.deno} --version`, times: [] },
      { name: "deno run (empty script)", command: `${m.deno} run ${inst.dir}/empty.ts`, times: [] },
      { name: "openshell --version", command: "openshell --version", times: [] },
      { name: "openshell status", command: "openshell status", times: [] },
      { name: "npx deno task cli -- --version", command: `${npx} --version`, times: [] },
      { name: "npx deno task cli -- status", command: `${npx} status`, times: [] },
    ];
    const load0 = await loadAverage();
    for (const r of rows) await timeOnce(inst, r.command); // warm caches
    for (let i = 0; i < runs; i++) {
      for (const r of rows) r.times.push(await timeOnce(inst, r.command));
    }
    const load1 = await loadAverage();
    console.log(
      `CLI start-up, ${runs} runs each, round-robin; load average ${load0} → ${load1}; ` +
        `Deno ${Deno.version.deno}`,
    );
    console.log("| command | median ms | min ms |");
    console.log("| --- | ---: | ---: |");
    for (const r of rows) {
      console.log(
        `| \`${r.name}\` | ${median(r.times).toFixed(0)} | ${Math.min(...r.times).toFixed(0)} |`,
      );
    }
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    await cleanup();
  }
}

if (import.meta.main) Deno.exit(await main());
