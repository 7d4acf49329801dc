/**
 * openshell-deno's image API (`ListImages`, `BuildImage`, `ImportImage`,
 * `DeleteImage`): checked here, answered by the compute driver, which owns
 * the images (driver_vm/images.ts). A driver without images answers
 * UNIMPLEMENTED; a gateway without a driver FAILED_PRECONDITION.
 *
 * Bounds: names, packages and scripts as `core/images.ts` says; an import
 * announces its size (at most {@link MAX_IMPORT_BYTES}), may not send more,
 * and sends at most {@link MAX_IMPORT_CHUNK_BYTES} per message; the upload
 * is passed on with backpressure (nothing is buffered beyond grpc-js's
 * windows). Build progress reaches a slow client as far as its buffer
 * allows; lines past it are counted and dropped, never queued.
 *
 * @module
 */
import type * as grpc from "@grpc/grpc-js";
import {
  buildProblem,
  imageNameProblem,
  MAX_IMPORT_BYTES,
  MAX_IMPORT_CHUNK_BYTES,
} from "../core/images.ts";
import type { Logger } from "../core/log.ts";
import type { ImageResponse, ImportImageChunk, OpenShellHandlers, Wire } from "../core/protocol.ts";
import { Code, StatusError } from "../core/status.ts";
import { capLine } from "../core/text.ts";
import type { ComputeRuntime } from "./compute.ts";
import type { ComputeDriver } from "./driver.ts";
import { failStream, toWireStatus, unary } from "./rpc.ts";

/** Options of {@link ImageService}. */
export interface ImageServiceOptions {
  compute: ComputeRuntime;
  log: Logger;
}

function need<K extends keyof ComputeDriver>(
  driver: ComputeDriver,
  method: K,
): NonNullable<ComputeDriver[K]> {
  const fn = driver[method];
  if (!fn) throw new StatusError(Code.UNIMPLEMENTED, "the compute driver has no images");
  return (fn as (...a: unknown[]) => unknown).bind(driver) as NonNullable<ComputeDriver[K]>;
}

function invalid(problem: string | undefined): void {
  if (problem) throw new StatusError(Code.INVALID_ARGUMENT, problem);
}

/** Handlers of the image RPCs. */
export class ImageService {
  readonly #o: ImageServiceOptions;

  /** Creates the service. */
  constructor(options: ImageServiceOptions) {
    this.#o = options;
  }

  /** grpc-js handlers keyed by method name. */
  handlers(): Pick<OpenShellHandlers, "ListImages" | "DeleteImage" | "BuildImage" | "ImportImage"> {
    const { compute, log } = this.#o;
    return {
      ListImages: unary(log, async () => {
        const driver = await compute.driverFor("images");
        return { images: await need(driver, "listImages")() };
      }),
      DeleteImage: unary(log, async (req) => {
        invalid(imageNameProblem(req.name));
        const driver = await compute.driverFor("images");
        const deleted = await need(driver, "deleteImage")(req.name);
        if (deleted) log.info("image deleted", { name: req.name });
        return { deleted };
      }),
      BuildImage: (call) => this.#build(call),
      ImportImage: (call, cb) => {
        this.#import(call).then(
          (res) => cb(null, res),
          (err) => cb(toWireStatus(err, log) as grpc.ServiceError),
        );
      },
    };
  }

  /** `BuildImage`: checks the request, then streams the driver's progress and the image. */
  #build(call: BuildCall): void {
    const { compute, log } = this.#o;
    const progress = progressWriter(call);
    (async () => {
      const r = call.request;
      invalid(imageNameProblem(r.name));
      invalid(buildProblem(r.packages, r.script));
      const driver = await compute.driverFor("images");
      log.info("image build", { name: r.name, packages: r.packages.join(",") });
      const image = await need(driver, "buildImage")(
        { name: r.name, packages: r.packages, script: r.script },
        progress.line,
      );
      if (!progress.open) return;
      call.write({ image });
      call.end();
    })().catch((err) => failStream(call, err, log));
  }

  /** `ImportImage`: the header, checked, then the tarball passed on to the driver as it comes. */
  async #import(call: AsyncIterable<ImportImageChunk>): Promise<Wire<ImageResponse>> {
    const it = call[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.payload !== "header") {
      throw new StatusError(Code.INVALID_ARGUMENT, "an import starts with its header");
    }
    const { name, size_bytes: size } = first.value.header;
    invalid(imageNameProblem(name));
    if (!Number.isSafeInteger(size) || size < 1 || size > MAX_IMPORT_BYTES) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `size_bytes must be 1 to ${MAX_IMPORT_BYTES} (the tarball's exact size)`,
      );
    }
    const driver = await this.#o.compute.driverFor("images");
    this.#o.log.info("image import", { name, size_bytes: size });
    const image = await need(driver, "importImage")(
      { name, sizeBytes: size },
      importData(it, size),
    );
    return { image };
  }
}

/** A `BuildImage` call as the handler sees it. */
type BuildCall = Parameters<OpenShellHandlers["BuildImage"]>[0];

/**
 * Progress lines for a build's client: each capped at 2 KiB, written as far
 * as the client's buffer allows; lines past it are counted and dropped
 * (one line saying how many once it drains), never queued. `open` turns
 * false when the client goes away.
 */
function progressWriter(call: BuildCall): { line: (text: string) => void; readonly open: boolean } {
  let open = true;
  let blocked = false;
  let dropped = 0;
  const stop = () => open = false;
  call.on("cancelled", stop);
  call.on("close", stop);
  call.on("drain", () => {
    blocked = false;
    if (dropped && open) {
      call.write({ line: `(${dropped} progress lines dropped: the client was slow)` });
      dropped = 0;
    }
  });
  return {
    line: (text: string) => {
      if (!open) return;
      if (blocked) {
        dropped++;
        return;
      }
      if (!call.write({ line: capLine(text, 2048) })) blocked = true;
    },
    get open() {
      return open;
    },
  };
}

/**
 * The tarball's bytes after an import's header: only data messages, each
 * at most {@link MAX_IMPORT_CHUNK_BYTES}, and no more than the `size` the
 * header announced.
 */
async function* importData(
  it: AsyncIterator<ImportImageChunk>,
  size: number,
): AsyncGenerator<Uint8Array> {
  let received = 0;
  while (true) {
    const next = await it.next();
    if (next.done) return;
    if (next.value.payload !== "data") {
      throw new StatusError(Code.INVALID_ARGUMENT, "only data may follow the header");
    }
    const chunk = next.value.data;
    if (chunk.length > MAX_IMPORT_CHUNK_BYTES) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `an import chunk holds at most ${MAX_IMPORT_CHUNK_BYTES} bytes`,
      );
    }
    received += chunk.length;
    if (received > size) {
      throw new StatusError(
        Code.INVALID_ARGUMENT,
        `the upload is longer than the ${size} bytes its header announced`,
      );
    }
    yield chunk;
  }
}
