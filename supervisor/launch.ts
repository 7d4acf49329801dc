/**
 * `deno task supervisor -- …`: runs the supervisor through `deno run` with
 * exactly the grants its own flags imply (core/grants.ts): the gateway's
 * host:port (plus the addresses a host name resolves to), the socket
 * directory, its session cgroup, the sshd binary, and the key, token and
 * TLS files it reads.
 *
 * @module
 */
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import { denoEnv, FlagError } from "../core/flags.ts";
import { supervisorGrants } from "../core/grants.ts";
import { launchRole, stripTaskSeparator } from "../core/launcher.ts";
import { filesRead, filesWritten, parseSupervisorConfig } from "./config.ts";

const args = stripTaskSeparator(Deno.args);
try {
  const parsed = parseSupervisorConfig(args, denoEnv);
  if (parsed.kind !== "run") {
    await launchRole(
      "supervisor",
      supervisorGrants({
        gateway: { host: "127.0.0.1", port: 1 },
        socketPath: "/nonexistent/ssh.sock",
        sshd: "/nonexistent/sshd",
      }),
      args,
    );
  } else {
    const c = parsed.config;
    const gatewayAddresses = isIP(c.host)
      ? []
      : (await lookup(c.host, { all: true }).catch(() => [])).map((a) => a.address);
    await launchRole(
      "supervisor",
      supervisorGrants({
        gateway: { host: c.host, port: c.port },
        gatewayAddresses,
        socketPath: c.socketPath,
        sshd: c.sshd,
        readFiles: filesRead(c),
        writeFiles: filesWritten(c),
        sessionCgroup: c.sessionCgroup,
      }),
      args,
    );
  }
} catch (err) {
  if (err instanceof FlagError) {
    console.error(`openshell-sandbox: ${err.message}`);
    Deno.exit(2);
  }
  throw err;
}
