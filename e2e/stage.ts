/**
 * Staging for the VM end-to-end run: a driver dir holding an executable
 * `openshell-driver-vm` wrapper that runs the driver through `deno run` with
 * exactly its grants (`exec` keeps the pid, so the gateway stays its parent),
 * and `openshell-image-builder`, the image builder the driver runs for
 * `image build|import`, with its own grants. (The egress proxy's wrapper is
 * `testing/gateway.ts`'s, written by `spawnGateway({ egress: true })`.)
 *
 * @module
 */
import { driverGrants, imageBuilderRunArgs, ROLE_INFO, runArgs } from "../core/grants.ts";
import { REPO_ROOT } from "../core/launcher.ts";
import { shellJoin } from "../core/shell.ts";

/** Options of {@link stageDriverDir}. */
export interface StageOptions {
  /** Directory to create the wrapper in. */
  dir: string;
  /** The driver's state dir (must match what the gateway passes). */
  stateDir: string;
  /** The VM runtime dir. */
  runtimeDir: string;
  /** The gateway the driver carries its guests' connections to. */
  gateway: { host: string; port: number };
  /** The egress proxy's guest socket the gateway passes (`--egress-socket`); absent: no egress. */
  egressSocket?: string;
  qemu?: string;
  setpriv?: string;
  /** Deno binary; default the running one. */
  deno?: string;
}

/** Name of the image builder's wrapper in the driver dir. */
export const IMAGE_BUILDER_BINARY = "openshell-image-builder";

/** The wrapper script text. */
export function driverWrapper(options: StageOptions): string {
  const builder = `${options.dir}/${IMAGE_BUILDER_BINARY}`;
  const grants = driverGrants({
    stateDir: options.stateDir,
    gateway: options.gateway,
    runtimeDir: options.runtimeDir,
    qemu: options.qemu ?? "/usr/bin/qemu-system-x86_64",
    setpriv: options.setpriv ?? "/usr/bin/setpriv",
    imageBuilder: builder,
    egressSocket: options.egressSocket,
  });
  const argv = [
    options.deno ?? Deno.execPath(),
    ...runArgs("driver-vm", grants, { root: REPO_ROOT, args: ["--image-builder", builder] }),
  ];
  return `#!/bin/sh\n# openshell-driver-vm for the e2e: deno run with the driver's exact grants\nexec ${
    shellJoin(argv)
  } "$@"\n`;
}

/** The image builder's wrapper script text. */
export function imageBuilderWrapper(options: StageOptions): string {
  const argv = [
    options.deno ?? Deno.execPath(),
    ...imageBuilderRunArgs(REPO_ROOT, options.stateDir),
  ];
  return `#!/bin/sh\n# openshell-image-builder for the e2e: deno run with the builder's exact grants\n` +
    `exec ${shellJoin(argv)} "$@"\n`;
}

/** Writes `<dir>/openshell-driver-vm` and `<dir>/openshell-image-builder`; returns the driver's path. */
export async function stageDriverDir(options: StageOptions): Promise<string> {
  await Deno.mkdir(options.dir, { recursive: true });
  const builder = `${options.dir}/${IMAGE_BUILDER_BINARY}`;
  await Deno.writeTextFile(builder, imageBuilderWrapper(options), { mode: 0o755 });
  await Deno.chmod(builder, 0o755);
  const path = `${options.dir}/${ROLE_INFO["driver-vm"].binary}`;
  await Deno.writeTextFile(path, driverWrapper(options), { mode: 0o755 });
  await Deno.chmod(path, 0o755);
  return path;
}
