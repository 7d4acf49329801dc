/**
 * `deno task test` runs this first: it makes the host ready for the test
 * suite, from the one table in `core/host_setup.ts` — the Debian packages
 * whose programs the tests spawn (cpio, OpenSSH, socat, tmux, qemu …), the
 * accounts they use (`sshd`, `sandbox`, `openshell-vm`) and `/run/sshd`.
 *
 * As root it installs what is missing (apt-get) and creates the accounts;
 * otherwise it stops with one line naming the command to run. When
 * everything is there it does no work and spawns nothing (a few
 * milliseconds). `OPENSHELL_TEST_PREPARE=0` skips it.
 *
 * @module
 */
import { ensureHost, HostSetupError } from "../core/host_setup.ts";

/** Runs the preparation; returns the exit status. */
export async function prepare(
  env: (name: string) => string | undefined = (n) => Deno.env.get(n),
): Promise<number> {
  if (env("OPENSHELL_TEST_PREPARE") === "0") return 0;
  const t0 = performance.now();
  const say = (line: string) => console.error(`testing/prepare: ${line}`);
  try {
    const done = await ensureHost("test", { log: say });
    if (done.installed.length > 0 || done.steps.length > 0) {
      say(`host ready in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
    return 0;
  } catch (err) {
    if (err instanceof HostSetupError) {
      say(`${err.message} (or skip this check: OPENSHELL_TEST_PREPARE=0)`);
      return 1;
    }
    throw err;
  }
}

if (import.meta.main) Deno.exit(await prepare());
