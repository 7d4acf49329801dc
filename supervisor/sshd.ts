/**
 * OpenSSH on a Unix socket: the socket directory (owned, 0700), the socket
 * (0600), the private sshd files, and one `sshd -i` per accepted connection.
 *
 * The supervisor never runs user commands: each connection gets its own
 * inetd-mode sshd with a cleared environment, and the supervisor only pumps
 * bytes between the connection and sshd's stdin/stdout (half-close included).
 * At most {@link MAX_SSHD_PROCESSES} run at once; a connection beyond that
 * is closed at once without starting sshd.
 *
 * Deno detail: a connection's web streams close the whole socket when one
 * side ends, so the pumps use `read`/`write`/`closeWrite` on the connection.
 *
 * @module
 */
import { writeAll } from "../core/io.ts";
import { errorMessage, type Logger, type LogLevel } from "../core/log.ts";
import { publicKeyOfPrivate } from "../core/ssh_keys.ts";
import { fingerprintOfPublicKey } from "../core/ssh_keys.ts";
import type { SessionCgroups, SessionGroup } from "./session_cgroup.ts";
import { renderSshdConfig } from "./sshd_config.ts";

/** Host key file name inside the socket directory. */
export const HOST_KEY_FILE = "ssh_host_key";
/** sshd config file name inside the socket directory. */
export const SSHD_CONFIG_FILE = "sshd_config";
/** Most `sshd -i` processes one supervisor runs at once (as many as relays). */
export const MAX_SSHD_PROCESSES = 64;

/** A problem with the socket directory, socket or sshd files; one-line message. */
export class SshdSetupError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "SshdSetupError";
  }
}

function modeOf(info: Deno.FileInfo): number {
  return (info.mode ?? 0) & 0o7777;
}

async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
}

/** Our effective uid, learnt from a file created in `dir` (no `--allow-sys` needed). */
async function ownUid(dir: string): Promise<number> {
  const probe = await Deno.makeTempFile({ dir, prefix: ".uid-" });
  try {
    return (await Deno.lstat(probe)).uid ?? -1;
  } finally {
    await Deno.remove(probe).catch(() => {});
  }
}

/**
 * Creates the socket directory (mode 0700) or checks an existing one: it
 * must be a real directory (not a symlink) owned by this process's user;
 * its mode is then set to 0700. Throws {@link SshdSetupError} otherwise.
 */
export async function prepareSocketDir(dir: string): Promise<void> {
  let info = await lstatOrNull(dir);
  if (info === null) {
    try {
      await Deno.mkdir(dir, { mode: 0o700 });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new SshdSetupError(`cannot create socket directory ${dir}: its parent is missing`);
      }
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        throw new SshdSetupError(`cannot create socket directory ${dir}: ${errorMessage(err)}`);
      }
    }
    info = await Deno.lstat(dir);
  }
  if (info.isSymlink) throw new SshdSetupError(`socket directory ${dir} is a symlink; refusing`);
  if (!info.isDirectory) {
    throw new SshdSetupError(`socket directory ${dir} exists and is not a directory`);
  }
  const uid = await ownUid(dir);
  if (info.uid !== uid) {
    throw new SshdSetupError(
      `socket directory ${dir} is owned by uid ${info.uid}, not by this process (uid ${uid}); ` +
        "refusing",
    );
  }
  if (modeOf(info) !== 0o700) await Deno.chmod(dir, 0o700);
}

/**
 * Removes a stale socket at `path`. Refuses anything that is not a socket,
 * and a socket another process still accepts connections on.
 */
export async function clearStaleSocket(path: string): Promise<void> {
  const info = await lstatOrNull(path);
  if (info === null) return;
  if (!info.isSocket) {
    throw new SshdSetupError(`${path} exists and is not a socket; refusing to replace it`);
  }
  let live = false;
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    live = true;
  } catch {
    // nobody listening: stale
  }
  if (live) throw new SshdSetupError(`${path} is in use by a running process`);
  await Deno.remove(path);
}

/** Writes `data` to `path` with mode 0600 atomically (temp file + rename). */
async function writePrivateFile(path: string, data: string): Promise<void> {
  const tmp = `${path}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.writeTextFile(tmp, data, { mode: 0o600, createNew: true });
    await Deno.chmod(tmp, 0o600);
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
}

/** The files sshd is started with. */
export interface SshdFiles {
  /** The config file (`sshd -f`). */
  configPath: string;
  /** The host key file it names (0600). */
  hostKeyPath: string;
  /** `SHA256:` fingerprint of the host key. */
  fingerprint: string;
}

/** Options of {@link writeSshdFiles}. */
export interface WriteSshdFilesOptions {
  /** The host private key, OpenSSH format. */
  hostKey: string;
  /** The supervisor's log level (mapped to sshd's). */
  logLevel?: LogLevel;
  /** The sandbox's environment for every session. */
  environment?: Readonly<Record<string, string>>;
}

/**
 * Validates the host key and writes it and the sshd config into `dir`
 * (both 0600). Throws {@link SshdSetupError} for a key that is not an
 * unencrypted OpenSSH private key.
 */
export async function writeSshdFiles(
  dir: string,
  options: WriteSshdFilesOptions,
): Promise<SshdFiles> {
  let publicKey: string;
  try {
    publicKey = publicKeyOfPrivate(options.hostKey);
  } catch (err) {
    throw new SshdSetupError(`host key is not an OpenSSH private key: ${errorMessage(err)}`);
  }
  const hostKeyPath = `${dir}/${HOST_KEY_FILE}`;
  const configPath = `${dir}/${SSHD_CONFIG_FILE}`;
  const key = options.hostKey.endsWith("\n") ? options.hostKey : options.hostKey + "\n";
  await writePrivateFile(hostKeyPath, key);
  await writePrivateFile(
    configPath,
    renderSshdConfig({
      hostKeyPath,
      logLevel: options.logLevel,
      environment: options.environment,
    }),
  );
  return { configPath, hostKeyPath, fingerprint: fingerprintOfPublicKey(publicKey) };
}

/**
 * Runs `sshd -t` on the config: fails fast with sshd's own words when the
 * binary, the config, the host key or the privilege-separation directory is
 * wrong.
 */
export async function checkSshd(sshd: string, configPath: string): Promise<void> {
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(sshd, {
      args: ["-t", "-f", configPath],
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) throw new SshdSetupError(`sshd not found: ${sshd}`);
    throw new SshdSetupError(`cannot run ${sshd}: ${errorMessage(err)}`);
  }
  if (!out.success) {
    const text = new TextDecoder().decode(out.stderr).trim().split("\n")
      .filter((l) => l && !l.startsWith("@")).join("; ");
    throw new SshdSetupError(
      `${sshd} rejects its configuration (exit ${out.code}): ${text || "no message"}`,
    );
  }
}

/** Options of {@link SshdServer.listen}. */
export interface SshdServerOptions {
  /** Where to listen (its directory must already be prepared). */
  socketPath: string;
  /** The sshd binary. */
  sshd: string;
  /** Its config file. */
  configPath: string;
  /** Log sink; sshd's own stderr lines are logged with `sshd=<pid>`. */
  logger: Logger;
  /** Most sshd processes at once; default {@link MAX_SSHD_PROCESSES}. */
  maxProcesses?: number;
  /**
   * One cgroup per connection (see `session_cgroup.ts`): every process a
   * connection starts is killed when it ends or the server closes. Absent:
   * processes a session leaves running outlive it.
   */
  sessions?: SessionCgroups;
}

const READ_CHUNK = 64 * 1024;

/** Writes sshd's stderr to the log, a line at a time, at `level`. */
async function logSshdStderr(
  child: Deno.ChildProcess,
  log: Logger,
  level: LogLevel,
): Promise<void> {
  try {
    let rest = "";
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + text).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) if (line.trim()) log.log(level, `sshd: ${line.trim()}`);
    }
    if (rest.trim()) log.log(level, `sshd: ${rest.trim()}`);
  } catch {
    // sshd's stderr broke off; nothing more to log
  }
}

/** Copies the client's bytes to sshd's stdin, then closes it (aborts it on failure). */
async function pumpToSshd(conn: Deno.UnixConn, child: Deno.ChildProcess): Promise<void> {
  const writer = child.stdin.getWriter();
  try {
    while (true) {
      const buf = new Uint8Array(READ_CHUNK);
      const n = await conn.read(buf);
      if (n === null) break;
      await writer.write(buf.subarray(0, n));
    }
    await writer.close();
  } catch {
    await writer.abort().catch(() => {});
  }
}

/** Copies sshd's stdout to the client, then half-closes the connection. */
async function pumpFromSshd(child: Deno.ChildProcess, conn: Deno.UnixConn): Promise<void> {
  try {
    for await (const chunk of child.stdout) await writeAll(conn, chunk);
    await conn.closeWrite();
  } catch {
    // the client went away; `pumpToSshd` sees it too and ends sshd's stdin
  }
}

/** Accepts connections on the Unix socket and serves each with a fresh `sshd -i`. */
export class SshdServer {
  readonly #listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
  readonly #options: SshdServerOptions;
  readonly #children = new Set<Deno.ChildProcess>();
  readonly #conns = new Set<Deno.UnixConn>();
  readonly #served = new Set<Promise<void>>();
  readonly #acceptLoop: Promise<void>;
  #closed = false;
  #accepted = 0;
  #refused = 0;

  private constructor(listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>, o: SshdServerOptions) {
    this.#listener = listener;
    this.#options = o;
    this.#acceptLoop = this.#accept();
  }

  /** Binds the socket (mode 0600) and starts accepting. */
  static async listen(options: SshdServerOptions): Promise<SshdServer> {
    let listener: Deno.Listener<Deno.UnixConn, Deno.UnixAddr>;
    try {
      listener = Deno.listen({ transport: "unix", path: options.socketPath });
    } catch (err) {
      throw new SshdSetupError(`cannot listen on ${options.socketPath}: ${errorMessage(err)}`);
    }
    try {
      await Deno.chmod(options.socketPath, 0o600);
    } catch (err) {
      listener.close();
      throw new SshdSetupError(
        `cannot set mode 0600 on ${options.socketPath}: ${errorMessage(err)}`,
      );
    }
    return new SshdServer(listener, options);
  }

  /** Connections accepted so far. */
  get accepted(): number {
    return this.#accepted;
  }

  /** Connections being served now. */
  get active(): number {
    return this.#conns.size;
  }

  /** Connections closed unserved because {@link SshdServerOptions.maxProcesses} sshd ran. */
  get refused(): number {
    return this.#refused;
  }

  async #accept(): Promise<void> {
    while (!this.#closed) {
      let conn: Deno.UnixConn;
      try {
        conn = await this.#listener.accept();
      } catch (err) {
        if (this.#closed) return;
        this.#options.logger.warn("sshd socket accept failed", { error: errorMessage(err) });
        continue;
      }
      this.#accepted++;
      const max = this.#options.maxProcesses ?? MAX_SSHD_PROCESSES;
      if (this.#conns.size >= max) {
        if (this.#refused++ % 100 === 0) {
          this.#options.logger.warn("sshd connection refused: at capacity", {
            max_processes: max,
            refused: this.#refused,
          });
        }
        try {
          conn.close();
        } catch {
          // already closed
        }
        continue;
      }
      const served = this.#serve(conn).catch((err) => {
        this.#options.logger.warn("sshd connection failed", { error: errorMessage(err) });
      });
      this.#served.add(served);
      served.finally(() => this.#served.delete(served));
    }
  }

  /**
   * Serves one connection with its own `sshd -i`, contained in a session
   * group when there are session cgroups; when sshd exits, everything the
   * connection started ends and the connection closes.
   */
  async #serve(conn: Deno.UnixConn): Promise<void> {
    const logger = this.#options.logger;
    this.#conns.add(conn);
    const child = this.#spawnSshd(conn);
    this.#children.add(child);
    const log = logger.with({ sshd: child.pid });
    log.debug("sshd started for a connection");
    // Contain sshd before the client's first byte reaches it: it starts
    // nothing for the client until then, so nothing starts outside.
    const group = await this.#contain(child, log);
    if (group === null) {
      this.#children.delete(child);
      this.#conns.delete(conn);
      conn.close();
      return;
    }
    const stderrDone = logSshdStderr(child, log, logger.enabled("info") ? "info" : "warn");
    const up = pumpToSshd(conn, child);
    const down = pumpFromSshd(child, conn);

    // sshd exits once its client is gone (stdin EOF) or the session ends.
    const status = await child.status;
    // The connection is over: so is everything it started.
    await group?.end().catch((err) => {
      log.error("cannot end the connection's processes", { error: errorMessage(err) });
    });
    await down;
    // sshd is gone: nothing more can reach it; stop reading the connection.
    this.#conns.delete(conn);
    try {
      conn.close();
    } catch {
      // already closed
    }
    await up;
    await stderrDone;
    this.#children.delete(child);
    log.debug("sshd exited", { code: status.code, signal: status.signal ?? undefined });
  }

  /** Starts `sshd -i` for `conn` (which is closed, and forgotten, when that fails). */
  #spawnSshd(conn: Deno.UnixConn): Deno.ChildProcess {
    const { sshd, configPath } = this.#options;
    try {
      return new Deno.Command(sshd, {
        args: ["-i", "-e", "-f", configPath],
        clearEnv: true,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      this.#conns.delete(conn);
      conn.close();
      throw new Error(`cannot start ${sshd}: ${errorMessage(err)}`);
    }
  }

  /**
   * Puts `child` in a new session group: undefined without session cgroups,
   * null when it cannot be contained (then it is killed and reaped, and the
   * connection must be refused).
   */
  async #contain(child: Deno.ChildProcess, log: Logger): Promise<SessionGroup | undefined | null> {
    if (!this.#options.sessions) return undefined;
    try {
      return await this.#options.sessions.attach(child.pid);
    } catch (err) {
      log.error("cannot contain the connection's processes; refusing it", {
        error: errorMessage(err),
      });
      try {
        child.kill("SIGKILL");
      } catch {
        // already exited
      }
      await Promise.allSettled([child.stdout.cancel(), child.stderr.cancel(), child.status]);
      await child.stdin.close().catch(() => {});
      return null;
    }
  }

  /**
   * Stops accepting, ends every sshd and connection (with `sessions`: every
   * process they started), removes the socket file.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#listener.close();
    } catch {
      // already closed
    }
    await this.#acceptLoop;
    // Every connection's processes, sshd included, at once.
    await this.#options.sessions?.killAll().catch((err) => {
      this.#options.logger.error("cannot end every session's processes", {
        error: errorMessage(err),
      });
    });
    for (const child of this.#children) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already exited
      }
    }
    await Promise.allSettled([...this.#served]);
    await Deno.remove(this.#options.socketPath).catch(() => {});
  }
}
