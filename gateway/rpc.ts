/**
 * Small helpers between grpc-js handlers and the gateway's async code:
 * errors become gRPC statuses with their message, unexpected errors become
 * INTERNAL and are logged, never thrown into grpc-js.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type { Buffer } from "node:buffer";
import { errorMessage, type Logger } from "../core/log.ts";
import { Code, hasStatusCode, StatusError } from "../core/status.ts";
import { capLine } from "../core/text.ts";

/**
 * Longest status message sent, in UTF-8 bytes: grpc-js percent-encodes it
 * into the `grpc-message` trailer (up to 3 bytes per byte), and clients
 * refuse trailers much past 8 KiB with a metadata error instead of the status.
 */
export const MAX_STATUS_DETAILS_BYTES = 1024;

/** A status for the wire: `{code, details}`. */
export interface WireStatus {
  code: number;
  details: string;
}

/**
 * Maps any thrown value onto a gRPC status; unknown errors are INTERNAL and
 * logged. The message is cut to {@link MAX_STATUS_DETAILS_BYTES}.
 */
export function toWireStatus(err: unknown, log?: Logger): WireStatus {
  const bound = (details: string) => capLine(details, MAX_STATUS_DETAILS_BYTES);
  if (err instanceof StatusError) return { code: err.code, details: bound(err.message) };
  if (hasStatusCode(err) && err.code > 0 && err.code <= 16) {
    return {
      code: err.code,
      details: bound(String((err as { details?: string }).details || err.message)),
    };
  }
  log?.error("internal error", { error: errorMessage(err) });
  return { code: Code.INTERNAL, details: bound(`internal error: ${errorMessage(err)}`) };
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

const UNDECODABLE = Symbol("undecodable request");

/** What a guarded deserializer returns instead of throwing. */
interface Undecodable {
  [UNDECODABLE]: string;
}

function isUndecodable(message: unknown): message is Undecodable {
  return typeof message === "object" && message !== null && UNDECODABLE in message;
}

/**
 * `service` with request deserializers that do not throw: grpc-js answers a
 * throwing deserializer with `INTERNAL` ("Error deserializing request") and
 * no detail. The guarded one returns a marker that {@link decodeGuard} turns
 * into `INVALID_ARGUMENT` naming the method and what was wrong.
 */
export function guardDecoding(service: grpc.ServiceDefinition): grpc.ServiceDefinition {
  const guarded: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize;
    guarded[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes);
        } catch (err) {
          return { [UNDECODABLE]: errorMessage(err) } satisfies Undecodable;
        }
      },
    };
  }
  return guarded as grpc.ServiceDefinition;
}

/**
 * Server interceptor paired with {@link guardDecoding}: a request message
 * that did not decode ends the call with `INVALID_ARGUMENT` before any
 * handler sees it (unary, server-streaming and bidi alike).
 */
export const decodeGuard: grpc.ServerInterceptor = (
  method: grpc.ServerMethodDefinition<unknown, unknown>,
  call: grpc.ServerInterceptingCallInterface,
): grpc.ServerInterceptingCall => {
  let failed = false;
  return new grpc.ServerInterceptingCall(call, {
    start: (next) =>
      next({
        onReceiveMessage: (message, nextMessage) => {
          if (failed) return;
          if (!isUndecodable(message)) return nextMessage(message);
          failed = true;
          call.sendStatus({
            code: Code.INVALID_ARGUMENT,
            details: capLine(
              `cannot decode the ${method.path} request: ${message[UNDECODABLE]}`,
              MAX_STATUS_DETAILS_BYTES,
            ),
          });
        },
        onReceiveHalfClose: (nextHalfClose) => {
          if (!failed) nextHalfClose();
        },
      }),
  });
};
