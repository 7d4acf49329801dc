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
  type Image,
  type ImageProgress,
  type IssueSupervisorCredentialsResponse,
  type ListSandboxesResponse,
  OpenShellClient,
  type Sandbox,
  type SandboxResponse,
  type SandboxStreamEvent,
  type WatchSandboxRequest,
  type Wire,
} from "../core/protocol.ts";
import { Code, codeName } from "../core/status.ts";
import {
  describeTlsDrop,
  describeTlsFailure,
  grpcTlsCredentials,
  isClientCertificateRefusal,
} from "../core/tls.ts";
import { type GatewayEndpoint, importBundleCommand, type TlsMaterial } from "./config.ts";
import { CliError } from "./errors.ts";

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

function firstLine(text: string): string {
  return text.split("\n")[0].trim();
}

/** What {@link describeGrpcError} knows about the connection besides its URL. */
export interface ConnectionFacts {
  /** A client certificate is configured (https). */
  clientCertificate?: boolean;
  /** The gateway's registered name. */
  name?: string;
}

/**
 * A connection the peer closed before HTTP/2 came up (grpc-js reports those
 * as "No connection established", and a gateway that refuses the client's
 * certificate never sends its HTTP/2 settings).
 */
const DROPPED =
  /^No connection established\..*(Failed to connect|EPIPE|ECONNRESET|socket hang up|disconnected before secure TLS|Socket closed)/i;

/**
 * A one-line message for a failed call. Connection failures name the gateway
 * and the cause (TLS failures say what to do); errors the gateway returned
 * keep its message.
 */
export function describeGrpcError(
  err: unknown,
  endpoint: GatewayEndpoint,
  facts: ConnectionFacts = {},
): string {
  const e = err as Partial<grpc.ServiceError>;
  if (typeof e?.code !== "number") return firstLine((err as Error)?.message ?? String(err));
  const details = firstLine(e.details ?? e.message ?? "");
  const where = endpoint.url;
  if (e.code === Code.UNAVAILABLE || e.code === Code.DEADLINE_EXCEEDED) {
    const transport =
      /No connection established|Connection dropped|Failed to connect|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ECONNRESET|EPIPE|Requires net access|certificate|SSL|TLS|handshake|socket|LB pick|Name resolution failed/i
        .test(details) || details === "" || /^Deadline exceeded/i.test(details);
    if (transport) {
      let cause = details.replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\s*$/, "")
        .replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\.?\s*Resolution note:.*$/, "")
        .replace(/\.?\s*Resolution note:.*$/, "");
      if (/Requires net access to "([^"]+)"/.test(details)) {
        const target = details.match(/Requires net access to "([^"]+)"/)![1];
        return `not permitted to connect to ${target} (the CLI's network grant does not cover it)`;
      }
      const hint = { importBundle: importBundleCommand(facts.name, where) };
      const https = endpoint.scheme === "https";
      // A refused client certificate shows up as an alert or, more often, a closed
      // connection: both get the same line.
      if (https && isClientCertificateRefusal(details)) {
        return describeTlsDrop(where, { ...hint, clientCertificate: !!facts.clientCertificate });
      }
      const tlsLine = https ? describeTlsFailure(details, where, hint) : undefined;
      if (tlsLine) return tlsLine;
      if (/ECONNREFUSED/.test(details)) cause = "connection refused";
      else if (/ENOTFOUND|EAI_AGAIN|Name resolution failed/i.test(details)) {
        cause = `host "${endpoint.host}" not found (check the host name in the URL)`;
      } else if (https && e.code === Code.UNAVAILABLE && DROPPED.test(details)) {
        return describeTlsDrop(where, { ...hint, clientCertificate: !!facts.clientCertificate });
      } else if (!https && e.code === Code.UNAVAILABLE && DROPPED.test(details)) {
        return `the gateway at ${where} closed the connection before HTTP/2 started: if it ` +
          "serves TLS (its default), use an https:// URL and import its client bundle " +
          `(${importBundleCommand(facts.name, where.replace(/^http:/, "https:"))}, ` +
          "DIR being the gateway's <state-dir>/pki)";
      } else if (/ECONNRESET/.test(details)) cause = "connection reset";
      else if (e.code === Code.DEADLINE_EXCEEDED) {
        cause = https
          ? "no answer in time (a plaintext gateway never completes a TLS handshake: if it " +
            "runs with --disable-tls, use an http:// URL)"
          : "no answer in time";
      } else {cause = cause.replace(/^No connection established\.\s*Last error:\s*/i, "")
          .replace(/^Error:\s*/, "") || codeName(e.code);}
      return `cannot reach the gateway at ${where}: ${cause}`;
    }
  }
  if (e.code === Code.UNIMPLEMENTED) {
    return `the gateway at ${where} does not support this request${details ? ` (${details})` : ""}`;
  }
  if (e.code === Code.UNAUTHENTICATED || e.code === Code.PERMISSION_DENIED) {
    return `the gateway refused the request: ${details || codeName(e.code)}`;
  }
  return details || `request failed (${codeName(e.code)})`;
}

/** The gRPC status code of an error, if it carries one. */
export function grpcCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "number" ? code : undefined;
}

/** A gRPC error as a {@link CliError} (keeps the status code readable via `grpcCode`). */
export class GatewayError extends CliError {
  /** The gRPC status code. */
  readonly code: number;

  /** Wraps a failed call's error. */
  constructor(err: unknown, endpoint: GatewayEndpoint, facts: ConnectionFacts = {}) {
    super(describeGrpcError(err, endpoint, facts));
    this.name = "GatewayError";
    this.code = grpcCode(err) ?? Code.UNKNOWN;
  }
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

  /** `StopSandbox`: resolves once its compute is stopped (a clean shutdown takes up to ~40 s). */
  async stopSandbox(name: string): Promise<Sandbox> {
    const res = await this.#unary<SandboxResponse>("StopSandbox", { name }, 120_000);
    if (!res.sandbox) throw new CliError("the gateway answered StopSandbox without a sandbox");
    return res.sandbox;
  }

  /** `StartSandbox`: resolves once its compute is starting (READY comes later). */
  async startSandbox(name: string): Promise<Sandbox> {
    const res = await this.#unary<SandboxResponse>("StartSandbox", { name }, 150_000);
    if (!res.sandbox) throw new CliError("the gateway answered StartSandbox without a sandbox");
    return res.sandbox;
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

  /** `ListImages` (openshell-deno only). */
  async listImages(): Promise<Image[]> {
    return (await this.#unary<{ images: Image[] }>("ListImages", {})).images;
  }

  /** `DeleteImage`; false when there was no such image. */
  async deleteImage(name: string): Promise<boolean> {
    return (await this.#unary<{ deleted: boolean }>("DeleteImage", { name })).deleted;
  }

  /** `BuildImage`: progress lines, then the image. */
  buildImage(
    req: { name: string; packages: string[]; script: string },
  ): ServerStream<ImageProgress> {
    return this.#stream("BuildImage", req);
  }

  /**
   * `ImportImage`: the header, then `data` (exactly `sizeBytes` bytes) in
   * chunks, waiting whenever the gateway's side is full.
   */
  importImage(
    header: { name: string; sizeBytes: number },
    data: AsyncIterable<Uint8Array>,
  ): Promise<Image> {
    type Writable = grpc.ClientWritableStream<unknown>;
    const fn = (this.#client as unknown as {
      ImportImage(
        meta: grpc.Metadata,
        opts: grpc.CallOptions,
        cb: grpc.requestCallback<{ image: Image }>,
      ): Writable;
    }).ImportImage.bind(this.#client);
    let call!: Writable;
    const result = new Promise<Image>((resolve, reject) => {
      call = fn(new grpc.Metadata(), {}, (err, res) => {
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
