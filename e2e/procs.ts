/**
 * Process helpers for the e2e: find processes by a string in their command
 * line (Linux `/proc`), check liveness, wait for conditions.
 *
 * @module
 */

/** A process whose command line matched. */
export interface ProcInfo {
  pid: number;
  /** argv joined with spaces. */
  cmdline: string;
}

/** Every process (but this one) whose command line contains `needle`. */
export async function findProcesses(needle: string): Promise<ProcInfo[]> {
  const found: ProcInfo[] = [];
  for await (const e of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    let raw: Uint8Array;
    try {
      raw = await Deno.readFile(`/proc/${pid}/cmdline`);
    } catch {
      continue; // gone
    }
    const cmdline = new TextDecoder().decode(raw).replaceAll("\0", " ").trim();
    if (cmdline.includes(needle)) found.push({ pid, cmdline });
  }
  return found;
}

/** Whether `pid` is alive (zombies count as gone). */
export async function alive(pid: number): Promise<boolean> {
  try {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Polls `check` every `intervalMs` until it returns a value or the deadline passes. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  options: { timeoutMs: number; intervalMs?: number },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  while (true) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((r) => setTimeout(r, options.intervalMs ?? 250));
  }
}

/** A free TCP port on 127.0.0.1 (bound and released). */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}
