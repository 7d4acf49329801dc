import assert from "node:assert/strict";
import { parsePolicyYaml } from "../cli/policy_file.ts";
import { validatePolicy } from "../core/policy.ts";
import { deniedChecksScript, egressPolicyYaml, noEgressScript } from "./egress_steps.ts";

Deno.test("egress e2e: the policy file lists each rule's endpoints with their /32", () => {
  assert.equal(
    egressPolicyYaml({
      testhost: [{ host: "10.213.7.2", port: 8000 }, { host: "10.213.9.6", port: 8001 }],
      "host-itself": [{ host: "127.0.0.1", port: 9 }],
    }),
    `network_policies:
  testhost:
    endpoints:
      - host: 10.213.7.2
        port: 8000
        allowed_ips: ["10.213.7.2/32"]
      - host: 10.213.9.6
        port: 8001
        allowed_ips: ["10.213.9.6/32"]
  host-itself:
    endpoints:
      - host: 127.0.0.1
        port: 9
        allowed_ips: ["127.0.0.1/32"]
`,
  );
});

Deno.test("egress e2e: the policy file is one the CLI reads and the gateway accepts", () => {
  const policy = parsePolicyYaml(
    egressPolicyYaml({
      testhost: [{ host: "10.213.7.2", port: 8000 }],
      "host-itself": [{ host: "127.0.0.1", port: 9 }, { host: "10.213.7.1", port: 9 }],
    }),
    "egress-policy.yaml",
  );
  assert.deepEqual(validatePolicy(policy), []);
  const rule = policy.network_policies!["testhost"];
  assert.equal(rule.endpoints![0].host, "10.213.7.2");
  assert.equal(rule.endpoints![0].port, 8000);
  assert.deepEqual(rule.endpoints![0].allowed_ips, ["10.213.7.2/32"]);
});

Deno.test("egress e2e: the in-guest scripts are one line each (sandbox exec refuses newlines) and valid bash", async () => {
  for (
    const script of [
      deniedChecksScript({ denied: "10.213.7.2:8000", literal: "10.213.7.6" }),
      noEgressScript(),
    ]
  ) {
    assert.doesNotMatch(script, /[\r\n]/);
    const out = await new Deno.Command("bash", { args: ["-n", "-c", script], stderr: "piped" })
      .output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  }
});
