/**
 * The `openshell.compute.v1.ComputeDriver` gRPC service over a Unix socket,
 * mapping each RPC onto {@link VmDriver}.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { errorMessage, type Logger } from "../core/log.ts";
import { ComputeDriverClient, type DriverSandbox, type Wire } from "../core/protocol.ts";
import { Code, hasStatusCode, StatusError } from "../core/status.ts";
import type { VmDriver } from "./driver.ts";

type UnaryHandler = (
  call: grpc.ServerUnaryCall<unknown, unknown>,
  cb: grpc.sendUnaryData<unknown>,
) => void;

function unary<Req>(
  log: Logger,
  method: string,
  fn: (req: Req) => Promise<unknown> | unknown,
): UnaryHandler {
  return (call, cb) => {
    Promise.resolve()
      .then(() => fn(call.request as Req))
      .then((res) => cb(null, res as object))
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
): grpc.UntypedServiceImplementation {
  type SandboxReq = { sandbox?: Wire<DriverSandbox> | null };
  type IdReq = { sandbox_id?: string; sandbox_name?: string };
  return {
    GetCapabilities: unary(log, "GetCapabilities", () => driver.capabilities()),
    ValidateSandboxCreate: unary(log, "ValidateSandboxCreate", async (req: SandboxReq) => {
      await driver.validate(req.sandbox);
      return {};
    }),
    GetSandbox: unary(log, "GetSandbox", (req: IdReq) => ({
      sandbox: driver.get(req.sandbox_id ?? "", req.sandbox_name ?? ""),
    })),
    ListSandboxes: unary(log, "ListSandboxes", () => ({ sandboxes: driver.list() })),
    CreateSandbox: unary(log, "CreateSandbox", async (req: SandboxReq) => {
      await driver.create(req.sandbox);
      return {};
    }),
    StopSandbox: unary(log, "StopSandbox", () => {
      throw new StatusError(
        Code.UNIMPLEMENTED,
        "StopSandbox is not supported by the VM driver; delete the sandbox instead",
      );
    }),
    DeleteSandbox: unary(log, "DeleteSandbox", async (req: IdReq) => ({
      deleted: await driver.delete(req.sandbox_id ?? "", req.sandbox_name ?? ""),
    })),
    WatchSandboxes: (call: grpc.ServerWritableStream<unknown, unknown>) => {
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
  /** Stops serving (forcefully: open watch streams are cut). */
  close(): void;
}

/** Binds the service on `unix:<socket>`; removes a stale socket file first. */
export async function serveDriver(
  driver: VmDriver,
  socket: string,
  log: Logger,
): Promise<DriverServer> {
  try {
    await Deno.remove(socket);
    log.info("removed stale socket", { path: socket });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  const server = new grpc.Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  server.addService(ComputeDriverClient.service, computeDriverHandlers(driver, log));
  await new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(new Error(`cannot listen on unix:${socket}: ${err.message}`));
      else resolve();
    });
  });
  await Deno.chmod(socket, 0o600).catch(() => {});
  return {
    close() {
      server.forceShutdown();
    },
  };
}
