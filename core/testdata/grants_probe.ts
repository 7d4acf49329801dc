/**
 * Test-only probe, run with a role's exact permission flags: tries each
 * attempt of the JSON plan given as its one argument and prints one JSON
 * object `{ name: outcome }`, where an outcome is `"ok"`, `"NotCapable"`,
 * `"unset"` (an environment variable that reads as undefined) or
 * `"<ErrorName>: <message>"`.
 *
 *     grants_probe.ts '[{"name":"listen","op":"listen","host":"127.0.0.1","port":0}, …]'
 *
 * See `probeGrants` in `core/testing.ts`.
 *
 * @module
 */
import net from "node:net";
import type { GrantAttempt } from "../testing.ts";

function outcome(err: unknown): string {
  if (err instanceof Deno.errors.NotCapable) return "NotCapable";
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function nodeConnect(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
    socket.once("error", reject);
  });
}

function nodeListen(host: string, port: number): Promise<void> {
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
    server.listen(port, host, () => {
      globalThis.removeEventListener("error", onUncaught);
      server.close(() => resolve());
    });
  });
}

async function run(a: GrantAttempt): Promise<string> {
  switch (a.op) {
    case "listen":
      Deno.listen({ hostname: a.host, port: a.port }).close();
      return "ok";
    case "listen-node":
      await nodeListen(a.host, a.port);
      return "ok";
    case "connect":
      (await Deno.connect({ hostname: a.host, port: a.port })).close();
      return "ok";
    case "connect-node":
      await nodeConnect(a.host, a.port);
      return "ok";
    case "listen-unix": {
      Deno.listen({ transport: "unix", path: a.path }).close();
      return "ok";
    }
    case "connect-unix":
      (await Deno.connect({ transport: "unix", path: a.path })).close();
      return "ok";
    case "spawn": {
      const out = await new Deno.Command(a.cmd, {
        args: a.args ?? [],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
      return out.success ? "ok" : `exit ${out.code}`;
    }
    case "read":
      await Deno.readFile(a.path);
      return "ok";
    case "write":
      await Deno.writeTextFile(a.path, "probe");
      await Deno.remove(a.path);
      return "ok";
    case "env":
      return Deno.env.get(a.var) === undefined ? "unset" : "ok";
    case "sys":
      if (a.call === "networkInterfaces") Deno.networkInterfaces();
      else Deno.hostname();
      return "ok";
  }
}

const plan = JSON.parse(Deno.args[0]) as GrantAttempt[];
const results: Record<string, string> = {};
for (const a of plan) {
  try {
    results[a.name] = await run(a);
  } catch (err) {
    results[a.name] = outcome(err);
  }
}
console.log(JSON.stringify(results));
