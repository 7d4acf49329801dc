/**
 * The gateway's control API of the egress proxy,
 * `openshell.egress.v1.EgressProxy`, on `<state-dir>/control.sock`.
 *
 * grpc-js never sees a client's socket: it listens on an internal socket
 * and a {@link GrpcFront} serves the public one, removing client GOAWAY
 * frames on the way (denoland/deno#36788; see `core/goaway_filter.ts`).
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { GrpcFront, MAX_CONCURRENT_STREAMS } from "../core/h2_forward.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import { EgressProxyClient, type EgressProxyHandlers } from "../core/protocol.ts";
import { Code, hasStatusCode, StatusError } from "../core/status.ts";
import type { EventHub, Subscription } from "./events.ts";
import type { PolicyTable } from "./policies.ts";

/** Most connections to the control socket at once (its one client is the gateway). */
export const MAX_CONTROL_CONNECTIONS = 16;
/** Largest control message (a policy at its caps fits). */
export const MAX_CONTROL_MESSAGE_BYTES = 8 * 1024 * 1024;

/** What the control API acts on. */
export interface ControlDeps {
  policies: PolicyTable;
  events: EventHub;
  /** Closes a removed sandbox's connections; how many. */
  closeSandbox: (sandboxId: string) => number;
  log: Logger;
}

function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req) => Res | Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request))
      .then((res) => cb(null, res))
      .catch((err) => {
        const code = hasStatusCode(err) ? err.code : Code.INTERNAL;
        if (code === Code.INTERNAL || code === Code.UNKNOWN) {
          log.error(`${method} failed`, { error: errorMessage(err) });
        } else {
          log.debug(`${method} rejected`, { code, error: errorMessage(err) });
        }
        cb({ code, details: errorMessage(err) } as grpc.ServiceError);
      });
  };
}

/** The service implementation. */
export function egressHandlers(deps: ControlDeps): EgressProxyHandlers {
  const { policies, events, log } = deps;
  return {
    ApplyPolicy: unary(log, "ApplyPolicy", (req) => {
      const id = req.sandbox_id ?? "";
      const applied = policies.apply(id, req.version ?? 0, req.policy);
      log.info("policy applied", {
        sandbox_id: id,
        version: applied.version,
        rules: Object.keys(applied.policy.network_policies ?? {}).length,
      });
      return { loaded_version: applied.version, loaded_at_ms: applied.loadedAtMs };
    }),
    RemoveSandbox: unary(log, "RemoveSandbox", (req) => {
      const id = req.sandbox_id ?? "";
      const known = policies.remove(id);
      events.forget(id);
      const closed = deps.closeSandbox(id);
      if (known || closed) log.info("sandbox removed", { sandbox_id: id, closed });
      return {};
    }),
    ListPolicies: unary(log, "ListPolicies", () => ({ policies: policies.list() })),
    WatchEvents: (call) => {
      let done = false;
      const stop = () => {
        if (done) return;
        done = true;
        sub?.close();
      };
      const sub: Subscription | undefined = events.subscribe((event) => {
        if (done) return true;
        try {
          return call.write(event);
        } catch (err) {
          log.debug("watch write failed", { error: errorMessage(err) });
          stop();
          return true;
        }
      });
      if (!sub) {
        call.emit("error", {
          code: Code.RESOURCE_EXHAUSTED,
          details: "too many event watchers; close one first",
        } as grpc.ServiceError);
        return;
      }
      // The headers tell the client the watch is in place (events from now on reach it).
      call.sendMetadata(new grpc.Metadata());
      const ready = sub.ready;
      call.on("drain", () => ready());
      call.on("cancelled", stop);
      call.on("close", stop);
      call.on("error", stop);
    },
  };
}

/** A bound control server. */
export interface ControlServer {
  front: GrpcFront;
  close(): Promise<void>;
}

/** Options of {@link serveControl}. */
export interface ServeControlOptions {
  /** The public socket (`<state-dir>/control.sock`). */
  socket: string;
  /** grpc-js's internal socket. */
  innerSocket: string;
  /** Strip client GOAWAY frames (default true). */
  filterGoaway?: boolean;
}

/** Binds the service behind a GOAWAY-filtering front; stale sockets are replaced. */
export async function serveControl(
  deps: ControlDeps,
  options: ServeControlOptions,
): Promise<ControlServer> {
  const { socket, innerSocket: inner } = options;
  for (const path of [socket, inner]) await Deno.remove(path).catch(() => {});
  const server = new grpc.Server({
    "grpc.max_receive_message_length": MAX_CONTROL_MESSAGE_BYTES,
    "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
  });
  server.addService(EgressProxyClient.service, egressHandlers(deps));
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${inner}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) {
        reject(new StatusError(Code.UNAVAILABLE, `cannot listen on unix:${inner}: ${err.message}`));
      } else resolve();
    });
  });
  await Deno.chmod(inner, 0o600).catch(() => {});
  const front = new GrpcFront({
    path: socket,
    innerPath: inner,
    maxConnections: MAX_CONTROL_CONNECTIONS,
    log: deps.log,
    filterGoaway: options.filterGoaway,
  });
  try {
    await front.listen();
  } catch (err) {
    server.forceShutdown();
    throw new Error(`cannot listen on unix:${socket}: ${errorMessage(err)}`);
  }
  return {
    front,
    async close() {
      await front.close();
      server.forceShutdown();
      await Deno.remove(inner).catch(() => {});
      await Deno.remove(socket).catch(() => {});
    },
  };
}
