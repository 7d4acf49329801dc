/**
 * TEST FIXTURE — destinations for egress tests that stay on this machine: a
 * network namespace (`osh-egr-<random>`) joined to the host by a veth pair
 * with private addresses `10.213.X.Y/30` (host side `.Y+1`, namespace side
 * `.Y+2`), running `testing/netns_server.ts` on the namespace side.
 * Needs root and `ip`; {@link netnsUnavailable} says why not, for `ignore:`.
 *
 * @module
 */
import { REPO_ROOT } from "../core/launcher.ts";

const IP_CANDIDATES = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

function ipBinary(): string | undefined {
  for (const p of IP_CANDIDATES) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // next
    }
  }
  return undefined;
}

/** Why network namespaces cannot be made here (undefined: they can). */
export function netnsUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "not root";
  if (!ipBinary()) return "no ip(8)";
  return undefined;
}

/** A server in a namespace of its own. */
export interface NetnsServer {
  /** Namespace name. */
  ns: string;
  /** The server's address (namespace side). */
  address: string;
  /** The host's address on the link (an address of this host). */
  hostAddress: string;
  port: number;
  /** Stops the server and removes the namespace and link. */
  close(): Promise<void>;
}

async function ip(args: string[]): Promise<void> {
  const out = await new Deno.Command(ipBinary()!, { args, stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(`ip ${args.join(" ")}: ${new TextDecoder().decode(out.stderr).trim()}`);
  }
}

/** Creates a namespace and link and starts the test HTTP server in it. */
export async function startNetnsServer(): Promise<NetnsServer> {
  const why = netnsUnavailable();
  if (why) throw new Error(`cannot create a network namespace: ${why}`);
  const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 8);
  const ns = `osh-egr-${tag}`;
  const hostIf = `oeh${tag}`;
  const nsIf = `oen${tag}`;
  const x = Math.floor(Math.random() * 256);
  const y = Math.floor(Math.random() * 64) * 4;
  const hostAddress = `10.213.${x}.${y + 1}`;
  const address = `10.213.${x}.${y + 2}`;
  let child: Deno.ChildProcess | undefined;
  let reader: ReadableStreamDefaultReader<string> | undefined;
  const cleanup = async () => {
    if (child) {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
      await child.status;
      // child.stdout stays locked by pipeThrough: end it through its reader.
      await reader?.cancel().catch(() => {});
    }
    await ip(["netns", "del", ns]).catch(() => {});
    await ip(["link", "del", hostIf]).catch(() => {});
  };
  try {
    await ip(["netns", "add", ns]);
    await ip(["link", "add", hostIf, "type", "veth", "peer", "name", nsIf]);
    await ip(["link", "set", nsIf, "netns", ns]);
    await ip(["addr", "add", `${hostAddress}/30`, "dev", hostIf]);
    await ip(["link", "set", hostIf, "up"]);
    await ip(["netns", "exec", ns, "ip", "addr", "add", `${address}/30`, "dev", nsIf]);
    await ip(["netns", "exec", ns, "ip", "link", "set", nsIf, "up"]);
    await ip(["netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
    child = new Deno.Command(ipBinary()!, {
      args: [
        "netns",
        "exec",
        ns,
        Deno.execPath(),
        "run",
        "--quiet",
        "--no-config",
        `--allow-net=${address}`,
        `${REPO_ROOT}/testing/netns_server.ts`,
        address,
      ],
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the namespace's test server exited before listening");
      text += value;
    }
    const port = JSON.parse(text.split("\n")[0]).port as number;
    return { ns, address, hostAddress, port, close: cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
