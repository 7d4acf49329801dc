/**
 * A grpc-js service definition straight from a protobufjs JSON descriptor:
 * what `@grpc/proto-loader`'s `fromJSON` followed by
 * `grpc.loadPackageDefinition` gives for one service — the same paths,
 * stream flags, `originalName`s and (de)serializers over the same protobufjs
 * types, so messages are the same objects and the same bytes
 * (`grpc_service_test.ts` compares both for every method of every service)
 * — without what proto-loader does up front that nothing here uses:
 * resolving every type of the descriptor, encoding the whole descriptor as
 * `FileDescriptorProto`s for each message (for reflection) and generating
 * code for every message type. Here a type is set up the first time a
 * message of it is encoded or decoded.
 *
 * Why: loading the three services through proto-loader was the largest part
 * of a role's start-up; inside a VM under emulation (TCG) it took 6–7 s of
 * the supervisor's ~16 s before `main()` ran (`docs/vm.md`, boot stages).
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import type { Buffer } from "node:buffer";
import protobuf from "protobufjs";

/** How decoded messages are turned into objects (protobufjs `toObject` options). */
export type ConversionOptions = protobuf.IConversionOptions;

/** `originalName` as proto-loader derives it (lodash `camelCase`, for names without acronyms). */
export function methodOriginalName(name: string): string {
  return name.charAt(0).toLowerCase() + name.slice(1);
}

function serializer(type: protobuf.Type): grpc.serialize<unknown> {
  return (value: unknown) => {
    if (Array.isArray(value)) {
      throw new Error(
        `Failed to serialize message: expected object with ${type.name} structure, got array instead`,
      );
    }
    return type.encode(type.fromObject(value as Record<string, unknown>)).finish() as Buffer;
  };
}

function deserializer(type: protobuf.Type, options: ConversionOptions): grpc.deserialize<unknown> {
  return (bytes: Buffer) => type.toObject(type.decode(bytes), options);
}

/**
 * The grpc-js definition of service `name` (fully qualified, e.g.
 * `openshell.v1.OpenShell`) in `descriptor`; throws when the descriptor has
 * no such service or a method names a missing message type.
 */
export function serviceDefinition(
  descriptor: Record<string, unknown>,
  name: string,
  options: ConversionOptions,
): grpc.ServiceDefinition {
  const root = protobuf.Root.fromJSON(descriptor);
  const service = root.lookupService(name);
  const definition: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methodsArray) {
    method.resolve();
    const request = method.resolvedRequestType!;
    const response = method.resolvedResponseType!;
    definition[method.name] = {
      path: `/${name}/${method.name}`,
      requestStream: !!method.requestStream,
      responseStream: !!method.responseStream,
      requestSerialize: serializer(request),
      requestDeserialize: deserializer(request, options),
      responseSerialize: serializer(response),
      responseDeserialize: deserializer(response, options),
      originalName: methodOriginalName(method.name),
    };
  }
  return definition;
}
