/**
 * The CLI's connection to a gateway: a grpc-js `OpenShell` client
 * (plaintext for `http://`, TLS or mTLS for `https://`), promise-returning
 * unary calls, server streams as async iterables, and every failure turned
 * into a one-line {@link CliError}.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import {
  type CreateSandboxRequest,
  type CreateSshSessionResponse,
  type ExecSandboxEvent,
  type ExecSandboxRequest,
  type GetSandboxLogsRequest,
  type GetSandboxLogsResponse,
  type HealthResponse,
  type IssueSupervisorCredentialsResponse,
  type ListSandboxesResponse,
  OpenShellClient,
  type Sandbox,
  type SandboxResponse,
  type SandboxStreamEvent,
  type WatchSandboxRequest,
  type Wire,
} from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { grpcTlsCredentials } from "../core/tls.ts";
import type { GatewayEndpoint, TlsMaterial } from "./config.ts";
import { CliError } from "./errors.ts";
import { type ConnectionFacts, GatewayError, grpcCode } from "./gateway_error.ts";

export {
  type ConnectionFacts,
  describeGrpcError,
  GatewayError,
  grpcCode,
} from "./gateway_error.ts";

/**
 * Largest `ListSandboxes` page the gateway serves (its `MAX_LIST_LIMIT`,
 * chosen so a page of the largest sandboxes fits one message).
 */
export const LIST_PAGE = 100;
/** Default deadline of a unary call. */
export const DEFAULT_DEADLINE_MS = 30_000;

/** How to reach a gateway. */
export interface GatewayClientOptions {
  /** Its URL. */
  endpoint: GatewayEndpoint;
  /** TLS files for https. */
  tls?: TlsMaterial;
  /** Its registered name (for "what to do" hints). */
  name?: string;
}

/** A server-streaming call as an async iterable that can be cancelled. */
export interface ServerStream<T> extends AsyncIterable<T> {
  /** Stops the call; the iteration then ends without an error. */
  cancel(): void;
}

/** The grpc-js target (`host:port`) of an endpoint. */
export function grpcTarget(endpoint: GatewayEndpoint): string {
  const host = endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host;
  return `${host}:${endpoint.port}`;
}

/**
 * Channel credentials and options for an endpoint: insecure for http; for
 * https, TLS that trusts the configured CA (else the system roots) and
 * presents the client certificate when there is one (core/tls.ts handles IP
 * hosts).
 */
export function channelCredentials(
  endpoint: GatewayEndpoint,
  tls?: TlsMaterial,
): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if (endpoint.scheme === "http") {
    return { credentials: grpc.credentials.createInsecure(), options: {} };
  }
  return grpcTlsCredentials(endpoint.host, {
    ...(tls?.ca ? { ca: tls.ca } : {}),
    ...(tls?.cert && tls?.key ? { cert: tls.cert, key: tls.key } : {}),
  });
}

type Unary = (
  req: unknown,
  meta: grpc.Metadata,
  options: grpc.CallOptions,
  cb: (err: grpc.ServiceError | null, res: unknown) => void,
) => grpc.ClientUnaryCall;

type Streaming = (req: unknown, options: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;

/** The `OpenShell` API of one gateway. */
export class GatewayClient {
  /** The gateway's URL. */
  readonly endpoint: GatewayEndpoint;
  readonly #client: grpc.Client;
  readonly #facts: ConnectionFacts;

  /** Creates a client; nothing connects until the first call. */
  constructor(options: GatewayClientOptions) {
    this.endpoint = options.endpoint;
    this.#facts = {
      clientCertificate: !!(options.tls?.cert && options.tls.key),
      ...(options.name ? { name: options.name } : {}),
    };
    const { credentials, options: tlsOptions } = channelCredentials(
      options.endpoint,
      options.tls,
    );
    this.#client = new OpenShellClient(
      grpcTarget(options.endpoint),
      credentials,
      {
        ...tlsOptions,
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 20_000,
        "grpc.max_receive_message_length": 16 * 1024 * 1024,
        // Closing the client then really closes its connection (no shared pool).
        "grpc.use_local_subchannel_pool": 1,
      },
    );
  }

  #unary<T>(method: string, req: unknown, deadlineMs = DEFAULT_DEADLINE_MS): Promise<T> {
    const fn = (this.#client as unknown as Record<string, Unary>)[method].bind(this.#client);
    return new Promise((resolve, reject) => {
      fn(req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (err, res) => {
        if (err) reject(new GatewayError(err, this.endpoint, this.#facts));
        else resolve(res as T);
      });
    });
  }

  #stream<T>(method: string, req: unknown): ServerStream<T> {
    const fn = (this.#client as unknown as Record<string, Streaming>)[method].bind(this.#client);
    const call = fn(req, {});
    let cancelled = false;
    // An error before iteration starts must not become an unhandled event.
    call.on("error", () => {});
    const endpoint = this.endpoint;
    const facts = this.#facts;
    async function* iterate(): AsyncGenerator<T> {
      try {
        for await (const message of call) yield message as T;
      } catch (err) {
        if (cancelled && grpcCode(err) === Code.CANCELLED) return;
        throw new GatewayError(err, endpoint, facts);
      } finally {
        if (!cancelled) {
          cancelled = true;
          call.cancel();
        }
      }
    }
    const it = iterate();
    return {
      [Symbol.asyncIterator]: () => it,
      cancel: () => {
        if (cancelled) return;
        cancelled = true;
        call.cancel();
      },
    };
  }

  /** `Health`. */
  health(deadlineMs = 10_000): Promise<HealthResponse> {
    return this.#unary("Health", {}, deadlineMs);
  }

  /** `CreateSandbox`; returns the created sandbox. */
  async createSandbox(req: Wire<CreateSandboxRequest>): Promise<Sandbox> {
    const res = await this.#unary<SandboxResponse>("CreateSandbox", req);
    if (!res.sandbox) throw new CliError("the gateway returned no sandbox");
    return res.sandbox;
  }

  /** `GetSandbox` by name. */
  async getSandbox(name: string): Promise<Sandbox> {
    const res = await this.#unary<SandboxResponse>("GetSandbox", { name });
    if (!res.sandbox) throw new CliError(`sandbox "${name}" not found`);
    return res.sandbox;
  }

  /**
   * Up to `limit` sandboxes from `offset`, in pages of at most
   * {@link LIST_PAGE} (the largest page the gateway serves).
   */
  async listSandboxes(limit: number, offset: number): Promise<Sandbox[]> {
    const all: Sandbox[] = [];
    while (all.length < limit) {
      const want = Math.min(LIST_PAGE, limit - all.length);
      const res = await this.#unary<ListSandboxesResponse>("ListSandboxes", {
        limit: want,
        offset: offset + all.length,
      });
      all.push(...res.sandboxes);
      if (res.sandboxes.length < want) break;
    }
    return all;
  }

  /** Every sandbox, page by page. */
  async listAllSandboxes(pageSize = LIST_PAGE): Promise<Sandbox[]> {
    const all: Sandbox[] = [];
    for (let offset = 0;; offset += pageSize) {
      const page = await this.listSandboxes(pageSize, offset);
      all.push(...page);
      if (page.length < pageSize) return all;
    }
  }

  /** `DeleteSandbox` by name; false when there was no such sandbox. */
  async deleteSandbox(name: string): Promise<boolean> {
    const res = await this.#unary<{ deleted: boolean }>("DeleteSandbox", { name });
    return res.deleted;
  }

  /** `CreateSshSession`. */
  createSshSession(sandboxId: string): Promise<CreateSshSessionResponse> {
    return this.#unary("CreateSshSession", { sandbox_id: sandboxId });
  }

  /** `IssueSupervisorCredentials` (openshell-deno's own RPC). */
  issueSupervisorCredentials(name: string): Promise<IssueSupervisorCredentialsResponse> {
    return this.#unary("IssueSupervisorCredentials", { name });
  }

  /** `RevokeSshSession`. */
  async revokeSshSession(token: string, deadlineMs = DEFAULT_DEADLINE_MS): Promise<boolean> {
    const res = await this.#unary<{ revoked: boolean }>("RevokeSshSession", { token }, deadlineMs);
    return res.revoked;
  }

  /** `GetSandboxLogs`. */
  getSandboxLogs(req: Wire<GetSandboxLogsRequest>): Promise<GetSandboxLogsResponse> {
    return this.#unary("GetSandboxLogs", req);
  }

  /** `WatchSandbox`. */
  watchSandbox(req: Wire<WatchSandboxRequest>): ServerStream<SandboxStreamEvent> {
    return this.#stream("WatchSandbox", req);
  }

  /** `ExecSandbox`. */
  execSandbox(req: Wire<ExecSandboxRequest>): ServerStream<ExecSandboxEvent> {
    return this.#stream("ExecSandbox", req);
  }

  /** Closes the channel. */
  close(): void {
    this.#client.close();
  }
}
