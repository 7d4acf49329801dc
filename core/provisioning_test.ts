import assert from "node:assert/strict";
import {
  isReservedVariable,
  PROVISION_SSH_HOST_KEY,
  PROVISION_SUPERVISOR_TOKEN,
  PROVISION_TLS_CA,
  splitProvisioning,
} from "./provisioning.ts";

Deno.test("splitProvisioning separates secrets from the user's environment", () => {
  const p = splitProvisioning({
    FOO: "1",
    [PROVISION_SSH_HOST_KEY]: "KEY",
    [PROVISION_SUPERVISOR_TOKEN]: "TOK",
    [PROVISION_TLS_CA]: "CA",
    OPENSHELL_PROVISION_FUTURE: "x",
  });
  assert.deepEqual(p.environment, { FOO: "1" });
  assert.equal(p.sshHostKey, "KEY");
  assert.equal(p.supervisorToken, "TOK");
  assert.equal(p.tlsCa, "CA");
  assert.deepEqual(splitProvisioning({}), {
    environment: {},
    sshHostKey: undefined,
    supervisorToken: undefined,
    tlsCa: undefined,
  });
});

Deno.test("reserved names are recognised", () => {
  assert.equal(isReservedVariable("OPENSHELL_PROVISION_X"), true);
  assert.equal(isReservedVariable("OPENSHELL_ENDPOINT"), false);
});
