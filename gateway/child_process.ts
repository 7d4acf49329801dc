/**
 * The gateway's helper processes (the compute driver, the egress proxy):
 * spawning one with its output passed into the gateway log, waiting until
 * it answers on its socket, and stopping it without leaving it behind.
 *
 * @module
 */
import { sleep } from "../core/backoff.ts";
import { type Logger, parseLogLine } from "../core/log.ts";

/** Options of {@link spawnChild}. */
export interface SpawnChildOptions {
  /** The executable. */
  binary: string;
  /** Arguments after the executable. */
  args: string[];
  /** What it is, for messages ("compute driver", "egress proxy"). */
  what: string;
  /** Log component of its lines that are not log lines of its own. */
  component: string;
  log: Logger;
}

/** A running helper process. */
export interface ChildHandle {
  pid: number;
  /** Resolves with the exit code (after its output is drained) when it ends. */
  exited: Promise<number>;
  /** Whether it has ended. */
  readonly gone: boolean;
  /**
   * SIGTERM, then SIGKILL after `graceMs` (default 10 s); resolves with the
   * exit code once it is gone.
   */
  stop(graceMs?: number): Promise<number>;
  /** SIGKILL; resolves with the exit code once it is gone. */
  kill(): Promise<number>;
}

async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const decoder = new TextDecoder();
  let rest = "";
  try {
    for await (const chunk of stream) {
      rest += decoder.decode(chunk, { stream: true });
      let i;
      while ((i = rest.indexOf("\n")) >= 0) {
        onLine(rest.slice(0, i));
        rest = rest.slice(i + 1);
      }
    }
  } catch {
    // the child went away
  }
  if (rest) onLine(rest);
}

/**
 * Writes one line of a helper's output to the gateway log once: a line the
 * helper's logger wrote keeps its level, target and message under the
 * gateway's timestamp (no second timestamp and level in front of its own);
 * any other text becomes an `info` line of `component`.
 */
export function passChildLine(log: Logger, line: string, component: string): void {
  const parsed = parseLogLine(line);
  if (!parsed) {
    if (line.trim()) log.with({ component }).info(line);
    return;
  }
  log.withTarget(parsed.target || component).log(parsed.level, parsed.message, parsed.fields);
}

/** Starts `binary`; its stdout and stderr go to the gateway log line by line. */
export function spawnChild(options: SpawnChildOptions): ChildHandle {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(options.binary, {
      args: options.args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new Error(`cannot start ${options.what} ${options.binary}: ${(err as Error).message}`);
  }
  const pass = (l: string) => passChildLine(options.log, l, options.component);
  const output = Promise.all([pumpLines(child.stdout, pass), pumpLines(child.stderr, pass)]);
  let gone = false;
  const exited = child.status.then(async (s) => {
    await output;
    gone = true;
    return s.code;
  });
  const signal = (sig: Deno.Signal) => {
    try {
      child.kill(sig);
    } catch { /* gone */ }
  };
  return {
    pid: child.pid,
    exited,
    get gone() {
      return gone;
    },
    async stop(graceMs = 10_000) {
      if (gone) return await exited;
      signal("SIGTERM");
      const timer = setTimeout(() => signal("SIGKILL"), graceMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
    async kill() {
      if (!gone) signal("SIGKILL");
      return await exited;
    },
  };
}

/** Options of {@link waitUntilAnswering}. */
export interface WaitAnsweringOptions {
  /** What it is, for messages. */
  what: string;
  /** The call that must succeed, e.g. `GetCapabilities`. */
  probeName: string;
  /** How long to keep trying; default 30 s. */
  timeoutMs?: number;
  /** Aborting gives up (the child is killed). */
  signal?: AbortSignal;
}

/**
 * Calls `probe` until it succeeds. A child that exits first, does not
 * answer in time, or is cancelled through the signal is an error, and is
 * killed (so nothing is left behind).
 */
export async function waitUntilAnswering<T>(
  child: ChildHandle,
  probe: () => Promise<T>,
  options: WaitAnsweringOptions,
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  let lastError = "";
  while (true) {
    if (child.gone) {
      throw new Error(
        `${options.what} exited with status ${await child.exited} before it was ready`,
      );
    }
    if (Date.now() > deadline || options.signal?.aborted) {
      await child.kill();
      if (options.signal?.aborted) throw new Error("start cancelled");
      throw new Error(`${options.what} did not answer ${options.probeName} in time: ${lastError}`);
    }
    try {
      return await probe();
    } catch (err) {
      lastError = (err as Error).message;
      await sleep(100);
    }
  }
}

/** Removes a stale socket file (missing is fine). */
export async function removeSocket(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
