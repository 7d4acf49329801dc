/**
 * The `openshell.compute.v1.ComputeDriver` gRPC service over a Unix socket,
 * mapping each RPC onto {@link VmDriver}.
 *
 * grpc-js never sees a client's socket: it listens on an internal socket
 * (`grpc.sock` beside the public one) and a {@link GrpcFront} serves the
 * public socket, removing client GOAWAY frames on the way. Without it the
 * driver once died with `nghttp2_session.c:2402: find_stream_on_goaway_func:
 * Assertion` (exit 134) when its client (the gateway) closed its channel
 * (denoland/deno#36788; see `core/goaway_filter.ts`).
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { GrpcFront, MAX_CONCURRENT_STREAMS } from "../core/h2_forward.ts";
import { errorMessage, type Logger } from "../core/log.ts";
import {
  ComputeDriverClient,
  type ComputeDriverHandlers,
  type DriverImportImageChunk,
} from "../core/protocol.ts";
import { Code, hasStatusCode, StatusError } from "../core/status.ts";
import type { VmDriver } from "./driver.ts";
import type { Images } from "./images.ts";
import { MAX_IMPORT_CHUNK_BYTES } from "../core/images.ts";

function wireError(err: unknown): grpc.ServiceError {
  const code = hasStatusCode(err) ? err.code : Code.INTERNAL;
  return { code, details: errorMessage(err) } as grpc.ServiceError;
}

/** The image RPCs over `images` (UNIMPLEMENTED without). */
function imageHandlers(
  images: Images | undefined,
  log: Logger,
): Pick<ComputeDriverHandlers, "ListImages" | "DeleteImage" | "BuildImage" | "ImportImage"> {
  const none = () => {
    throw new StatusError(Code.UNIMPLEMENTED, "this driver has no images");
  };
  return {
    ListImages: unary(log, "ListImages", async () => ({ images: await (images ?? none()).list() })),
    DeleteImage: unary(log, "DeleteImage", async (req) => ({
      deleted: await (images ?? none()).delete(req.name ?? ""),
    })),
    BuildImage: (call) => {
      let open = true;
      let blocked = false;
      let dropped = 0;
      const stop = () => open = false;
      call.on("cancelled", stop);
      call.on("close", stop);
      call.on("error", stop);
      call.on("drain", () => {
        blocked = false;
        if (dropped && open) {
          call.write({ line: `(${dropped} progress lines dropped: the reader was slow)` });
          dropped = 0;
        }
      });
      // A reader that stops reading costs nothing: lines past grpc-js's buffer are counted, not kept.
      const line = (text: string) => {
        if (!open) return;
        if (blocked) {
          dropped++;
          return;
        }
        if (!call.write({ line: text })) blocked = true;
      };
      Promise.resolve()
        .then(() => {
          if (!images) none();
          const r = call.request;
          return images!.build(
            { name: r.name ?? "", packages: r.packages ?? [], script: r.script ?? "" },
            line,
          );
        })
        .then((image) => {
          if (!open) return;
          call.write({ image });
          call.end();
        })
        .catch((err) => {
          log.debug("BuildImage failed", { error: errorMessage(err) });
          if (open) call.emit("error", wireError(err));
        });
    },
    ImportImage: (call, cb) => {
      const run = async () => {
        if (!images) none();
        const it = (call as AsyncIterable<DriverImportImageChunk>)[Symbol.asyncIterator]();
        const first = await it.next();
        if (first.done || first.value.payload !== "header") {
          throw new StatusError(Code.INVALID_ARGUMENT, "an import starts with its header");
        }
        const h = first.value.header;
        async function* data(): AsyncGenerator<Uint8Array> {
          while (true) {
            const next = await it.next();
            if (next.done) return;
            if (next.value.payload !== "data") {
              throw new StatusError(Code.INVALID_ARGUMENT, "only data may follow the header");
            }
            if (next.value.data.length > MAX_IMPORT_CHUNK_BYTES) {
              throw new StatusError(
                Code.INVALID_ARGUMENT,
                `an import chunk holds at most ${MAX_IMPORT_CHUNK_BYTES} bytes`,
              );
            }
            yield next.value.data;
          }
        }
        return { image: await images!.import({ name: h.name, sizeBytes: h.size_bytes }, data()) };
      };
      run().then((res) => cb(null, res), (err) => cb(wireError(err)));
    },
  };
}

function unary<Req, Res>(
  log: Logger,
  method: string,
  fn: (req: Req) => Promise<Res> | Res,
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

/** The service implementation for `driver`. */
export function computeDriverHandlers(
  driver: VmDriver,
  log: Logger,
  images?: Images,
): ComputeDriverHandlers {
  return {
    ...imageHandlers(images, log),
    GetCapabilities: unary(log, "GetCapabilities", () => driver.capabilities()),
    ValidateSandboxCreate: unary(log, "ValidateSandboxCreate", async (req) => {
      await driver.validate(req.sandbox);
      return {};
    }),
    GetSandbox: unary(log, "GetSandbox", (req) => ({
      sandbox: driver.get(req.sandbox_id ?? "", req.sandbox_name ?? ""),
    })),
    ListSandboxes: unary(log, "ListSandboxes", () => ({ sandboxes: driver.list() })),
    CreateSandbox: unary(log, "CreateSandbox", async (req) => {
      await driver.create(req.sandbox);
      return {};
    }),
    StopSandbox: unary(log, "StopSandbox", async (req) => {
      await driver.stop(req.sandbox_id ?? "", req.sandbox_name ?? "");
      return {};
    }),
    StartSandbox: unary(log, "StartSandbox", async (req) => {
      await driver.start(req.sandbox_id ?? "", req.sandbox_name ?? "");
      return {};
    }),
    DeleteSandbox: unary(log, "DeleteSandbox", async (req) => ({
      deleted: await driver.delete(req.sandbox_id ?? "", req.sandbox_name ?? ""),
    })),
    WatchSandboxes: (call) => {
      let done = false;
      const stop = () => {
        if (done) return;
        done = true;
        unsubscribe();
      };
      const unsubscribe = driver.watch((event) => {
        if (done) return;
        try {
          call.write(event);
        } catch (err) {
          log.debug("watch write failed", { error: errorMessage(err) });
          stop();
        }
      });
      call.on("cancelled", stop);
      call.on("close", stop);
      call.on("error", stop);
    },
  };
}

/** A bound server. */
export interface DriverServer {
  /** The public front (its counters). */
  front: GrpcFront;
  /** Stops serving (forcefully: open watch streams are cut). */
  close(): Promise<void>;
}

/** Most connections to the driver's socket at once (its one client is the gateway). */
export const MAX_DRIVER_CONNECTIONS = 64;

/** Options of {@link serveDriver}. */
export interface ServeDriverOptions {
  /** The public socket (`<state-dir>/compute-driver.sock`). */
  socket: string;
  /** grpc-js's internal socket; default `grpc.sock` beside {@link socket}. */
  innerSocket?: string;
  log: Logger;
  /** Strip client GOAWAY frames (default true; false only to reproduce denoland/deno#36788). */
  filterGoaway?: boolean;
  /** The driver's images (the image RPCs are UNIMPLEMENTED without). */
  images?: Images;
}

async function removeStale(path: string, log: Logger): Promise<void> {
  try {
    await Deno.remove(path);
    log.info("removed stale socket", { path });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** Binds the service behind a GOAWAY-filtering front on `unix:<socket>`; removes stale sockets first. */
export async function serveDriver(
  driver: VmDriver,
  options: ServeDriverOptions,
): Promise<DriverServer> {
  const { socket, log } = options;
  const inner = options.innerSocket ?? socket.replace(/[^/]*$/, "grpc.sock");
  await removeStale(socket, log);
  await removeStale(inner, log);
  const server = new grpc.Server({
    "grpc.max_receive_message_length": 16 * 1024 * 1024,
    "grpc.max_concurrent_streams": MAX_CONCURRENT_STREAMS,
  });
  server.addService(
    ComputeDriverClient.service,
    computeDriverHandlers(driver, log, options.images),
  );
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${inner}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(new Error(`cannot listen on unix:${inner}: ${err.message}`));
      else resolve();
    });
  });
  await Deno.chmod(inner, 0o600).catch(() => {});
  const front = new GrpcFront({
    path: socket,
    innerPath: inner,
    maxConnections: MAX_DRIVER_CONNECTIONS,
    log,
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
    },
  };
}
