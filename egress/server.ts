/**
 * The egress proxy put together: the policy table, the event hub, the
 * guest socket and the control socket in one state dir.
 *
 * @module
 */
import type { Logger } from "../core/log.ts";
import { checkPrivateDir } from "../core/secure_fs.ts";
import type { ProxyContext } from "./authorize.ts";
import {
  controlSocketPath,
  DEFAULT_EVENTS_PER_SEC,
  DEFAULT_IDLE_SECS,
  DEFAULT_MAX_PER_SANDBOX,
  DEFAULT_MAX_TOTAL,
  guestSocketPath,
  innerSocketPath,
} from "./config.ts";
import { type ControlServer, serveControl } from "./control.ts";
import { EventHub } from "./events.ts";
import { GuestServer } from "./guest.ts";
import { PolicyTable } from "./policies.ts";
import {
  type HostAddresses,
  type Resolver,
  systemHostAddresses,
  systemResolver,
} from "./resolve.ts";

/** Options of {@link startEgress}. */
export interface EgressOptions {
  stateDir: string;
  log: Logger;
  maxPerSandbox?: number;
  maxTotal?: number;
  idleMs?: number;
  eventsPerSec?: number;
  headerTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** Default: the system resolver. */
  resolve?: Resolver;
  /** Default: this host's interface addresses, read on each decision. */
  hostAddrs?: HostAddresses;
  /** Millisecond clock (policy load times, event rate); default `Date.now`. */
  now?: () => number;
  /** Strip client GOAWAY frames on the control socket (default true). */
  filterGoaway?: boolean;
}

/** A running egress proxy. */
export interface Egress {
  policies: PolicyTable;
  events: EventHub;
  guest: GuestServer;
  control: ControlServer;
  guestSocket: string;
  controlSocket: string;
  close(): Promise<void>;
}

/** Starts the proxy in `stateDir` (created private when missing). */
export async function startEgress(o: EgressOptions): Promise<Egress> {
  await checkPrivateDir(o.stateDir, { create: true, what: "egress state dir" });
  const policies = new PolicyTable({ now: o.now });
  const events = new EventHub({ perSecond: o.eventsPerSec ?? DEFAULT_EVENTS_PER_SEC, now: o.now });
  const ctx: ProxyContext = {
    policies,
    events,
    resolve: o.resolve ?? systemResolver(),
    hostAddrs: o.hostAddrs ?? systemHostAddresses,
    log: o.log,
    connectTimeoutMs: o.connectTimeoutMs,
    idleMs: o.idleMs ?? DEFAULT_IDLE_SECS * 1000,
  };
  const guestSocket = guestSocketPath(o.stateDir);
  const controlSocket = controlSocketPath(o.stateDir);
  const guest = new GuestServer({
    path: guestSocket,
    ctx,
    maxPerSandbox: o.maxPerSandbox ?? DEFAULT_MAX_PER_SANDBOX,
    maxTotal: o.maxTotal ?? DEFAULT_MAX_TOTAL,
    idleMs: ctx.idleMs,
    headerTimeoutMs: o.headerTimeoutMs,
  });
  await guest.listen();
  let control: ControlServer;
  try {
    control = await serveControl(
      { policies, events, closeSandbox: (id) => guest.closeSandbox(id), log: o.log },
      {
        socket: controlSocket,
        innerSocket: innerSocketPath(o.stateDir),
        filterGoaway: o.filterGoaway,
      },
    );
  } catch (err) {
    await guest.close();
    throw err;
  }
  return {
    policies,
    events,
    guest,
    control,
    guestSocket,
    controlSocket,
    async close() {
      await control.close();
      await guest.close();
    },
  };
}
