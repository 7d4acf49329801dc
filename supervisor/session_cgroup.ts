/**
 * One cgroup v2 per SSH connection, so that a connection's processes end
 * with it — PTY or not, backgrounded, `setsid`'d or double-forked.
 *
 * Why a cgroup: OpenSSH calls `setsid()` for every session (`do_exec_pty`
 * and `do_exec_no_pty` alike), so process groups and sessions say nothing
 * about which connection a process belongs to, and a daemonised process is
 * reparented to PID 1. A cgroup is inherited by every descendant and only
 * root can move a process out of it (the directory is root's). Killing is
 * `cgroup.kill` (Linux 5.14+): one write, every member gets SIGKILL, no pid
 * races and no `Deno.kill` (which would need an unrestricted `--allow-run`).
 *
 * Layout: the supervisor owns one cgroup directory (`--session-cgroup`,
 * default `/run/openshell-sessions`: the guest init creates the cgroup
 * `/sys/fs/cgroup/openshell` and bind-mounts it there, because Deno refuses
 * every path under `/sys` without `--allow-all`); each connection gets a
 * child `s<N>-<sshd pid>`. The sshd is moved into it right after it starts
 * and before a single byte of the client reaches it, so nothing it runs for
 * the client starts outside.
 *
 * When the supervisor starts it kills and removes every child left in the
 * directory: the sessions of a predecessor that was SIGKILLed (whose sshd
 * processes exited with their pipes, leaving their sessions behind).
 *
 * @module
 */
import { errorMessage } from "../core/log.ts";

/** Why containment is unavailable (one line), or the live controller. */
export type OpenResult =
  | { ok: true; cgroups: SessionCgroups }
  | { ok: false; reason: string };

/** One connection's cgroup. */
export interface SessionGroup {
  /** Its directory. */
  readonly path: string;
  /** Kills every process in it, waits until it is empty, removes it. Idempotent. */
  end(): Promise<void>;
}

/** Options of {@link SessionCgroups.open}. */
export interface SessionCgroupOptions {
  /** How long `end()` waits for the members to die; default 5000 ms. */
  killTimeoutMs?: number;
  /** Pause between emptiness checks; default 10 ms. */
  pollMs?: number;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/** Writes `text` to a cgroup control file (no create, no truncate: kernfs files). */
async function writeControl(path: string, text: string): Promise<void> {
  const file = await Deno.open(path, { write: true });
  try {
    await file.write(new TextEncoder().encode(text));
  } finally {
    file.close();
  }
}

async function populated(path: string): Promise<boolean> {
  try {
    const events = await Deno.readTextFile(`${path}/cgroup.events`);
    return !/^populated 0$/m.test(events);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return false;
    throw err;
  }
}

/**
 * Kills everything in the cgroup at `path` (and below), waits until it is
 * empty (at most `timeoutMs`), removes it. A missing `path` is fine.
 */
export async function killAndRemove(
  path: string,
  timeoutMs = 5000,
  pollMs = 10,
): Promise<void> {
  if (!(await exists(path))) return;
  await writeControl(`${path}/cgroup.kill`, "1").catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
  const deadline = Date.now() + timeoutMs;
  while (await populated(path)) {
    if (Date.now() > deadline) {
      throw new Error(`processes in ${path} survived cgroup.kill for ${timeoutMs} ms`);
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
  // A guest root may have made sub-cgroups; they are empty now.
  for await (const e of Deno.readDir(path)) {
    if (e.isDirectory) await killAndRemove(`${path}/${e.name}`, timeoutMs, pollMs);
  }
  await Deno.remove(path).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

/** The supervisor's session cgroups (see the module docs). */
export class SessionCgroups {
  readonly #dir: string;
  readonly #timeoutMs: number;
  readonly #pollMs: number;
  readonly #live = new Map<string, SessionGroup>();
  #next = 0;

  private constructor(dir: string, options: SessionCgroupOptions) {
    this.#dir = dir;
    this.#timeoutMs = options.killTimeoutMs ?? 5000;
    this.#pollMs = options.pollMs ?? 10;
  }

  /**
   * Takes `dir` (created when missing) as this supervisor's own: checks it
   * is a cgroup v2 directory whose children support `cgroup.kill`, then
   * kills and removes every child a predecessor left. Resolves with the
   * reason instead when containment is not possible here.
   */
  static async open(dir: string, options: SessionCgroupOptions = {}): Promise<OpenResult> {
    let created = false;
    try {
      await Deno.mkdir(dir);
      created = true;
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        return { ok: false, reason: `${dir} cannot be created: its parent is missing` };
      }
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        return { ok: false, reason: `${dir} cannot be created: ${errorMessage(err)}` };
      }
    }
    try {
      if (!(await exists(`${dir}/cgroup.procs`))) {
        if (created) await Deno.remove(dir).catch(() => {});
        return { ok: false, reason: `${dir} is not in a cgroup v2 hierarchy` };
      }
      const cgroups = new SessionCgroups(dir, options);
      const stale: string[] = [];
      for await (const e of Deno.readDir(dir)) if (e.isDirectory) stale.push(e.name);
      for (const name of stale) {
        await killAndRemove(`${dir}/${name}`, cgroups.#timeoutMs, cgroups.#pollMs);
      }
      // A child must offer cgroup.kill (Linux 5.14+): try one.
      const probe = `${dir}/probe-${crypto.randomUUID().slice(0, 8)}`;
      await Deno.mkdir(probe);
      const canKill = await exists(`${probe}/cgroup.kill`);
      await Deno.remove(probe);
      if (!canKill) return { ok: false, reason: "the kernel has no cgroup.kill (Linux < 5.14)" };
      return { ok: true, cgroups };
    } catch (err) {
      return { ok: false, reason: `${dir}: ${errorMessage(err)}` };
    }
  }

  /** The directory this supervisor owns. */
  get dir(): string {
    return this.#dir;
  }

  /** Sessions not yet ended. */
  get active(): number {
    return this.#live.size;
  }

  /**
   * Creates a cgroup for a new connection and moves `pid` (its freshly
   * started sshd) into it. Throws when either step fails; the caller must
   * then not serve the connection. A `pid` that already exited is fine.
   */
  async attach(pid: number): Promise<SessionGroup> {
    const path = `${this.#dir}/s${++this.#next}-${pid}`;
    await Deno.mkdir(path);
    let ending: Promise<void> | undefined;
    const group: SessionGroup = {
      path,
      end: () => {
        ending ??= killAndRemove(path, this.#timeoutMs, this.#pollMs)
          .finally(() => this.#live.delete(path));
        return ending;
      },
    };
    this.#live.set(path, group);
    try {
      await writeControl(`${path}/cgroup.procs`, String(pid));
    } catch (err) {
      // ESRCH: sshd is gone already, so it started nothing: the group stays empty.
      if (!/ESRCH|No such process|os error 3\b/.test(errorMessage(err))) {
        await group.end().catch(() => {});
        throw new Error(`cannot move sshd ${pid} into ${path}: ${errorMessage(err)}`);
      }
    }
    return group;
  }

  /** Ends every live session (the supervisor is stopping). */
  async killAll(): Promise<void> {
    const results = await Promise.allSettled([...this.#live.values()].map((g) => g.end()));
    const failed = results.find((r) => r.status === "rejected") as
      | PromiseRejectedResult
      | undefined;
    if (failed) throw failed.reason;
  }
}
