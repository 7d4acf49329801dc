/**
 * How `@grpc/proto-loader` turns messages into objects. `proto/types.ts` is
 * generated for exactly these options, so both live here, beside the
 * generator; `core/protocol.ts` loads the services with them.
 *
 * @module
 */
import type { Options } from "@grpc/proto-loader";

/**
 * Field names as in the `.proto` files (snake_case), enums as their names,
 * 64-bit integers as numbers, bytes as `Uint8Array` (Buffer), defaults
 * filled in, and a virtual field per oneof naming its set member.
 */
export const LOADER_OPTIONS: Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};
