import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";
import {
  COMPUTE_DRIVER_DESCRIPTOR,
  EGRESS_DESCRIPTOR,
  OPENSHELL_DESCRIPTOR,
} from "../proto/descriptors.ts";
import { methodOriginalName, serviceDefinition } from "./grpc_service.ts";
import {
  COMPUTE_DRIVER_SERVICE_NAME,
  EGRESS_SERVICE_NAME,
  LOADER_OPTIONS,
  OPENSHELL_SERVICE_NAME,
} from "./protocol.ts";

const SERVICES: [string, Record<string, unknown>][] = [
  [OPENSHELL_SERVICE_NAME, OPENSHELL_DESCRIPTOR],
  [COMPUTE_DRIVER_SERVICE_NAME, COMPUTE_DRIVER_DESCRIPTOR],
  [EGRESS_SERVICE_NAME, EGRESS_DESCRIPTOR],
];

/** A value of every scalar kind that is not its type's default. */
function scalar(type: string, name: string): unknown {
  switch (type) {
    case "string":
      return `v-${name}-ü`;
    case "bool":
      return true;
    case "bytes":
      return new Uint8Array([0, 1, 2, 255]);
    case "double":
      return 1.5;
    case "float":
      return 0.5;
    case "int32":
    case "sint32":
    case "sfixed32":
      return -7;
    case "uint32":
    case "fixed32":
      return 7;
    case "int64":
    case "sint64":
    case "sfixed64":
      return -(2 ** 40);
    case "uint64":
    case "fixed64":
      return 2 ** 40 + 3;
  }
  throw new Error(`no sample for scalar type ${type}`);
}

/**
 * A message of `type` with every field set to a non-default value (nested
 * messages down to `depth`); in each oneof, member `variant` (mod its size).
 */
function sample(type: protobuf.Type, depth: number, variant: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const chosen = new Set<string>();
  for (const oneof of type.oneofsArray) {
    if (oneof.oneof.length) chosen.add(oneof.oneof[variant % oneof.oneof.length]);
  }
  const valueOf = (field: protobuf.Field | protobuf.MapField): unknown => {
    field.resolve();
    const t = field.resolvedType;
    if (t instanceof protobuf.Enum) {
      const names = Object.keys(t.values);
      return names[names.length > 1 ? 1 : 0];
    }
    if (t instanceof protobuf.Type) return depth > 0 ? sample(t, depth - 1, variant) : undefined;
    return scalar(field.type, field.name);
  };
  for (const field of type.fieldsArray) {
    if (field.partOf && !chosen.has(field.name)) continue;
    const value = valueOf(field);
    if (value === undefined) continue;
    if (field.map) out[field.name] = { k1: value, k2: value };
    else if (field.repeated) out[field.name] = [value, value];
    else out[field.name] = value;
  }
  return out;
}

Deno.test("grpc_service: every method is what proto-loader gives (names, streams, bytes, objects)", () => {
  let methods = 0;
  let messages = 0;
  for (const [name, descriptor] of SERVICES) {
    const theirs = protoLoader.fromJSON(descriptor, LOADER_OPTIONS)[name] as grpc.ServiceDefinition;
    const ours = serviceDefinition(descriptor, name, LOADER_OPTIONS);
    assert.deepEqual(Object.keys(ours), Object.keys(theirs), name);
    const root = protobuf.Root.fromJSON(descriptor);
    const service = root.lookupService(name);
    for (const method of service.methodsArray) {
      methods++;
      const a = ours[method.name];
      const b = theirs[method.name];
      assert.equal(a.path, b.path);
      assert.equal(a.requestStream, b.requestStream, a.path);
      assert.equal(a.responseStream, b.responseStream, a.path);
      assert.equal(a.originalName, b.originalName, a.path);
      method.resolve();
      const sides = [
        [
          method.resolvedRequestType!,
          a.requestSerialize,
          b.requestSerialize,
          a.requestDeserialize,
          b.requestDeserialize,
        ],
        [
          method.resolvedResponseType!,
          a.responseSerialize,
          b.responseSerialize,
          a.responseDeserialize,
          b.responseDeserialize,
        ],
      ] as const;
      for (const [type, ser, theirSer, de, theirDe] of sides) {
        // Defaults: an empty message decodes to the same object.
        assert.deepEqual(
          de(Buffer.alloc(0)),
          theirDe(Buffer.alloc(0)),
          `${a.path} ${type.name} {}`,
        );
        for (let variant = 0; variant < 4; variant++) {
          messages++;
          const value = sample(type, 3, variant);
          const bytes = ser(value);
          assert.deepEqual(
            Buffer.from(bytes),
            Buffer.from(theirSer(value)),
            `${a.path} ${type.name} #${variant}: bytes`,
          );
          assert.ok(bytes.length > 0 || type.fieldsArray.length === 0, `${type.name} sample empty`);
          assert.deepEqual(de(bytes), theirDe(bytes), `${a.path} ${type.name} #${variant}: object`);
        }
      }
    }
  }
  // The three services as they stand: a shrinking count would mean a service went missing.
  assert.ok(methods >= 30, `only ${methods} methods compared`);
  assert.ok(messages > 200, `only ${messages} messages compared`);
});

Deno.test("grpc_service: an array is refused like proto-loader refuses it", () => {
  const ours = serviceDefinition(OPENSHELL_DESCRIPTOR, OPENSHELL_SERVICE_NAME, LOADER_OPTIONS);
  assert.throws(
    () => ours.Health.requestSerialize([] as unknown as Record<string, unknown>),
    /expected object with HealthRequest structure, got array instead/,
  );
});

Deno.test("grpc_service: an unknown service is an error naming it", () => {
  assert.throws(
    () => serviceDefinition(OPENSHELL_DESCRIPTOR, "openshell.v1.Nope", LOADER_OPTIONS),
    /openshell\.v1\.Nope/,
  );
});

Deno.test("grpc_service: originalName lower-cases the first letter", () => {
  assert.equal(methodOriginalName("CreateSandbox"), "createSandbox");
  assert.equal(methodOriginalName("Health"), "health");
});
