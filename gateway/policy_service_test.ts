import assert from "node:assert/strict";
import { Logger } from "../core/log.ts";
import { policyHash } from "../core/policy.ts";
import type * as grpc from "@grpc/grpc-js";
import type {
  Sandbox,
  SandboxPolicy,
  SandboxSpec,
  UpdateConfigRequest,
  Wire,
} from "../core/protocol.ts";
import { Code } from "../core/status.ts";
import { EgressPolicies } from "./egress.ts";
import { isEmptyPolicy, PolicyService } from "./policy_service.ts";
import { SqliteStore } from "./store.ts";
import { MAX_POLICY_BYTES } from "./validation.ts";

const quiet = new Logger({ level: "error", sink: () => {} });

function allow(host: string): Wire<SandboxPolicy> {
  return { network_policies: { r: { name: "r", endpoints: [{ host, port: 443 }] } } };
}

async function setup(egress: boolean) {
  const store = SqliteStore.open();
  const sandbox: Sandbox = {
    id: "id-dev",
    name: "dev",
    namespace: "default",
    spec: null,
    status: null,
    phase: "SANDBOX_PHASE_READY",
    created_at_ms: 1,
    current_policy_version: 0,
  };
  await store.createSandbox({ sandbox, secrets: {} });
  const policies = egress
    ? new EgressPolicies({ store, log: quiet, appendLog: () => {} })
    : undefined;
  const service = new PolicyService({ store, log: quiet, egress: policies, now: () => 99 });
  const handlers = service.handlers();
  // A handler called directly, with a request as a client writes it (a stand-in for the call).
  const call = <Req, Res>(
    handler: grpc.handleUnaryCall<Req, Res>,
    request: Wire<Req>,
  ): Promise<Res> =>
    new Promise((resolve, reject) =>
      handler({ request } as unknown as grpc.ServerUnaryCall<Req, Res>, (err, res) => {
        if (err) reject(Object.assign(new Error(err.details), { code: err.code }));
        else resolve(res!);
      })
    );
  const update = (req: Wire<UpdateConfigRequest>) =>
    call(handlers.UpdateConfig, {
      name: "dev",
      policy: null,
      setting_key: "",
      delete_setting: false,
      global: false,
      ...req,
    });
  return {
    store,
    service,
    sandbox,
    handlers,
    call,
    update,
    close: async () => {
      await policies?.close();
      store.close();
    },
  };
}

function status(code: number, pattern: RegExp) {
  return (e: unknown) => {
    const err = e as { code: number; message: string };
    assert.equal(err.code, code, err.message);
    assert.match(err.message, pattern);
    return true;
  };
}

Deno.test("UpdateConfig: versions count up from the create-time revision; hash is policyHash", async () => {
  const t = await setup(true);
  try {
    await t.service.sandboxCreated({ ...t.sandbox, spec: { policy: allow("one") } as SandboxSpec });
    const v1 = await t.store.getPolicyRevision(t.sandbox.id, 1);
    assert.equal(v1?.hash, policyHash(allow("one")));
    const res = await t.update({ policy: allow("two") });
    assert.equal(res.version, 2);
    assert.equal(res.policy_hash, policyHash(allow("two")));
    const got = await t.call(t.handlers.GetSandboxPolicyStatus, {
      name: "dev",
      version: 0,
      global: false,
    });
    assert.equal(got.revision?.version, 2);
    assert.equal(got.revision?.created_at_ms, 99);
    assert.equal(got.revision?.policy?.network_policies?.r.endpoints?.[0].host, "two");
    const v1got = await t.call(t.handlers.GetSandboxPolicyStatus, {
      name: "dev",
      version: 1,
      global: false,
    });
    assert.equal(v1got.revision?.status, "POLICY_STATUS_SUPERSEDED");
    const list = await t.call(t.handlers.ListSandboxPolicies, {
      name: "dev",
      limit: 0,
      offset: 0,
      global: false,
    });
    assert.deepEqual(list.revisions!.map((r) => r.version), [2, 1]);
    assert.equal(list.revisions![0].policy, null, "lists leave the policy out");
    await assert.rejects(
      t.call(t.handlers.GetSandboxPolicyStatus, { name: "dev", version: 7, global: false }),
      status(Code.NOT_FOUND, /no policy version 7 \(the latest is 2\)/),
    );
  } finally {
    await t.close();
  }
});

Deno.test("UpdateConfig: refused fields, bad policies and unknown sandboxes name what is wrong", async () => {
  const t = await setup(true);
  try {
    await assert.rejects(
      t.update({ setting_key: "x", policy: allow("a") }),
      status(3, /^setting_key:/),
    );
    await assert.rejects(t.update({ global: true, policy: allow("a") }), status(3, /^global:/));
    await assert.rejects(
      t.update({ delete_setting: true, policy: allow("a") }),
      status(3, /^delete_setting:/),
    );
    await assert.rejects(t.update({}), status(3, /^policy is required/));
    await assert.rejects(t.update({ name: "", policy: allow("a") }), status(3, /name is required/));
    await assert.rejects(
      t.update({ name: "nope", policy: allow("a") }),
      status(Code.NOT_FOUND, /sandbox "nope" not found/),
    );
    await assert.rejects(
      t.update({
        policy: {
          network_policies: {
            pypi: { endpoints: [{ host: "pypi.org", port: 443, protocol: "rest" }] },
          },
        },
      }),
      status(3, /^policy\.network_policies\["pypi"\]\.endpoints\[0\]\.protocol:/),
    );
    await assert.rejects(
      t.update({ policy: { network_policies: { r: { endpoints: [{ host: "a.example" }] } } } }),
      status(3, /endpoint needs port or ports/),
    );
    // Past the size cap: refused from its encoded size before validation.
    const big: Wire<SandboxPolicy> = { network_policies: {} };
    const host = `${"h".repeat(60)}.${"i".repeat(60)}.${"j".repeat(60)}.example`;
    for (let i = 0; i < 200; i++) {
      big.network_policies![`rule-${i}`] = {
        endpoints: [{ host, port: 443 }, { host, port: 80 }],
      };
    }
    await assert.rejects(
      t.update({ policy: big }),
      status(3, new RegExp(`at most ${MAX_POLICY_BYTES}`)),
    );
    await assert.rejects(
      t.call(t.handlers.ListSandboxPolicies, { name: "dev", limit: 101, offset: 0, global: false }),
      status(3, /limit: at most 100/),
    );
    await assert.rejects(
      t.call(t.handlers.ListSandboxPolicies, { name: "ghost", limit: 1, offset: 0, global: false }),
      status(Code.NOT_FOUND, /"ghost" not found/),
    );
    await assert.rejects(
      t.call(t.handlers.GetSandboxPolicyStatus, { name: "dev", version: 0, global: true }),
      status(3, /^global:/),
    );
    assert.equal(await t.store.getPolicyRevision(t.sandbox.id, 0), undefined, "nothing stored");
  } finally {
    await t.close();
  }
});

Deno.test("without the egress proxy: no revisions; a policy is refused, never dropped", async () => {
  const t = await setup(false);
  try {
    assert.doesNotThrow(() => t.service.checkCreate({ policy: null } as unknown as SandboxSpec));
    assert.doesNotThrow(() =>
      t.service.checkCreate({ policy: { network_policies: {} } } as unknown as SandboxSpec)
    );
    assert.throws(
      () => t.service.checkCreate({ policy: allow("pypi.org") } as unknown as SandboxSpec),
      (e: unknown) =>
        (e as { code: number }).code === Code.FAILED_PRECONDITION &&
        /^spec\.policy: .*--no-egress/.test((e as Error).message),
    );
    await t.service.sandboxCreated(t.sandbox);
    assert.equal(await t.store.getPolicyRevision(t.sandbox.id, 0), undefined);
    await assert.rejects(
      t.update({ policy: allow("a") }),
      status(Code.FAILED_PRECONDITION, /--no-egress/),
    );
    await assert.rejects(
      t.call(t.handlers.GetSandboxPolicyStatus, { name: "dev", version: 0, global: false }),
      status(Code.NOT_FOUND, /no policy revisions .*--no-egress/),
    );
  } finally {
    await t.close();
  }
});

Deno.test("isEmptyPolicy: none, no rules, and defaults-only are empty", () => {
  assert.equal(isEmptyPolicy(null), true);
  assert.equal(isEmptyPolicy({ version: 0, network_policies: {} }), true);
  assert.equal(isEmptyPolicy(allow("x")), false);
});
