/**
 * The wire protocol: service definitions loaded from the generated descriptor
 * module (never from `.proto` files at run time), typed clients of them, and
 * the TypeScript types of every message, generated into `proto/types.ts` by
 * `deno task proto` and re-exported here.
 *
 * Messages are plain objects as `@grpc/proto-loader` decodes them with
 * {@link LOADER_OPTIONS}: field names as in the `.proto` files (snake_case),
 * enums as their names, 64-bit integers as numbers, bytes as `Uint8Array`
 * (Buffer), defaults filled in, and a `payload` key naming the set member of
 * each oneof. Messages being sent are `Wire<T>` (any field may be left out).
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { serviceDefinition } from "./grpc_service.ts";
import {
  COMPUTE_DRIVER_DESCRIPTOR,
  EGRESS_DESCRIPTOR,
  OPENSHELL_DESCRIPTOR,
} from "../proto/descriptors.ts";
import { LOADER_OPTIONS } from "../proto/options.ts";
import type * as proto from "../proto/types.ts";

export type * from "../proto/types.ts";
export { LOADER_OPTIONS };

/** Fully-qualified service names. */
export const OPENSHELL_SERVICE_NAME = "openshell.v1.OpenShell";
/** Fully-qualified name of the compute driver service. */
export const COMPUTE_DRIVER_SERVICE_NAME = "openshell.compute.v1.ComputeDriver";
/** Fully-qualified name of the egress proxy's control service (openshell-deno only). */
export const EGRESS_SERVICE_NAME = "openshell.egress.v1.EgressProxy";

/**
 * The client class of service `name` in `descriptor`, typed as the generated
 * client interface `C` (the one place the typing is asserted; the
 * `proto/types.ts` staleness test keeps the two in step).
 */
function loadService<C extends grpc.Client>(
  descriptor: Record<string, unknown>,
  name: string,
): proto.ClientConstructor<C> {
  // What proto-loader's fromJSON + loadPackageDefinition give, minus their start-up cost.
  const definition = serviceDefinition(descriptor, name, LOADER_OPTIONS);
  return grpc.makeClientConstructor(definition, name) as unknown as proto.ClientConstructor<C>;
}

/** Client class of `openshell.v1.OpenShell`; `.service` is its server definition. */
export const OpenShellClient: proto.ClientConstructor<proto.OpenShellClient> = loadService(
  OPENSHELL_DESCRIPTOR,
  OPENSHELL_SERVICE_NAME,
);
/** A client of `openshell.v1.OpenShell` (an instance of {@link OpenShellClient}). */
export type OpenShellClient = proto.OpenShellClient;

/** Client class of `openshell.compute.v1.ComputeDriver`; `.service` is its definition. */
export const ComputeDriverClient: proto.ClientConstructor<proto.ComputeDriverClient> = loadService(
  COMPUTE_DRIVER_DESCRIPTOR,
  COMPUTE_DRIVER_SERVICE_NAME,
);
/** A client of `openshell.compute.v1.ComputeDriver` (an instance of {@link ComputeDriverClient}). */
export type ComputeDriverClient = proto.ComputeDriverClient;

/** Client class of `openshell.egress.v1.EgressProxy`; `.service` is its definition. */
export const EgressProxyClient: proto.ClientConstructor<proto.EgressProxyClient> = loadService(
  EGRESS_DESCRIPTOR,
  EGRESS_SERVICE_NAME,
);
/** A client of `openshell.egress.v1.EgressProxy` (an instance of {@link EgressProxyClient}). */
export type EgressProxyClient = proto.EgressProxyClient;

/**
 * Calls a unary method of a typed client as a promise, e.g.
 * `unaryCall(client, client.GetSandbox, { name })`: resolves with the decoded
 * response, rejects with the grpc-js `ServiceError`. The request is checked
 * against the method's request type.
 */
export function unaryCall<Req, Res>(
  client: grpc.Client,
  method: proto.UnaryMethod<Req, Res>,
  request: NoInfer<Req>,
  options: grpc.CallOptions = {},
): Promise<Res> {
  return new Promise((resolve, reject) =>
    method.call(client, request, new grpc.Metadata(), options, (err, res) => {
      if (err) reject(err);
      else resolve(res!);
    })
  );
}
