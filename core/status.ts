/**
 * gRPC status codes and the error type every role uses to carry one.
 *
 * Pure: no gRPC library here, so `core/` modules such as the session
 * registry can fail with a status that the gateway later puts on the wire.
 *
 * @module
 */

/** gRPC status codes (the numbers are the wire values). */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

/** One gRPC status code value. */
export type Code = typeof Code[keyof typeof Code];

const CODE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(Code).map(([name, value]) => [value, name]),
);

/** The upper-case name of a status code, e.g. `NOT_FOUND`; `CODE_<n>` when unknown. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/** An error that carries a gRPC status code and a message meant for the caller. */
export class StatusError extends Error {
  /** The gRPC status code. */
  readonly code: Code;

  /** Creates an error with `code` and a human-readable `message`. */
  constructor(code: Code, message: string) {
    super(message);
    this.name = "StatusError";
    this.code = code;
  }
}

/** Whether `err` carries a numeric gRPC `code` (a StatusError or a grpc-js ServiceError). */
export function hasStatusCode(err: unknown): err is { code: number; message: string } {
  return typeof err === "object" && err !== null &&
    typeof (err as { code?: unknown }).code === "number";
}
