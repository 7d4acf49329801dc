/**
 * The gateway's view of a compute driver: the {@link ComputeDriver}
 * interface the compute runtime uses, its gRPC implementation over the
 * driver's Unix socket, and the driver child process.
 *
 * @module
 */
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "../core/log.ts";
import {
  type BuildImageRequest,
  ComputeDriverClient,
  type DriverGetCapabilitiesResponse,
  type DriverImageProgress,
  type DriverImportImageChunk,
  type DriverSandbox,
  type DriverWatchSandboxesEvent,
  type Image,
  unaryCall,
  type UnaryMethod,
  type Wire,
} from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { passChildLine, removeSocket, spawnChild, waitUntilAnswering } from "./child_process.ts";

/** Handlers of {@link ComputeDriver.watch}. */
export interface WatchHandlers {
  /** One event from the driver. */
  event(event: DriverWatchSandboxesEvent): void;
  /** The stream ended (with the error, if any). */
  end(err?: Error): void;
}

/** What the compute runtime needs from a driver. */
export interface ComputeDriver {
  capabilities(): Promise<DriverGetCapabilitiesResponse>;
  validateCreate(sandbox: Wire<DriverSandbox>): Promise<void>;
  create(sandbox: Wire<DriverSandbox>): Promise<void>;
  /** True when the driver deleted something. */
  delete(sandboxId: string, sandboxName: string): Promise<boolean>;
  /** Stops the sandbox's compute, keeping its state (idempotent). */
  stop(sandboxId: string, sandboxName: string): Promise<void>;
  /** Starts a stopped sandbox's compute again (idempotent). */
  start(sandboxId: string, sandboxName: string): Promise<void>;
  list(): Promise<DriverSandbox[]>;
  /** Starts watching; returns a function that cancels the watch. */
  watch(handlers: WatchHandlers): () => void;
  /** The driver's images (openshell-deno only); absent or UNIMPLEMENTED: none. */
  listImages?(): Promise<Image[]>;
  /** Builds an image, `onLine` getting its progress; resolves with the image. */
  buildImage?(
    req: BuildImageRequest,
    onLine: (line: string) => void,
  ): Promise<Image>;
  /** Imports a root file system tarball of `sizeBytes` bytes. */
  importImage?(
    header: { name: string; sizeBytes: number },
    data: AsyncIterable<Uint8Array>,
  ): Promise<Image>;
  /** True when the image was deleted. */
  deleteImage?(name: string): Promise<boolean>;
  /** Stops the driver and releases the connection. */
  close(): Promise<void>;
}

/** A {@link ComputeDriver} over a grpc-js client of the ComputeDriver service. */
export class GrpcComputeDriver implements ComputeDriver {
  readonly #client: ComputeDriverClient;
  readonly #calls = new Set<grpc.ClientReadableStream<unknown>>();

  /** Wraps a client connected to `target` (e.g. `unix:/state/compute-driver.sock`). */
  constructor(target: string) {
    this.#client = new ComputeDriverClient(target, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 16 * 1024 * 1024,
    });
  }

  async #unary<Req, Res>(
    method: UnaryMethod<Req, Res>,
    request: NoInfer<Req>,
    timeoutMs = 30_000,
  ): Promise<Res> {
    try {
      return await unaryCall(this.#client, method, request, { deadline: Date.now() + timeoutMs });
    } catch (e) {
      const err = e as grpc.ServiceError;
      throw new StatusError((err.code ?? Code.UNKNOWN) as Code, err.details || err.message);
    }
  }

  capabilities(): Promise<DriverGetCapabilitiesResponse> {
    return this.#unary(this.#client.GetCapabilities, {}, 5_000);
  }

  async validateCreate(sandbox: Wire<DriverSandbox>): Promise<void> {
    await this.#unary(this.#client.ValidateSandboxCreate, { sandbox });
  }

  async create(sandbox: Wire<DriverSandbox>): Promise<void> {
    await this.#unary(this.#client.CreateSandbox, { sandbox }, 120_000);
  }

  async delete(sandboxId: string, sandboxName: string): Promise<boolean> {
    const res = await this.#unary(
      this.#client.DeleteSandbox,
      { sandbox_id: sandboxId, sandbox_name: sandboxName },
      60_000,
    );
    return res.deleted;
  }

  async stop(sandboxId: string, sandboxName: string): Promise<void> {
    // A clean guest shutdown may take its grace period (30 s) plus the kill.
    await this.#unary(
      this.#client.StopSandbox,
      { sandbox_id: sandboxId, sandbox_name: sandboxName },
      90_000,
    );
  }

  async start(sandboxId: string, sandboxName: string): Promise<void> {
    await this.#unary(
      this.#client.StartSandbox,
      { sandbox_id: sandboxId, sandbox_name: sandboxName },
      120_000,
    );
  }

  async list(): Promise<DriverSandbox[]> {
    return (await this.#unary(this.#client.ListSandboxes, {})).sandboxes;
  }

  async listImages(): Promise<Image[]> {
    return (await this.#unary(this.#client.ListImages, {})).images;
  }

  async deleteImage(name: string): Promise<boolean> {
    return (await this.#unary(this.#client.DeleteImage, { name })).deleted;
  }

  buildImage(
    req: BuildImageRequest,
    onLine: (line: string) => void,
  ): Promise<Image> {
    const call = this.#client.BuildImage(req, { deadline: Date.now() + IMAGE_DEADLINE_MS });
    this.#calls.add(call);
    return new Promise<Image>((resolve, reject) => {
      let image: Image | undefined;
      call.on("data", (e: DriverImageProgress) => {
        if (e.payload === "line") onLine(e.line);
        else if (e.payload === "image") image = e.image;
      });
      call.on("error", (err: grpc.ServiceError) => {
        this.#calls.delete(call);
        reject(new StatusError((err.code ?? Code.UNKNOWN) as Code, err.details || err.message));
      });
      call.on("end", () => {
        this.#calls.delete(call);
        if (image) resolve(image);
        else reject(new StatusError(Code.INTERNAL, "the driver ended the build without an image"));
      });
    });
  }

  async importImage(
    header: { name: string; sizeBytes: number },
    data: AsyncIterable<Uint8Array>,
  ): Promise<Image> {
    let call!: grpc.ClientWritableStream<Wire<DriverImportImageChunk>>;
    const result = new Promise<Image>((resolve, reject) => {
      call = this.#client.ImportImage({ deadline: Date.now() + IMAGE_DEADLINE_MS }, (err, res) => {
        if (err) {
          reject(new StatusError((err.code ?? Code.UNKNOWN) as Code, err.details || err.message));
        } else resolve(res!.image!);
      });
    });
    let settled = false;
    const done = result.then(() => {}, () => {}).finally(() => settled = true);
    try {
      call.write({ header: { name: header.name, size_bytes: header.sizeBytes } });
      for await (const chunk of data) {
        // The driver answered already (an error): stop sending.
        if (settled) break;
        // Backpressure: wait while the driver's side is full (or until it answers).
        if (!call.write({ data: chunk })) {
          await Promise.race([new Promise<void>((r) => call.once("drain", () => r())), done]);
        }
      }
      call.end();
    } catch (err) {
      call.cancel();
      throw err;
    }
    return await result;
  }

  watch(handlers: WatchHandlers): () => void {
    const call = this.#client.WatchSandboxes({});
    this.#calls.add(call);
    let ended = false;
    const finish = (err?: Error) => {
      if (ended) return;
      ended = true;
      this.#calls.delete(call);
      handlers.end(err);
    };
    call.on("data", (e: DriverWatchSandboxesEvent) => handlers.event(e));
    call.on(
      "error",
      (err: grpc.ServiceError) => finish(err.code === grpc.status.CANCELLED ? undefined : err),
    );
    call.on("end", () => finish());
    return () => call.cancel();
  }

  close(): Promise<void> {
    for (const call of this.#calls) call.cancel();
    this.#client.close();
    return Promise.resolve();
  }
}

/** How long an image build or import may take through the driver. */
export const IMAGE_DEADLINE_MS = 65 * 60 * 1000;

/** Options of {@link startDriverProcess}. */
export interface DriverProcessOptions {
  /** The driver executable. */
  binary: string;
  /** Arguments after the executable. */
  args: string[];
  /** The Unix socket it serves on. */
  socketPath: string;
  /** How long to wait for `GetCapabilities` to answer. */
  readyTimeoutMs?: number;
  log: Logger;
  /** Aborting while waiting kills the driver and rejects. */
  signal?: AbortSignal;
}

/** A running driver process with its client. */
export interface DriverProcess {
  driver: ComputeDriver;
  capabilities: DriverGetCapabilitiesResponse;
  /** Resolves with the exit code when the process ends. */
  exited: Promise<number>;
}

/**
 * Writes one line of the driver's output to the gateway log once (see
 * {@link passChildLine}; other text is an `info` line of the `driver`
 * component).
 */
export function passDriverLine(log: Logger, line: string): void {
  passChildLine(log, line, "driver");
}

/**
 * Starts the driver binary, forwards its output to the gateway log, and
 * waits until it answers `GetCapabilities`. A driver that exits or does not
 * answer in time is an error (and is killed). Stopping the returned driver
 * sends SIGTERM, waits up to 10 s, then SIGKILL — the gRPC channel is never
 * closed gracefully first.
 */
export async function startDriverProcess(options: DriverProcessOptions): Promise<DriverProcess> {
  await removeSocket(options.socketPath);
  const child = spawnChild({
    binary: options.binary,
    args: options.args,
    what: "compute driver",
    component: "driver",
    log: options.log,
  });
  const grpcDriver = new GrpcComputeDriver(`unix:${options.socketPath}`);
  let capabilities: DriverGetCapabilitiesResponse;
  try {
    capabilities = await waitUntilAnswering(child, () => grpcDriver.capabilities(), {
      what: "compute driver",
      probeName: "GetCapabilities",
      timeoutMs: options.readyTimeoutMs,
      signal: options.signal,
    });
  } catch (err) {
    await grpcDriver.close();
    throw err;
  }

  const driver: ComputeDriver = {
    capabilities: () => grpcDriver.capabilities(),
    validateCreate: (s) => grpcDriver.validateCreate(s),
    create: (s) => grpcDriver.create(s),
    delete: (id, name) => grpcDriver.delete(id, name),
    stop: (id, name) => grpcDriver.stop(id, name),
    start: (id, name) => grpcDriver.start(id, name),
    list: () => grpcDriver.list(),
    watch: (h) => grpcDriver.watch(h),
    listImages: () => grpcDriver.listImages(),
    buildImage: (r, onLine) => grpcDriver.buildImage(r, onLine),
    importImage: (h, d) => grpcDriver.importImage(h, d),
    deleteImage: (n) => grpcDriver.deleteImage(n),
    close: async () => {
      await child.stop();
      await grpcDriver.close();
    },
  };
  return { driver, capabilities, exited: child.exited };
}
