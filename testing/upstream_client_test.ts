/**
 * Wire compatibility with upstream OpenShell: Python stubs generated from
 * upstream's own protos (`testing/upstream_proto/`, vendored unchanged)
 * talk to a real gateway (secure defaults: mTLS with its automatic PKI,
 * `--drivers none --egress` with the real egress proxy). The client creates
 * a sandbox with a network policy, reads it back, updates it, sees the new
 * revision LOADED and lists both revisions; a field we do not enforce is
 * refused naming it. The hashes the gateway reports equal SHA-256 of the
 * protobuf library's deterministic serialization and `core/policy.ts`'s
 * `policyHash`.
 *
 * Needs Debian's `python3-grpcio` and `python3-grpc-tools`
 * (`testing/prepare.ts` installs them); ignored, saying so, without them.
 */
import assert from "node:assert/strict";
import { policyHash } from "../core/policy.ts";
import type { SandboxPolicy, Wire } from "../core/protocol.ts";
import { spawnGateway } from "./gateway.ts";

const SCRIPT = new URL("./upstream_client.py", import.meta.url).pathname;
const PROTO_DIR = new URL("./upstream_proto", import.meta.url).pathname;

/** The first Python that has gRPC and grpc_tools (Debian's, then PATH's), or undefined. */
async function findPython(): Promise<string | undefined> {
  for (const exe of ["/usr/bin/python3", "python3"]) {
    try {
      const probe = await new Deno.Command(exe, {
        args: ["-c", "import grpc, grpc_tools.protoc"],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).output();
      if (probe.code === 0) return exe;
    } catch {
      // not installed
    }
  }
  return undefined;
}

const python = await findPython();
if (!python) {
  console.error(
    "upstream_client_test: ignored: no python3 with grpc and grpc_tools " +
      "(apt-get install python3-grpcio python3-grpc-tools, or run testing/prepare.ts as root)",
  );
}

/** What upstream_client.py reports. */
interface Seen {
  health: string;
  created: { id: string; name: string };
  status_v1: Status;
  get_policy: unknown;
  get_policy_equal: boolean;
  get_current_policy_version: number;
  policy_v1_sha256: string;
  update: { version: number; policy_hash: string };
  policy_v2_sha256: string;
  status_v2: Status;
  revisions: [number, string, string][];
  create_unsupported: [string, string];
  update_unsupported: [string, string];
  update_global: [string, string];
  deleted: boolean;
  error?: string;
}

interface Status {
  version: number;
  status: string;
  active_version: number;
  policy_hash: string;
  loaded_at_ms: number;
  polls: number;
}

// The policies the script sends, as this project writes them.
const V1: Wire<SandboxPolicy> = {
  network_policies: { pypi: { name: "pypi", endpoints: [{ host: "pypi.org", port: 443 }] } },
};
const V2: Wire<SandboxPolicy> = {
  network_policies: {
    pypi: { name: "pypi", endpoints: [{ host: "pypi.org", port: 443 }] },
    files: { name: "files", endpoints: [{ host: "files.pythonhosted.org", ports: [443, 8443] }] },
  },
};

Deno.test({
  name: "upstream client (Python stubs of upstream's protos): create with a policy, update, LOADED",
  ignore: python === undefined,
  async fn() {
    const gw = await spawnGateway({ egress: true, tls: true });
    const out = await Deno.makeTempDir({ prefix: "osupy" });
    try {
      const run = await new Deno.Command(python!, {
        args: [
          SCRIPT,
          "--proto-dir",
          PROTO_DIR,
          "--out-dir",
          out,
          "--endpoint",
          `127.0.0.1:${gw.port}`,
          "--ca",
          gw.pki!.ca,
          "--cert",
          gw.pki!.clientCert,
          "--key",
          gw.pki!.clientKey,
        ],
        env: { PYTHONDONTWRITEBYTECODE: "1" },
        stdin: "null",
      }).output();
      const stdout = new TextDecoder().decode(run.stdout);
      const stderr = new TextDecoder().decode(run.stderr);
      assert.equal(run.code, 0, `upstream_client.py failed:\n${stderr}\n${stdout}`);
      const seen = JSON.parse(stdout) as Seen;
      assert.equal(seen.error, undefined);

      assert.equal(seen.health, "SERVICE_STATUS_HEALTHY");
      assert.equal(seen.created.name, "upstream-py");
      assert.match(seen.created.id, /^[0-9a-f-]{36}$/);

      // Revision 1 from CreateSandbox: LOADED, and the policy reads back as sent.
      const h1 = policyHash(V1);
      assert.equal(seen.policy_v1_sha256, h1, "the protobuf library's hash is ours");
      assert.equal(seen.status_v1.status, "POLICY_STATUS_LOADED");
      assert.equal(seen.status_v1.policy_hash, h1);
      assert.equal(seen.get_current_policy_version, 1);
      assert.equal(seen.get_policy_equal, true);
      assert.deepEqual(seen.get_policy, {
        network_policies: {
          pypi: { name: "pypi", endpoints: [{ host: "pypi.org", port: 443 }] },
        },
      });

      // UpdateConfig: version 2 with the SHA-256 of the policy; LOADED within the bound.
      const h2 = policyHash(V2);
      assert.deepEqual(seen.update, { version: 2, policy_hash: h2 });
      assert.match(seen.update.policy_hash, /^[0-9a-f]{64}$/);
      assert.equal(seen.policy_v2_sha256, h2);
      assert.equal(seen.status_v2.status, "POLICY_STATUS_LOADED");
      assert.equal(seen.status_v2.version, 2);
      assert.equal(seen.status_v2.active_version, 2);
      assert.equal(seen.status_v2.policy_hash, h2);
      assert.ok(seen.status_v2.loaded_at_ms > 0);
      assert.deepEqual(seen.revisions, [
        [2, "POLICY_STATUS_LOADED", h2],
        [1, "POLICY_STATUS_LOADED", h1],
      ]);

      // Fields we do not enforce are refused naming the field, never dropped.
      assert.equal(seen.create_unsupported[0], "INVALID_ARGUMENT");
      assert.match(
        seen.create_unsupported[1],
        /^spec\.policy\.network_policies\["pypi"\]\.endpoints\[0\]\.protocol: /,
      );
      assert.equal(seen.update_unsupported[0], "INVALID_ARGUMENT");
      assert.match(
        seen.update_unsupported[1],
        /^policy\.network_policies\["pypi"\]\.endpoints\[0\]\.protocol: /,
      );
      assert.equal(seen.update_global[0], "INVALID_ARGUMENT");
      assert.match(seen.update_global[1], /^global: /);
      assert.equal(seen.deleted, true);
    } catch (err) {
      console.error(gw.stderr());
      throw err;
    } finally {
      await gw.stop();
      await Deno.remove(out, { recursive: true });
    }
  },
});
