/**
 * TLS to a gateway from any role: everything of `tls_options.ts` (server
 * name for IP hosts, one-line TLS failures) plus grpc-js channel
 * credentials built the same way.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import {
  type ClientTlsMaterial,
  identityCheck,
  IP_TLS_SERVER_NAME,
  pemText as text,
} from "./tls_options.ts";

export * from "./tls_options.ts";

/** grpc-js credentials and channel options for a TLS channel to `host`. */
export function grpcTlsCredentials(
  host: string,
  material: ClientTlsMaterial,
): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  const ip = isIP(host) !== 0;
  const credentials = grpc.credentials.createSsl(
    material.ca ? Buffer.from(text(material.ca)) : null,
    material.key && material.cert ? Buffer.from(text(material.key)) : null,
    material.key && material.cert ? Buffer.from(text(material.cert)) : null,
    ip ? { checkServerIdentity: identityCheck(host) } : {},
  );
  return {
    credentials,
    options: ip ? { "grpc.ssl_target_name_override": IP_TLS_SERVER_NAME } : {},
  };
}
