/**
 * Small helpers between grpc-js handlers and the gateway's async code:
 * errors become gRPC statuses with their message, unexpected errors become
 * INTERNAL and are logged, never thrown into grpc-js.
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import { errorMessage, type Logger } from "../core/log.ts";
import { Code, hasStatusCode, StatusError } from "../core/status.ts";

/** A status for the wire: `{code, details}`. */
export interface WireStatus {
  code: number;
  details: string;
}

/** Maps any thrown value onto a gRPC status; unknown errors are INTERNAL and logged. */
export function toWireStatus(err: unknown, log?: Logger): WireStatus {
  if (err instanceof StatusError) return { code: err.code, details: err.message };
  if (hasStatusCode(err) && err.code > 0 && err.code <= 16) {
    return { code: err.code, details: (err as { details?: string }).details || err.message };
  }
  log?.error("internal error", { error: errorMessage(err) });
  return { code: Code.INTERNAL, details: `internal error: ${errorMessage(err)}` };
}

/** Wraps an async function as a grpc-js unary handler. */
export function unary<Req, Res>(
  log: Logger,
  fn: (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    fn(call.request, call).then(
      (res) => callback(null, res),
      (err) => callback(toWireStatus(err, log) as grpc.ServiceError),
    );
  };
}

/** Ends a server stream with an error status (no-op if it already ended). */
export function failStream(
  call: {
    emit(event: "error", err: unknown): boolean;
    writableEnded?: boolean;
    destroyed?: boolean;
  },
  err: unknown,
  log?: Logger,
): void {
  if (call.writableEnded || call.destroyed) return;
  call.emit("error", toWireStatus(err, log));
}

/** The first value of a metadata key as a string ("" when absent). */
export function metadataValue(metadata: grpc.Metadata, key: string): string {
  const v = metadata.get(key)[0];
  return typeof v === "string" ? v : v ? new TextDecoder().decode(v) : "";
}
