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
  type BuildImageRequest,
  type CreateSandboxRequest,
  type CreateSshSessionResponse,
  type ExecSandboxEvent,
  type ExecSandboxRequest,
  type GetSandboxLogsRequest,
  type GetSandboxLogsResponse,
  type GetSandboxPolicyStatusResponse,
  type HealthResponse,
  type Image,
  type ImageProgress,
  type ImportImageChunk,
  type IssueSupervisorCredentialsResponse,
  OpenShellClient,
  type Sandbox,
  type SandboxPolicy,
  type SandboxPolicyRevision,
  type SandboxStreamEvent,
  type ServerStreamMethod,
  unaryCall,
  type UnaryMethod,
  type UpdateConfigResponse,
  type WatchSandboxRequest,
  type Wire,
} from "../core/protocol.ts";
import { hostPort } from "../core/endpoint.ts";
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
  return hostPort(endpoint.host, endpoint.port);
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

/** The `OpenShell` API of one gateway. */
export class GatewayClient {
  /** The gateway's URL. */
  readonly endpoint: GatewayEndpoint;
  readonly #client: OpenShellClient;
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

  async #unary<Req, Res>(
    method: UnaryMethod<Req, Res>,
    req: NoInfer<Req>,
    deadlineMs = DEFAULT_DEADLINE_MS,
  ): Promise<Res> {
    try {
      return await unaryCall(this.#client, method, req, { deadline: Date.now() + deadlineMs });
    } catch (err) {
      throw new GatewayError(err, this.endpoint, this.#facts);
    }
  }

  #stream<Req, T>(method: ServerStreamMethod<Req, T>, req: NoInfer<Req>): ServerStream<T> {
    const call = method.call(this.#client, req, new grpc.Metadata(), {});
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
    return this.#unary(this.#client.Health, {}, deadlineMs);
  }

  /** `CreateSandbox`; returns the created sandbox. */
  async createSandbox(req: Wire<CreateSandboxRequest>): Promise<Sandbox> {
    const res = await this.#unary(this.#client.CreateSandbox, req);
    if (!res.sandbox) throw new CliError("the gateway returned no sandbox");
    return res.sandbox;
  }

  /** `GetSandbox` by name. */
  async getSandbox(name: string): Promise<Sandbox> {
    const res = await this.#unary(this.#client.GetSandbox, { name });
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
      const res = await this.#unary(this.#client.ListSandboxes, {
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
    const res = await this.#unary(this.#client.DeleteSandbox, { name });
    return res.deleted;
  }

  /** `StopSandbox`: resolves once its compute is stopped (a clean shutdown takes up to ~40 s). */
  async stopSandbox(name: string): Promise<Sandbox> {
    const res = await this.#unary(this.#client.StopSandbox, { name }, 120_000);
    if (!res.sandbox) throw new CliError("the gateway answered StopSandbox without a sandbox");
    return res.sandbox;
  }

  /** `StartSandbox`: resolves once its compute is starting (READY comes later). */
  async startSandbox(name: string): Promise<Sandbox> {
    const res = await this.#unary(this.#client.StartSandbox, { name }, 150_000);
    if (!res.sandbox) throw new CliError("the gateway answered StartSandbox without a sandbox");
    return res.sandbox;
  }

  /** `CreateSshSession`. */
  createSshSession(sandboxId: string): Promise<CreateSshSessionResponse> {
    return this.#unary(this.#client.CreateSshSession, { sandbox_id: sandboxId });
  }

  /** `IssueSupervisorCredentials` (openshell-deno's own RPC). */
  issueSupervisorCredentials(name: string): Promise<IssueSupervisorCredentialsResponse> {
    return this.#unary(this.#client.IssueSupervisorCredentials, { name });
  }

  /** `RevokeSshSession`. */
  async revokeSshSession(token: string, deadlineMs = DEFAULT_DEADLINE_MS): Promise<boolean> {
    const res = await this.#unary(this.#client.RevokeSshSession, { token }, deadlineMs);
    return res.revoked;
  }

  /** `GetSandboxLogs`. */
  getSandboxLogs(req: Wire<GetSandboxLogsRequest>): Promise<GetSandboxLogsResponse> {
    return this.#unary(this.#client.GetSandboxLogs, req);
  }

  /** `WatchSandbox`. */
  watchSandbox(req: Wire<WatchSandboxRequest>): ServerStream<SandboxStreamEvent> {
    return this.#stream(this.#client.WatchSandbox, req);
  }

  /** `ExecSandbox`. */
  execSandbox(req: Wire<ExecSandboxRequest>): ServerStream<ExecSandboxEvent> {
    return this.#stream(this.#client.ExecSandbox, req);
  }

  /** `UpdateConfig` with a sandbox's new policy: its version and hash. */
  updatePolicy(name: string, policy: Wire<SandboxPolicy>): Promise<UpdateConfigResponse> {
    return this.#unary(this.#client.UpdateConfig, { name, policy });
  }

  /** `GetSandboxPolicyStatus`: one revision (0 = the latest) and the enforced version. */
  getSandboxPolicyStatus(name: string, version = 0): Promise<GetSandboxPolicyStatusResponse> {
    return this.#unary(this.#client.GetSandboxPolicyStatus, { name, version });
  }

  /** `ListSandboxPolicies`: revisions newest first (at most {@link LIST_PAGE}). */
  async listSandboxPolicies(
    name: string,
    limit: number,
    offset = 0,
  ): Promise<SandboxPolicyRevision[]> {
    return (await this.#unary(this.#client.ListSandboxPolicies, { name, limit, offset }))
      .revisions;
  }

  /** `ListImages` (openshell-deno only). */
  async listImages(): Promise<Image[]> {
    return (await this.#unary(this.#client.ListImages, {})).images;
  }

  /** `DeleteImage`; false when there was no such image. */
  async deleteImage(name: string): Promise<boolean> {
    return (await this.#unary(this.#client.DeleteImage, { name })).deleted;
  }

  /** `BuildImage`: progress lines, then the image. */
  buildImage(
    req: Wire<BuildImageRequest>,
  ): ServerStream<ImageProgress> {
    return this.#stream(this.#client.BuildImage, req);
  }

  /**
   * `ImportImage`: the header, then `data` (exactly `sizeBytes` bytes) in
   * chunks, waiting whenever the gateway's side is full.
   */
  importImage(
    header: { name: string; sizeBytes: number },
    data: AsyncIterable<Uint8Array>,
  ): Promise<Image> {
    let call!: grpc.ClientWritableStream<Wire<ImportImageChunk>>;
    const result = new Promise<Image>((resolve, reject) => {
      call = this.#client.ImportImage(new grpc.Metadata(), {}, (err, res) => {
        if (err) reject(new GatewayError(err, this.endpoint, this.#facts));
        else if (!res?.image) {
          reject(new CliError("the gateway answered ImportImage without an image"));
        } else resolve(res.image);
      });
    });
    let settled = false;
    const done = result.then(() => {}, () => {}).finally(() => settled = true);
    return (async () => {
      call.write({ header: { name: header.name, size_bytes: header.sizeBytes } });
      for await (const chunk of data) {
        if (settled) break;
        if (!call.write({ data: chunk })) {
          await Promise.race([new Promise<void>((r) => call.once("drain", () => r())), done]);
        }
      }
      call.end();
      return await result;
    })();
  }

  /** Closes the channel. */
  close(): void {
    this.#client.close();
  }
}
