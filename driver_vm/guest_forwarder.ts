/**
 * The guests' way to the gateway, with a connection cap per VM.
 *
 * Each VM's qemu forwards every guest connection to the gateway alias
 * (`guestfwd=tcp:10.0.2.100:8080-cmd:socat - UNIX-CONNECT:<socket>`): qemu
 * runs one `socat` per guest connection, which connects to this VM's Unix
 * socket, served here. The driver carries each connection to the gateway
 * over TCP and closes any connection beyond `maxConnections` at once, so a
 * guest that opens connections in a loop holds at most that many sockets
 * and `socat` processes (each refused one exits as soon as it started).
 *
 * Why not a qemu chardev (`guestfwd=…-chardev:ID`, no process at all): a
 * chardev is one byte stream for the VM's whole life. Tried here (qemu 7.2):
 * two guest connections in sequence, and two at once, all arrived on the
 * one chardev connection with nothing marking where one ends; closing the
 * chardev connection did not end the guest's connection; qemu reconnected
 * the chardev a second later. A supervisor that reconnects (after a gateway
 * restart, or a dropped connection) would splice a new HTTP/2 connection
 * into the old one. `cmd:` is the only guestfwd form with a connection per
 * guest connection, so the cap lives behind it.
 *
 * Why the rename: Deno grants a Unix socket by its exact path, and sandbox
 * ids are not known at start. Each VM's socket is bound at the one granted
 * path ({@link forwarderBindPath}) and then renamed into
 * `<state-dir>/fwd/<n>.sock` (renaming needs only write access to the state
 * dir); bindings are serialised so two VMs never race for the bind path.
 *
 * @module
 */
import net from "node:net";
import { errorMessage, type Logger } from "../core/log.ts";

/** Default cap on a VM's open connections to the gateway (its supervisor needs one). */
export const DEFAULT_MAX_GUEST_CONNECTIONS = 8;

/** The one path where forwarder sockets are bound (the driver's grant). */
export function forwarderBindPath(stateDir: string): string {
  return `${stateDir}/guest-fwd.sock`;
}

/** Where the per-VM forwarder sockets live. */
export function forwarderDir(stateDir: string): string {
  return `${stateDir}/fwd`;
}

/** Counters of one VM's forwarder. */
export interface ForwarderStats {
  /** Guest connections open now. */
  open: number;
  /** Guest connections accepted so far. */
  accepted: number;
  /** Guest connections closed at once because `maxConnections` were open. */
  refused: number;
}

/** One VM's forwarder socket. */
export interface GuestForwarder {
  /** The Unix socket qemu's forwarder connects to. */
  readonly path: string;
  readonly stats: ForwarderStats;
  /** Stops listening, closes every connection, removes the socket. */
  close(): Promise<void>;
}

/** Opens one forwarder per VM (tests inject fakes). */
export interface ForwarderFactory {
  open(sandboxId: string): Promise<GuestForwarder>;
}

/** Options of {@link GuestForwarders}. */
export interface GuestForwardersOptions {
  stateDir: string;
  /** The gateway as the host reaches it. */
  gateway: { host: string; port: number };
  /** Open connections per VM at most. */
  maxConnections: number;
  log: Logger;
  /**
   * When qemu (so its socat) runs as another user: the sockets are given to
   * it (mode 0600) and `fwd/` is shared with its group (mode 0710). The
   * state dir must let that group through as well.
   */
  owner?: { uid: number; gid: number };
}

/** The real {@link ForwarderFactory} (see the module docs). */
export class GuestForwarders implements ForwarderFactory {
  readonly #o: GuestForwardersOptions;
  #queue: Promise<unknown> = Promise.resolve();
  #next = 0;

  /** Creates the factory; nothing listens until {@link open}. */
  constructor(options: GuestForwardersOptions) {
    this.#o = options;
  }

  /** Binds a new forwarder socket for `sandboxId`. */
  open(sandboxId: string): Promise<GuestForwarder> {
    const run = this.#queue.then(() => this.#open(sandboxId));
    this.#queue = run.catch(() => {});
    return run;
  }

  async #open(sandboxId: string): Promise<GuestForwarder> {
    const o = this.#o;
    const dir = forwarderDir(o.stateDir);
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    if (o.owner) {
      await Deno.chown(dir, null, o.owner.gid);
      await Deno.chmod(dir, 0o710);
    }
    const path = `${dir}/${this.#next++}.sock`;
    const bind = forwarderBindPath(o.stateDir);
    await removeIfPresent(bind);
    await removeIfPresent(path);
    const log = o.log.with({ sandbox_id: sandboxId });
    const stats: ForwarderStats = { open: 0, accepted: 0, refused: 0 };
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true }, (guest) => {
      guest.on("error", () => {});
      if (stats.open >= o.maxConnections) {
        stats.refused++;
        if (stats.refused === 1 || stats.refused % 100 === 0) {
          log.warn("guest connection limit reached; closing new connections", {
            max: o.maxConnections,
            refused: stats.refused,
          });
        }
        guest.destroy();
        return;
      }
      stats.open++;
      stats.accepted++;
      const upstream = net.connect({
        host: o.gateway.host,
        port: o.gateway.port,
        allowHalfOpen: true,
      });
      sockets.add(guest);
      sockets.add(upstream);
      let counted = true;
      const done = () => {
        if (counted) stats.open--;
        counted = false;
        guest.destroy();
        upstream.destroy();
        sockets.delete(guest);
        sockets.delete(upstream);
      };
      upstream.on("error", (err: Error) => {
        log.debug("cannot reach the gateway for a guest connection", {
          gateway: `${o.gateway.host}:${o.gateway.port}`,
          error: errorMessage(err),
        });
        done();
      });
      guest.on("close", done);
      upstream.on("close", done);
      guest.pipe(upstream);
      upstream.pipe(guest);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(bind, () => {
        server.removeListener("error", reject);
        resolve();
      });
    });
    server.on("error", (err) => log.error("forwarder error", { error: errorMessage(err) }));
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
      stats,
      close: () => {
        closing ??= (async () => {
          const closed = new Promise<void>((r) => server.close(() => r()));
          for (const s of sockets) s.destroy();
          sockets.clear();
          await closed;
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
