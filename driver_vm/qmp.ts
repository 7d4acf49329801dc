/**
 * Each VM's QEMU Machine Protocol (QMP) channel: how the driver asks a guest
 * to shut down cleanly (`sandbox stop`, driver shutdown).
 *
 * qemu is the client: its command line carries `-chardev socket,path=P`
 * (client mode) and `-mon chardev=…,mode=control`, so it connects to a
 * socket this driver listens on when it starts. The driver accepts exactly
 * one connection per VM (qemu's, made before the guest runs), then stops
 * listening and removes the socket, so nothing else can reach the monitor
 * later. Why not qemu as the server: Deno grants a Unix socket connection by
 * its exact path, and sandbox ids are not known when the driver starts; a
 * listener can be bound at one granted path ({@link qmpBindPath}) and renamed
 * into `<state-dir>/qmp/<n>.sock` (the same trick as the forwarder sockets,
 * see `guest_forwarder.ts`).
 *
 * Clean shutdown sends two requests, since guests differ in what they
 * handle: `send-key ctrl-alt-delete` (the kernel signals init, whose
 * `ctrlaltdel` action powers off — our guest init's) and `system_powerdown`
 * (the ACPI power button, for guests running an ACPI daemon). With
 * `-no-reboot`, either a power-off or a reboot ends qemu.
 *
 * What qemu sends is bounded: lines longer than {@link MAX_QMP_LINE_BYTES}
 * are dropped, events are counted and discarded, and at most
 * {@link MAX_PENDING_COMMANDS} commands wait for their answers.
 *
 * @module
 */
import net from "node:net";
import { errorMessage, type Logger } from "../core/log.ts";

/** Longest QMP line kept (greeting, answers); longer ones are dropped. */
export const MAX_QMP_LINE_BYTES = 64 * 1024;
/** Commands waiting for an answer at most. */
export const MAX_PENDING_COMMANDS = 16;
/** Default time a command waits for its answer. */
export const QMP_COMMAND_TIMEOUT_MS = 5_000;

/** The one path where QMP sockets are bound (the driver's grant). */
export function qmpBindPath(stateDir: string): string {
  return `${stateDir}/qmp-bind.sock`;
}

/** Where the per-VM QMP sockets live until qemu connected. */
export function qmpDir(stateDir: string): string {
  return `${stateDir}/qmp`;
}

/** One VM's monitor connection. */
export interface QmpChannel {
  /** The socket qemu connects to (`-chardev socket,path=…`). */
  readonly path: string;
  /**
   * Asks the guest to shut down (ctrl-alt-delete and the ACPI power
   * button); false when qemu is not connected or refused both.
   */
  powerdown(): Promise<boolean>;
  /** Stops listening, closes the connection, removes the socket. */
  close(): Promise<void>;
}

/** Opens one channel per VM (tests inject fakes). */
export interface QmpFactory {
  open(sandboxId: string): Promise<QmpChannel>;
}

/** Options of {@link QmpChannels}. */
export interface QmpChannelsOptions {
  stateDir: string;
  log: Logger;
  /** When qemu runs as another user: sockets are given to it, `qmp/` shared with its group. */
  owner?: { uid: number; gid: number };
  /** Answer timeout; default {@link QMP_COMMAND_TIMEOUT_MS}. */
  commandTimeoutMs?: number;
}

/** An error answer from qemu. */
export class QmpError extends Error {
  /** QMP's error class, e.g. `GenericError`. */
  readonly errorClass: string;
  /** Wraps `{class, desc}`. */
  constructor(errorClass: string, desc: string) {
    super(desc);
    this.errorClass = errorClass;
  }
}

interface Pending {
  resolve(value: unknown): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * Splits a byte stream into lines of at most `max` bytes; longer lines are
 * dropped whole (their bytes are not kept while skipping).
 */
export class BoundedLines {
  readonly #max: number;
  #parts: Uint8Array[] = [];
  #size = 0;
  #skipping = false;
  /** Lines dropped for length. */
  dropped = 0;

  /** Lines longer than `max` bytes are dropped. */
  constructor(max: number) {
    this.#max = max;
  }

  /** Feeds bytes; returns the complete lines (without `\n`). */
  push(chunk: Uint8Array): string[] {
    const out: string[] = [];
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const end = nl < 0 ? chunk.length : nl;
      const piece = chunk.subarray(start, end);
      if (!this.#skipping) {
        if (this.#size + piece.length > this.#max) {
          this.#skipping = true;
          this.#parts = [];
          this.#size = 0;
          this.dropped++;
        } else if (piece.length) {
          this.#parts.push(piece.slice());
          this.#size += piece.length;
        }
      }
      if (nl < 0) break;
      if (!this.#skipping) {
        const all = new Uint8Array(this.#size);
        let off = 0;
        for (const p of this.#parts) {
          all.set(p, off);
          off += p.length;
        }
        out.push(new TextDecoder().decode(all));
      }
      this.#parts = [];
      this.#size = 0;
      this.#skipping = false;
      start = nl + 1;
    }
    return out;
  }
}

/**
 * A QMP client over an accepted connection: waits for the greeting,
 * negotiates capabilities, then runs commands one id at a time.
 */
export class QmpConnection {
  readonly #socket: net.Socket;
  readonly #timeoutMs: number;
  readonly #pending = new Map<string, Pending>();
  readonly #lines = new BoundedLines(MAX_QMP_LINE_BYTES);
  #next = 0;
  #closed = false;
  #ready: Promise<void>;
  /** Events qemu sent (discarded). */
  events = 0;

  /** Starts reading; {@link command} waits for the greeting first. */
  constructor(socket: net.Socket, timeoutMs = QMP_COMMAND_TIMEOUT_MS) {
    this.#socket = socket;
    this.#timeoutMs = timeoutMs;
    let greeted!: () => void;
    let failed!: (err: Error) => void;
    const greeting = new Promise<void>((res, rej) => {
      greeted = res;
      failed = rej;
    });
    greeting.catch(() => {});
    let sawGreeting = false;
    socket.on("data", (chunk: Uint8Array) => {
      for (const line of this.#lines.push(chunk)) {
        let msg: Record<string, unknown>;
        try {
          msg = JSON.parse(line);
        } catch {
          continue;
        }
        if (!msg || typeof msg !== "object") continue;
        if ("QMP" in msg && !sawGreeting) {
          sawGreeting = true;
          greeted();
        } else if ("event" in msg) {
          this.events++;
        } else if ("id" in msg && typeof msg.id === "string") {
          const p = this.#pending.get(msg.id);
          if (!p) continue;
          this.#pending.delete(msg.id);
          clearTimeout(p.timer);
          if ("error" in msg) {
            const e = (msg.error ?? {}) as { class?: string; desc?: string };
            p.reject(new QmpError(String(e.class ?? "Error"), String(e.desc ?? "error")));
          } else p.resolve(msg.return);
        }
      }
    });
    const end = () => {
      this.#closed = true;
      failed(new Error("qemu closed its monitor connection"));
      for (const [id, p] of this.#pending) {
        clearTimeout(p.timer);
        this.#pending.delete(id);
        p.reject(new Error("qemu closed its monitor connection"));
      }
    };
    socket.on("close", end);
    socket.on("error", () => {});
    this.#ready = greeting.then(() => this.#send("qmp_capabilities").then(() => {}));
    this.#ready.catch(() => {});
  }

  #send(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.#closed) return Promise.reject(new Error("qemu closed its monitor connection"));
    if (this.#pending.size >= MAX_PENDING_COMMANDS) {
      return Promise.reject(new Error("too many QMP commands in flight"));
    }
    const id = `c${this.#next++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`qemu did not answer ${execute} within ${this.#timeoutMs} ms`));
      }, this.#timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#socket.write(
        JSON.stringify({ execute, ...(args ? { arguments: args } : {}), id }) + "\n",
      );
    });
  }

  /** Runs one command after the greeting and capability negotiation. */
  async command(execute: string, args?: Record<string, unknown>): Promise<unknown> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, rej) => {
      timer = setTimeout(
        () => rej(new Error(`qemu sent no QMP greeting within ${this.#timeoutMs} ms`)),
        this.#timeoutMs,
      );
    });
    try {
      await Promise.race([this.#ready, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return await this.#send(execute, args);
  }

  /** Closes the connection. */
  close(): void {
    this.#socket.destroy();
  }
}

/** The commands that ask a guest to shut down, in the order sent. */
export const POWERDOWN_COMMANDS: readonly { execute: string; arguments?: object }[] = [
  {
    execute: "send-key",
    arguments: {
      keys: [
        { type: "qcode", data: "ctrl" },
        { type: "qcode", data: "alt" },
        { type: "qcode", data: "delete" },
      ],
    },
  },
  { execute: "system_powerdown" },
];

/** The real {@link QmpFactory} (see the module docs). */
export class QmpChannels implements QmpFactory {
  readonly #o: QmpChannelsOptions;
  #queue: Promise<unknown> = Promise.resolve();
  #next = 0;

  /** Creates the factory; nothing listens until {@link open}. */
  constructor(options: QmpChannelsOptions) {
    this.#o = options;
  }

  /** Binds a new QMP socket for `sandboxId` (bindings are serialised). */
  open(sandboxId: string): Promise<QmpChannel> {
    const run = this.#queue.then(() => this.#open(sandboxId));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #open(sandboxId: string): Promise<QmpChannel> {
    const o = this.#o;
    const dir = qmpDir(o.stateDir);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    if (o.owner) {
      await Deno.chown(dir, null, o.owner.gid);
      await Deno.chmod(dir, 0o710);
    }
    const path = `${dir}/${this.#next++}.sock`;
    const bind = qmpBindPath(o.stateDir);
    await removeIfPresent(bind);
    await removeIfPresent(path);
    const log = o.log.with({ sandbox_id: sandboxId });
    let connection: QmpConnection | undefined;
    let listening = true;
    let connected!: () => void;
    const whenConnected = new Promise<void>((r) => connected = r);
    const server = net.createServer((socket) => {
      if (connection || !listening) {
        socket.destroy();
        return;
      }
      connection = new QmpConnection(socket, o.commandTimeoutMs);
      connected();
      // One connection (qemu's): nothing else may reach this monitor.
      listening = false;
      server.close();
      removeIfPresent(path).catch(() => {});
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(bind, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => log.warn("QMP socket error", { error: errorMessage(err) }));
    try {
      await Deno.chmod(bind, 0o600);
      if (o.owner) await Deno.chown(bind, o.owner.uid, o.owner.gid);
      await Deno.rename(bind, path);
    } catch (err) {
      server.close();
      await removeIfPresent(bind);
      throw err;
    }
    let closing: Promise<void> | undefined;
    return {
      path,
      powerdown: async () => {
        // qemu connects while it starts up: a stop right after a start waits for that.
        if (!connection && listening) {
          let timer: ReturnType<typeof setTimeout> | undefined;
          await Promise.race([
            whenConnected,
            new Promise<void>((r) =>
              timer = setTimeout(r, o.commandTimeoutMs ?? QMP_COMMAND_TIMEOUT_MS)
            ),
          ]);
          clearTimeout(timer);
        }
        if (!connection) return false;
        let ok = false;
        for (const c of POWERDOWN_COMMANDS) {
          try {
            await connection.command(c.execute, c.arguments as Record<string, unknown>);
            ok = true;
          } catch (err) {
            log.debug(`QMP ${c.execute} failed`, { error: errorMessage(err) });
          }
        }
        return ok;
      },
      close: () => {
        closing ??= (async () => {
          if (listening) {
            listening = false;
            connected();
            await new Promise<void>((r) => server.close(() => r()));
          }
          connection?.close();
          await removeIfPresent(path);
        })();
        return closing;
      },
    };
  }
}

async function removeIfPresent(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}
