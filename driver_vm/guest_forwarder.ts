/**
 * The guests' ways out — to the gateway, and with egress on to the egress
 * proxy — with a connection cap per VM and route.
 *
 * Each VM's qemu forwards every guest connection to an alias address and
 * port (`guestfwd=tcp:10.0.2.100:8080-cmd:socat - UNIX-CONNECT:<socket>`):
 * qemu runs one `socat` per guest connection, which connects to the VM's
 * Unix socket of that route, served here. A route ({@link GuestRoute})
 * says where the driver carries each connection: the gateway over TCP
 * ({@link gatewayRoute}), or the egress proxy's guest socket after a header
 * line naming the sandbox ({@link egressRoute}; the guest cannot forge it:
 * it is written before any guest byte). Any connection beyond the route's
 * `maxConnections` is closed at once, so a guest that opens connections in
 * a loop holds at most that many sockets and `socat` processes per route
 * (each refused one exits as soon as it started).
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
 * ids are not known at start. Each of a VM's sockets (one per route) is
 * bound at the one granted path ({@link forwarderBindPath}) and then
 * renamed into `<state-dir>/fwd/<n>.sock` (renaming needs only write access
 * to the state dir); bindings are serialised so no two race for the bind
 * path. The egress proxy's guest socket is one fixed path, granted as such.
 *
 * @module
 */
import net from "node:net";
import { errorMessage, type Logger } from "../core/log.ts";

/** Default cap on a VM's open connections to the gateway (its supervisor needs one). */
export const DEFAULT_MAX_GUEST_CONNECTIONS = 8;
/** Cap on a VM's open connections to the egress HTTP proxy. */
export const MAX_PROXY_CONNECTIONS = 64;
/** Cap on a VM's open DNS-over-TCP connections. */
export const MAX_DNS_CONNECTIONS = 8;
/** Longest header line the egress proxy accepts (bytes, with the newline). */
export const MAX_EGRESS_HEADER_BYTES = 256;

/** What an egress connection carries: HTTP proxy requests or DNS over TCP. */
export type EgressKind = "http" | "dns";

/**
 * The line the driver writes first on every egress connection:
 * `OPENSHELL-EGRESS/1 <sandbox_id> <http|dns>\n`. Throws for an id the
 * proxy would not parse (the driver only boots ids of `[A-Za-z0-9._-]`).
 */
export function egressHeader(sandboxId: string, kind: EgressKind): string {
  if (!/^[A-Za-z0-9._-]{1,128}$/.test(sandboxId)) {
    throw new Error(`invalid sandbox id for an egress header: ${JSON.stringify(sandboxId)}`);
  }
  return `OPENSHELL-EGRESS/1 ${sandboxId} ${kind}\n`;
}

/** Where one kind of guest connection goes. */
export interface GuestRoute {
  /** Short name (logs, {@link GuestForwarder.sockets}): `gateway`, `proxy`, `dns`. */
  name: string;
  /** Open connections per VM at most. */
  maxConnections: number;
  /** The upstream, for log lines. */
  target: string;
  /** Dials the upstream for one guest connection of `sandboxId` (and writes any header). */
  connect(sandboxId: string): net.Socket;
}

/** Guest connections to the gateway alias, carried to the gateway over TCP. */
export function gatewayRoute(
  gateway: { host: string; port: number },
  maxConnections: number = DEFAULT_MAX_GUEST_CONNECTIONS,
): GuestRoute {
  return {
    name: "gateway",
    maxConnections,
    target: `${gateway.host}:${gateway.port}`,
    connect: () => net.connect({ host: gateway.host, port: gateway.port, allowHalfOpen: true }),
  };
}

/**
 * Guest connections to the egress alias, carried to the egress proxy's
 * guest socket after {@link egressHeader}.
 */
export function egressRoute(
  socket: string,
  kind: EgressKind,
  maxConnections: number = kind === "http" ? MAX_PROXY_CONNECTIONS : MAX_DNS_CONNECTIONS,
): GuestRoute {
  return {
    name: kind === "http" ? "proxy" : "dns",
    maxConnections,
    target: `unix:${socket}`,
    connect: (sandboxId) => {
      const header = egressHeader(sandboxId, kind);
      const upstream = net.connect({ path: socket, allowHalfOpen: true });
      // Queued before the guest's bytes are piped in: always the first line.
      upstream.write(header);
      return upstream;
    },
  };
}

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

/** One route's socket of a VM. */
export interface ForwarderSocket {
  /** The Unix socket qemu's forwarder connects to. */
  readonly path: string;
  readonly stats: ForwarderStats;
}

/** One VM's forwarder sockets, one per route. */
export interface GuestForwarder {
  /** By route name (`gateway`, and `proxy`, `dns` with egress on). */
  readonly sockets: Readonly<Record<string, ForwarderSocket>>;
  /** Stops listening, closes every connection, removes the sockets. */
  close(): Promise<void>;
}

/** Opens the forwarder sockets of each VM (tests inject fakes). */
export interface ForwarderFactory {
  open(sandboxId: string): Promise<GuestForwarder>;
}

/** Options of {@link GuestForwarders}. */
export interface GuestForwardersOptions {
  stateDir: string;
  /** The routes every VM gets a socket for (names unique). */
  routes: readonly GuestRoute[];
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
    const names = options.routes.map((r) => r.name);
    if (new Set(names).size !== names.length) {
      throw new Error(`guest routes must have distinct names: ${names.join(", ")}`);
    }
    this.#o = options;
  }

  /** Binds a new socket per route for `sandboxId`. */
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
    const bound: (ForwarderSocket & { close(): Promise<void> })[] = [];
    const sockets: Record<string, ForwarderSocket> = {};
    try {
      for (const route of o.routes) {
        const b = await this.#bind(sandboxId, route, `${dir}/${this.#next++}.sock`);
        bound.push(b);
        sockets[route.name] = { path: b.path, stats: b.stats };
      }
    } catch (err) {
      for (const b of bound) await b.close().catch(() => {});
      throw err;
    }
    let closing: Promise<void> | undefined;
    return {
      sockets,
      close: () => {
        closing ??= Promise.all(bound.map((b) => b.close())).then(() => {});
        return closing;
      },
    };
  }

  /** One route's socket: bound at the granted path, renamed to `path`. */
  async #bind(
    sandboxId: string,
    route: GuestRoute,
    path: string,
  ): Promise<ForwarderSocket & { close(): Promise<void> }> {
    const o = this.#o;
    const bind = forwarderBindPath(o.stateDir);
    await removeIfPresent(bind);
    await removeIfPresent(path);
    const log = o.log.with({ sandbox_id: sandboxId, route: route.name });
    const stats: ForwarderStats = { open: 0, accepted: 0, refused: 0 };
    const sockets = new Set<net.Socket>();
    const server = net.createServer({ allowHalfOpen: true }, (guest) => {
      guest.on("error", () => {});
      if (stats.open >= route.maxConnections) {
        stats.refused++;
        if (stats.refused === 1 || stats.refused % 100 === 0) {
          log.warn("guest connection limit reached; closing new connections", {
            max: route.maxConnections,
            refused: stats.refused,
          });
        }
        guest.destroy();
        return;
      }
      stats.open++;
      stats.accepted++;
      let upstream: net.Socket;
      try {
        upstream = route.connect(sandboxId);
      } catch (err) {
        stats.open--;
        log.error("cannot forward a guest connection", { error: errorMessage(err) });
        guest.destroy();
        return;
      }
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
        log.debug(`cannot reach the ${route.name} for a guest connection`, {
          target: route.target,
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
