/**
 * The guest image in one step (`vm:setup`, then `vm:rootfs`), for the
 * installed `openshell gateway start`: progress lines on stderr, and on
 * stdout only the runtime directory to boot from (`<cache>/runtime-<key>`,
 * never the `current` link, which another build may repoint). A second run
 * with unchanged inputs does no work.
 *
 * ```
 * deno run -A driver_vm/image/build.ts      # installed as <root>/lib/openshell/openshell-vm-image
 * ```
 *
 * @module
 */
import { ensureRuntime } from "./rootfs.ts";
import { setup } from "./setup.ts";

/** Runs setup and the runtime build; returns the runtime dir. */
export async function buildImage(log: (line: string) => void): Promise<string> {
  const t0 = performance.now();
  log("checking host packages, the qemu user and the kernel");
  await setup();
  const rt = await ensureRuntime({ log: (l) => log(l) });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  log(rt.built ? `guest image built in ${secs} s: ${rt.dir}` : `guest image up to date: ${rt.dir}`);
  return rt.dir;
}

if (import.meta.main) {
  const say = (line: string) => console.error(`guest image: ${line}`);
  try {
    console.log(await buildImage(say));
  } catch (err) {
    say(`error: ${(err as Error).message}`);
    Deno.exit(1);
  }
}
