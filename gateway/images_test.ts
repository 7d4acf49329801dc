import assert from "node:assert/strict";
import * as grpc from "@grpc/grpc-js";
import type { Duplex } from "node:stream";
import { MAX_IMPORT_CHUNK_BYTES } from "../core/images.ts";
import { Logger } from "../core/log.ts";
import {
  type BuildImageRequest,
  type Image,
  type ImageProgress,
  type ImageResponse,
  type ImportImageChunk,
  OpenShellClient,
  unaryCall,
  type Wire,
} from "../core/protocol.ts";
import { SessionRegistry } from "../core/registry.ts";
import { Code } from "../core/status.ts";
import { ComputeRuntime } from "./compute.ts";
import type { ComputeDriver } from "./driver.ts";
import { ImageService } from "./images.ts";
import { MAX_GRPC_RECEIVE } from "./server.ts";
import { SqliteStore } from "./store.ts";

const IMAGE: Image = {
  name: "py",
  id: "k1",
  size_bytes: 10,
  created_at_ms: 1,
  source: "build",
  packages: ["cowsay"],
  sandboxes: 0,
};

/** A driver with images that records what reached it. */
function imageDriver(calls: string[], uploads: Uint8Array[][]): ComputeDriver {
  return {
    capabilities: () => Promise.reject(new Error("unused")),
    validateCreate: () => Promise.resolve(),
    create: () => Promise.resolve(),
    delete: () => Promise.resolve(true),
    stop: () => Promise.resolve(),
    start: () => Promise.resolve(),
    list: () => Promise.resolve([]),
    watch: () => () => {},
    close: () => Promise.resolve(),
    listImages: () => {
      calls.push("list");
      return Promise.resolve([IMAGE]);
    },
    buildImage: (req, onLine) => {
      calls.push(`build ${req.name} ${req.packages.join(",")}`);
      onLine("debootstrap: Retrieving InRelease");
      onLine("\x1b[31mred\x1b[0m " + "x".repeat(10_000));
      return Promise.resolve({ ...IMAGE, name: req.name });
    },
    importImage: async (h, data) => {
      calls.push(`import ${h.name} ${h.sizeBytes}`);
      const got: Uint8Array[] = [];
      uploads.push(got);
      for await (const c of data) got.push(c);
      return { ...IMAGE, name: h.name, source: "import" };
    },
    deleteImage: (name) => {
      calls.push(`delete ${name}`);
      return Promise.resolve(name === "py");
    },
  };
}

async function serve(driver: ComputeDriver | undefined) {
  const dir = await Deno.makeTempDir({ prefix: "gwimg" });
  const store = SqliteStore.open();
  const registry = new SessionRegistry<Duplex>();
  const compute = new ComputeRuntime({
    store,
    registry,
    driver,
    log: new Logger({ level: "error", sink: () => {} }),
  });
  // The gateway's own receive limit (gateway/server.ts), so the service's checks are what answer.
  const server = new grpc.Server({ "grpc.max_receive_message_length": MAX_GRPC_RECEIVE });
  server.addService(
    OpenShellClient.service,
    new ImageService({ compute, log: new Logger({ level: "error", sink: () => {} }) }).handlers(),
  );
  await new Promise<void>((res, rej) =>
    server.bindAsync(
      `unix:${dir}/s.sock`,
      grpc.ServerCredentials.createInsecure(),
      (e) => e ? rej(e) : res(),
    )
  );
  const client = new OpenShellClient(
    `unix:${dir}/s.sock`,
    grpc.credentials.createInsecure(),
  );
  const build = async (req: Wire<BuildImageRequest>) => {
    const events: ImageProgress[] = [];
    for await (const e of client.BuildImage(req)) events.push(e as ImageProgress);
    return events;
  };
  const upload = (chunks: Wire<ImportImageChunk>[]) =>
    new Promise<ImageResponse>((res, rej) => {
      const call = client.ImportImage((e, v) => e ? rej(e) : res(v!));
      for (const c of chunks) call.write(c);
      call.end();
    });
  return {
    client,
    build,
    upload,
    async [Symbol.asyncDispose]() {
      client.close();
      server.forceShutdown();
      registry.close();
      store.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function status(c: Code, re?: RegExp) {
  return (e: grpc.ServiceError) => {
    assert.equal(e.code, c, e.details);
    if (re) assert.match(e.details, re);
    return true;
  };
}

Deno.test("image API: list, build (progress, then the image) and delete pass through to the driver", async () => {
  const calls: string[] = [];
  await using s = await serve(imageDriver(calls, []));
  assert.deepEqual((await unaryCall(s.client, s.client.ListImages, {})).images, [IMAGE]);
  const events = await s.build({ name: "tools", packages: ["cowsay"], script: "" });
  assert.equal(events.length, 3);
  assert.deepEqual(events[0], { payload: "line", line: "debootstrap: Retrieving InRelease" });
  assert.ok(events[1].payload === "line" && events[1].line.length <= 2048 + 40, "lines capped");
  assert.ok(events[2].payload === "image" && events[2].image.name === "tools");
  assert.deepEqual(
    (await unaryCall(s.client, s.client.DeleteImage, { name: "py" })).deleted,
    true,
  );
  assert.deepEqual(calls, ["list", "build tools cowsay", "delete py"]);
});

Deno.test("image API: bad names, packages and scripts never reach the driver", async () => {
  const calls: string[] = [];
  await using s = await serve(imageDriver(calls, []));
  await assert.rejects(s.build({ name: "../x" }), status(Code.INVALID_ARGUMENT, /image names/));
  await assert.rejects(
    s.build({ name: "ok", packages: ["a b"] }),
    status(Code.INVALID_ARGUMENT, /package name/),
  );
  await assert.rejects(
    s.build({ name: "ok", script: "x".repeat(70_000) }),
    status(Code.INVALID_ARGUMENT, /at most 65536/),
  );
  await assert.rejects(
    unaryCall(s.client, s.client.DeleteImage, { name: "default" }),
    status(Code.INVALID_ARGUMENT, /built-in/),
  );
  assert.deepEqual(calls, []);
});

Deno.test("image API: an import is its header then at most the bytes it announced, in bounded chunks", async () => {
  const calls: string[] = [];
  const uploads: Uint8Array[][] = [];
  await using s = await serve(imageDriver(calls, uploads));
  const data = new Uint8Array(3000).fill(7);
  const res = await s.upload([
    { header: { name: "mine", size_bytes: 3000 } },
    { data: data.subarray(0, 1000) },
    { data: data.subarray(1000) },
  ]);
  assert.equal(res.image!.source, "import");
  assert.equal(uploads[0].reduce((n, c) => n + c.length, 0), 3000);
  await assert.rejects(
    s.upload([{ header: { name: "more", size_bytes: 10 } }, { data: data }]),
    status(Code.INVALID_ARGUMENT, /longer than the 10 bytes/),
  );
  await assert.rejects(
    s.upload([{ data }]),
    status(Code.INVALID_ARGUMENT, /starts with its header/),
  );
  await assert.rejects(
    s.upload([
      { header: { name: "big", size_bytes: MAX_IMPORT_CHUNK_BYTES + 1 } },
      { data: new Uint8Array(MAX_IMPORT_CHUNK_BYTES + 1) },
    ]),
    status(Code.INVALID_ARGUMENT, /at most 4194304 bytes/),
  );
  await assert.rejects(
    s.upload([{ header: { name: "zero", size_bytes: 0 } }]),
    status(Code.INVALID_ARGUMENT, /size_bytes/),
  );
});

Deno.test("image API: no driver is FAILED_PRECONDITION; a driver without images UNIMPLEMENTED", async () => {
  {
    await using s = await serve(undefined);
    await assert.rejects(
      unaryCall(s.client, s.client.ListImages, {}),
      status(Code.FAILED_PRECONDITION, /--drivers none/),
    );
  }
  const plain = imageDriver([], []);
  delete plain.listImages;
  await using s = await serve(plain);
  await assert.rejects(
    unaryCall(s.client, s.client.ListImages, {}),
    status(Code.UNIMPLEMENTED, /no images/),
  );
});
