/**
 * Test-only probe run with the supervisor's exact permission flags: tries
 * what the supervisor must never do (and, as a control, what it must do)
 * and prints one JSON object `{ attempt: outcome }`, where an outcome is
 * `"ok"`, `"NotCapable"` or `"<ErrorName>: <message>"`.
 *
 *     grants_probe.ts GATEWAY_HOST GATEWAY_PORT OTHER_PORT SOCKET_DIR SSHD
 *
 * @module
 */
import net from "node:net";

const [gatewayHost, gatewayPort, otherPort, socketDir, sshd] = Deno.args;

function outcome(err: unknown): string {
  if (err instanceof Deno.errors.NotCapable) return "NotCapable";
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

async function attempt(fn: () => Promise<unknown> | unknown): Promise<string> {
  try {
    await fn();
    return "ok";
  } catch (err) {
    return outcome(err);
  }
}

function nodeConnect(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
    socket.once("error", reject);
  });
}

function nodeListen(): Promise<void> {
  return new Promise((resolve, reject) => {
    // node:net reports this denial as an uncaught exception from a later tick.
    const onUncaught = (event: ErrorEvent) => {
      event.preventDefault();
      globalThis.removeEventListener("error", onUncaught);
      reject(event.error);
    };
    globalThis.addEventListener("error", onUncaught);
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => server.close(() => resolve()));
  });
}

const results: Record<string, string> = {
  // forbidden
  "listen tcp": await attempt(() => Deno.listen({ hostname: "127.0.0.1", port: 0 }).close()),
  "listen tcp 0.0.0.0": await attempt(() => Deno.listen({ hostname: "0.0.0.0", port: 0 }).close()),
  "node listen tcp": await attempt(nodeListen),
  "connect other port": await attempt(async () =>
    (await Deno.connect({ hostname: "127.0.0.1", port: Number(otherPort) })).close()
  ),
  "node connect other port": await attempt(() => nodeConnect(Number(otherPort))),
  "connect other host": await attempt(async () =>
    (await Deno.connect({ hostname: "127.0.0.2", port: Number(gatewayPort) })).close()
  ),
  "spawn /bin/sh": await attempt(() =>
    new Deno.Command("/bin/sh", { args: ["-c", "true"] }).output()
  ),
  "spawn sh": await attempt(() => new Deno.Command("sh", { args: ["-c", "true"] }).output()),
  "read /etc/passwd": await attempt(() => Deno.readTextFile("/etc/passwd")),
  "write outside the socket dir": await attempt(() =>
    Deno.writeTextFile(`${socketDir}/../escape`, "x")
  ),
  "sys uid": await attempt(() => Deno.uid()),
  // allowed
  "connect gateway": await attempt(async () =>
    (await Deno.connect({ hostname: gatewayHost, port: Number(gatewayPort) })).close()
  ),
  "write socket dir": await attempt(async () => {
    await Deno.writeTextFile(`${socketDir}/probe`, "x");
    await Deno.remove(`${socketDir}/probe`);
  }),
  "spawn sshd": await attempt(() => new Deno.Command(sshd, { args: ["-V"] }).output()),
  "env HOME is hidden": Deno.env.get("HOME") === undefined ? "ok" : "visible",
};
console.log(JSON.stringify(results));
