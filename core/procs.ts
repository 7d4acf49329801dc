/**
 * Processes as `ps` lists them. Deno allows reading `/proc` only with every
 * permission, so a role that must find its processes (the CLI's
 * `gateway stop`) runs `ps` instead, with a run grant for exactly it.
 *
 * @module
 */

/** The `ps` this code runs (procps). */
export const PS = "/bin/ps";

/** One process. */
export interface ProcEntry {
  pid: number;
  ppid: number;
  /** `ps` STAT, e.g. `Ssl`; `Z` first = a zombie. */
  state: string;
  /** The command line, arguments separated by spaces. */
  args: string;
}

/** Parses `ps -e -ww -o pid=,ppid=,stat=,args=` output. */
export function parsePs(text: string): ProcEntry[] {
  const out: ProcEntry[] = [];
  for (const line of text.split("\n")) {
    const m = /^\s*(\d+)\s+(\d+)\s+(\S+)(?:\s+(.*))?$/.exec(line);
    if (m) out.push({ pid: Number(m[1]), ppid: Number(m[2]), state: m[3], args: m[4] ?? "" });
  }
  return out;
}

/** Every process but zombies (`ps`; throws when it cannot run). */
export async function listProcesses(ps: string = PS): Promise<ProcEntry[]> {
  const out = await new Deno.Command(ps, {
    args: ["-e", "-ww", "-o", "pid=,ppid=,stat=,args="],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  if (!out.success) throw new Error(`${ps} failed with status ${out.code}`);
  return parsePs(new TextDecoder().decode(out.stdout)).filter((p) => !p.state.startsWith("Z"));
}
