import assert from "node:assert/strict";
import { egressPolicyYaml, startTestHost } from "./egress_steps.ts";

Deno.test({
  name:
    "egress e2e: the test host answers on its /30 inside its namespace and leaves nothing behind",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    const base = await Deno.makeTempDir({ prefix: "osegr" });
    const host = await startTestHost(base);
    try {
      assert.match(host.ip, /^10\.213\.\d+\.2$/);
      assert.equal(host.cidr, host.ip.replace(/\.2$/, ".0/30"));
      for (const port of host.ports) {
        const text = await (await fetch(`http://${host.ip}:${port}/`)).text();
        assert.equal(text, `egress-e2e-ok ${port}\n`);
      }
      const netns = new TextDecoder().decode(
        (await new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped" }).output())
          .stdout,
      );
      assert.ok(netns.includes(host.netns));
    } finally {
      await host.close();
      await Deno.remove(base, { recursive: true });
    }
    const after = new TextDecoder().decode(
      (await new Deno.Command("ip", { args: ["-o", "addr", "show"], stdout: "piped" }).output())
        .stdout,
    );
    assert.ok(!after.includes(host.hostIp), "the veth pair is gone");
    const ns = new TextDecoder().decode(
      (await new Deno.Command("ip", { args: ["netns", "list"], stdout: "piped" }).output()).stdout,
    );
    assert.ok(!ns.includes(host.netns), "the namespace is gone");
  },
});

Deno.test("egress e2e: the policy file allows the test host's ports and lists the forbidden hosts", () => {
  assert.equal(
    egressPolicyYaml({
      testHost: "10.213.7.2",
      cidr: "10.213.7.0/30",
      ports: [8000],
      forbidden: [{ host: "127.0.0.1", port: 9 }],
    }),
    `network_policies:
  testhost:
    endpoints:
      - host: 10.213.7.2
        port: 8000
        allowed_ips: ["10.213.7.0/30"]
  host-itself:
    endpoints:
      - host: 127.0.0.1
        port: 9
        allowed_ips: ["127.0.0.1/32"]
`,
  );
  assert.match(
    egressPolicyYaml({ testHost: "h", cidr: "c", ports: [1, 2], forbidden: [] }),
    /^ {8}ports: \[1, 2\]$/m,
  );
});
