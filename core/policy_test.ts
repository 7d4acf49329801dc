import assert from "node:assert/strict";
import {
  ALWAYS_DENIED,
  canonicalIp,
  checkAddress,
  decide,
  decideAddresses,
  dnsAddresses,
  hostAllowed,
  hostMatches,
  MAX_ERRORS,
  MAX_RULES,
  policyHash,
  portMatches,
  validatePolicy,
} from "./policy.ts";
import type { SandboxPolicy, Wire } from "../core/protocol.ts";

Deno.test("hostMatches: exact names, case, trailing dots", () => {
  assert.equal(hostMatches("example.com", "example.com"), true);
  assert.equal(hostMatches("Example.COM", "eXample.com"), true);
  assert.equal(hostMatches("example.com.", "example.com"), true);
  assert.equal(hostMatches("example.com", "example.com."), true);
  assert.equal(hostMatches("example.com", "www.example.com"), false);
  assert.equal(hostMatches("example.com", "example.com.evil.net"), false);
  assert.equal(hostMatches("example.com", "notexample.com"), false);
  assert.equal(hostMatches("example.com", ""), false);
});

Deno.test("hostMatches: * is exactly one label, ** one or more", () => {
  assert.equal(hostMatches("*.example.com", "a.example.com"), true);
  assert.equal(hostMatches("*.example.com", "A.Example.com."), true);
  assert.equal(hostMatches("*.example.com", "a.b.example.com"), false);
  assert.equal(hostMatches("*.example.com", "example.com"), false);
  assert.equal(hostMatches("*.example.com", "aexample.com"), false);
  assert.equal(hostMatches("*.example.com", ".example.com"), false);
  assert.equal(hostMatches("**.example.com", "a.example.com"), true);
  assert.equal(hostMatches("**.example.com", "a.b.c.example.com"), true);
  assert.equal(hostMatches("**.example.com", "example.com"), false);
  assert.equal(hostMatches("**.example.com", "badexample.com"), false);
});

Deno.test("hostMatches: IP literals match only the same address; globs never match IPs", () => {
  assert.equal(hostMatches("10.0.0.1", "10.0.0.1"), true);
  assert.equal(hostMatches("10.0.0.1", "10.0.0.2"), false);
  assert.equal(hostMatches("2001:db8::1", "[2001:DB8:0::1]"), true);
  assert.equal(hostMatches("[2001:db8::1]", "2001:db8::1"), true);
  assert.equal(hostMatches("10.0.0.1", "::ffff:10.0.0.1"), true);
  assert.equal(hostMatches("*.0.0.1", "10.0.0.1"), false);
  assert.equal(hostMatches("**.1", "10.0.0.1"), false);
  assert.equal(hostMatches("10.0.0.1", "10.0.0.1.example.com"), false);
});

Deno.test("portMatches: port or any of ports; 0 and out-of-range never", () => {
  assert.equal(portMatches({ port: 443 }, 443), true);
  assert.equal(portMatches({ port: 443 }, 80), false);
  assert.equal(portMatches({ ports: [80, 8080] }, 8080), true);
  assert.equal(portMatches({ port: 443, ports: [80] }, 80), true);
  assert.equal(portMatches({ port: 443, ports: [80] }, 22), false);
  assert.equal(portMatches({ port: 0, ports: [] }, 0), false);
  assert.equal(portMatches({ ports: [70000] }, 70000), false);
});

const policy: Wire<SandboxPolicy> = {
  network_policies: {
    pypi: {
      endpoints: [{ host: "pypi.org", port: 443 }, { host: "**.pythonhosted.org", port: 443 }],
    },
    internal: { endpoints: [{ host: "db.corp", port: 5432, allowed_ips: ["10.1.0.0/16"] }] },
    watch: { endpoints: [{ host: "*.example.com", ports: [80, 443], enforcement: "audit" }] },
  },
};

Deno.test("decide: allowed by an enforce endpoint, audit by an audit one, denied otherwise", () => {
  assert.deepEqual(decide(policy, "pypi.org", 443), {
    decision: "allowed",
    rule: "pypi",
    endpoint: { host: "pypi.org", port: 443 },
  });
  assert.equal(decide(policy, "files.pythonhosted.org", 443).decision, "allowed");
  assert.equal(decide(policy, "pypi.org", 80).decision, "denied");
  assert.equal(decide(policy, "www.example.com", 80).decision, "audit");
  assert.equal(decide(policy, "www.example.com", 80).rule, "watch");
  assert.equal(decide(policy, "evil.net", 443).decision, "denied");
  assert.equal(decide(policy, "evil.net", 443).rule, undefined);
  assert.equal(decide(undefined, "pypi.org", 443).decision, "denied");
  assert.equal(decide({}, "pypi.org", 443).decision, "denied");
  assert.equal(decide({ network_policies: {} }, "pypi.org", 443).decision, "denied");
});

Deno.test("decide: an enforce endpoint wins over an audit one for the same host", () => {
  const p: Wire<SandboxPolicy> = {
    network_policies: {
      a: { endpoints: [{ host: "x.example.com", port: 443, enforcement: "audit" }] },
      b: { endpoints: [{ host: "x.example.com", port: 443 }] },
    },
  };
  assert.equal(decide(p, "x.example.com", 443).decision, "allowed");
  assert.equal(decide(p, "x.example.com", 443).rule, "b");
});

Deno.test("hostAllowed: any port of any rule", () => {
  assert.equal(hostAllowed(policy, "PyPI.org."), true);
  assert.equal(hostAllowed(policy, "db.corp"), true);
  assert.equal(hostAllowed(policy, "a.b.example.com"), false);
  assert.equal(hostAllowed(policy, "evil.net"), false);
  assert.equal(hostAllowed(null, "pypi.org"), false);
});

Deno.test("canonicalIp: IPv4-mapped IPv6 becomes IPv4; IPv6 compressed; junk undefined", () => {
  assert.equal(canonicalIp("::ffff:127.0.0.1"), "127.0.0.1");
  assert.equal(canonicalIp("::FFFF:7f00:1"), "127.0.0.1");
  assert.equal(canonicalIp("[::ffff:10.0.0.1]"), "10.0.0.1");
  assert.equal(canonicalIp("0:0:0:0:0:0:0:1"), "::1");
  assert.equal(canonicalIp("2001:DB8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
  assert.equal(canonicalIp("fe80::1"), "fe80::1");
  assert.equal(canonicalIp("1.2.3.4"), "1.2.3.4");
  assert.equal(canonicalIp("fe80::1%eth0"), undefined);
  assert.equal(canonicalIp("example.com"), undefined);
  assert.equal(canonicalIp("1.2.3"), undefined);
  assert.equal(canonicalIp("01.2.3.4"), undefined);
});

Deno.test("checkAddress: loopback, link-local, special and the host's own addresses always denied", () => {
  const open = { host: "x", port: 1, allowed_ips: ["0.0.0.0/0", "::/0"] };
  for (
    const ip of [
      "127.0.0.1",
      "127.9.9.9",
      "::1",
      "::ffff:127.0.0.1",
      "::ffff:7f00:1",
      "0:0:0:0:0:ffff:7f00:0001",
      "0.0.0.0",
      "::",
      "169.254.169.254",
      "::ffff:169.254.169.254",
      "fe80::1",
      "224.0.0.1",
      "ff02::1",
      "255.255.255.255",
      "::127.0.0.1",
      "192.0.2.7",
    ]
  ) {
    const v = checkAddress(ip, open, ["192.0.2.7"]);
    assert.equal(v.ok, false, ip);
    assert.equal(!v.ok && v.always, true, ip);
  }
  // Even an explicit rule for loopback cannot open it.
  const lo = { host: "127.0.0.1", port: 80, allowed_ips: ["127.0.0.0/8"] };
  assert.equal(checkAddress("127.0.0.1", lo, []).ok, false);
  assert.equal(checkAddress("8.8.8.8", open, []).ok, true);
  assert.equal(checkAddress("not-an-ip", open, []).ok, false);
});

Deno.test("checkAddress: private ranges only through allowed_ips; allowed_ips restricts everything", () => {
  const plain = { host: "x", port: 1 };
  for (
    const ip of [
      "10.1.2.3",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.1.1",
      "100.64.0.1",
      "fd00::1",
      "::ffff:10.0.0.1",
    ]
  ) {
    const v = checkAddress(ip, plain, []);
    assert.equal(v.ok, false, ip);
    assert.equal(!v.ok && v.always, false, ip);
    assert.match(!v.ok ? v.reason : "", /allowed_ips/);
  }
  assert.equal(checkAddress("172.32.0.1", plain, []).ok, true);
  assert.equal(checkAddress("100.128.0.1", plain, []).ok, true);
  assert.equal(checkAddress("2001:db8::1", plain, []).ok, true);
  const ten = { host: "x", port: 1, allowed_ips: ["10.1.0.0/16", "fd00:1::/32"] };
  assert.equal(checkAddress("10.1.200.3", ten, []).ok, true);
  assert.equal(checkAddress("::ffff:10.1.200.3", ten, []).ok, true);
  assert.equal(checkAddress("10.2.0.1", ten, []).ok, false);
  assert.equal(checkAddress("8.8.8.8", ten, []).ok, false, "allowed_ips restricts public too");
  assert.equal(checkAddress("fd00:1:ffff::1", ten, []).ok, true);
  assert.equal(checkAddress("fd00:2::1", ten, []).ok, false);
  const single = { host: "x", port: 1, allowed_ips: ["10.9.9.9"] };
  assert.equal(checkAddress("10.9.9.9", single, []).ok, true);
  assert.equal(checkAddress("10.9.9.8", single, []).ok, false);
});

Deno.test("ALWAYS_DENIED holds loopback and link-local of both families", () => {
  for (const c of ["127.0.0.0/8", "169.254.0.0/16", "fe80::/10", "::/96"]) {
    assert.equal(ALWAYS_DENIED.includes(c), true, c);
  }
});

Deno.test("decideAddresses: vetted addresses, audit relaxes only the conditional checks", () => {
  const allowed = decideAddresses({
    policy,
    host: "db.corp",
    port: 5432,
    addresses: ["10.1.0.5", "127.0.0.1", "10.2.0.1"],
    hostAddrs: [],
  });
  assert.equal(allowed.decision, "allowed");
  assert.deepEqual(allowed.addresses, ["10.1.0.5"]);
  const denied = decideAddresses({
    policy,
    host: "db.corp",
    port: 5432,
    addresses: ["10.2.0.1"],
    hostAddrs: [],
  });
  assert.equal(denied.decision, "denied");
  assert.equal(denied.rule, "internal");
  assert.match(denied.reason ?? "", /outside the rule's allowed_ips/);
  const audited = decideAddresses({
    policy,
    host: "a.example.com",
    port: 443,
    addresses: ["10.0.0.9", "127.0.0.1"],
    hostAddrs: [],
  });
  assert.equal(audited.decision, "audit");
  assert.deepEqual(audited.addresses, ["10.0.0.9"]);
  assert.match(audited.reason ?? "", /private/);
  const auditLoop = decideAddresses({
    policy,
    host: "a.example.com",
    port: 443,
    addresses: ["127.0.0.1", "::1"],
    hostAddrs: [],
  });
  assert.equal(auditLoop.decision, "denied", "audit never opens loopback");
  const none = decideAddresses({
    policy,
    host: "evil.net",
    port: 443,
    addresses: ["1.1.1.1"],
    hostAddrs: [],
  });
  assert.equal(none.decision, "denied");
  assert.equal(none.reason, "no rule allows this host and port");
  const empty = decideAddresses({
    policy,
    host: "pypi.org",
    port: 443,
    addresses: [],
    hostAddrs: [],
  });
  assert.equal(empty.decision, "denied");
});

Deno.test("decideAddresses: a second matching endpoint may admit what the first refuses", () => {
  const p: Wire<SandboxPolicy> = {
    network_policies: {
      a: { endpoints: [{ host: "svc.corp", port: 80, allowed_ips: ["10.1.0.0/16"] }] },
      b: { endpoints: [{ host: "svc.corp", port: 80, allowed_ips: ["10.2.0.0/16"] }] },
    },
  };
  const d = decideAddresses({
    policy: p,
    host: "svc.corp",
    port: 80,
    addresses: ["10.2.3.4"],
    hostAddrs: [],
  });
  assert.equal(d.decision, "allowed");
  assert.equal(d.rule, "b");
});

Deno.test("validatePolicy: a valid policy and no policy have no errors", () => {
  assert.deepEqual(validatePolicy(policy), []);
  assert.deepEqual(validatePolicy(undefined), []);
  assert.deepEqual(validatePolicy(null), []);
  assert.deepEqual(validatePolicy({}), []);
  // As grpc decodes it: defaults filled in, absent messages null.
  assert.deepEqual(
    validatePolicy({
      version: 0,
      filesystem: null,
      landlock: null,
      process: { run_as_user: "", run_as_group: "" },
      network_policies: {
        r: {
          name: "",
          binaries: [],
          endpoints: [{
            host: "a.example.com",
            port: 443,
            protocol: "",
            tls: "passthrough",
            enforcement: "enforce",
            access: "",
            rules: [],
            allowed_ips: [],
            ports: [],
            deny_rules: [],
            allow_encoded_slash: false,
          }],
        },
      },
    }),
    [],
  );
});

Deno.test("validatePolicy: refused fields name their path", () => {
  const errors = validatePolicy({
    filesystem: { read_only: ["/usr"] },
    landlock: { compatibility: "best_effort" },
    process: { run_as_user: "sandbox" },
    network_policies: {
      pypi: {
        binaries: [{ path: "/usr/bin/pip" }],
        endpoints: [{
          host: "pypi.org",
          port: 443,
          protocol: "rest",
          tls: "terminate",
          access: "read-only",
          rules: [{ allow: { method: "GET" } }],
          deny_rules: [{ method: "POST" }],
          allow_encoded_slash: true,
          enforcement: "block",
        }],
      },
    },
  });
  const p = 'policy.network_policies["pypi"]';
  assert.deepEqual(errors, [
    "policy.filesystem: filesystem policy is not supported; remove it",
    "policy.landlock: landlock policy is not supported; remove it",
    "policy.process: process policy is not supported; remove it",
    `${p}.binaries: per-binary rules are not supported; remove them`,
    `${p}.endpoints[0].protocol: L7 inspection is not supported; remove it`,
    `${p}.endpoints[0].access: L7 access presets are not supported; remove it`,
    `${p}.endpoints[0].rules: L7 rules are not supported; remove them`,
    `${p}.endpoints[0].deny_rules: L7 deny rules are not supported; remove them`,
    `${p}.endpoints[0].allow_encoded_slash: L7 options are not supported; remove it`,
    `${p}.endpoints[0].tls: only "passthrough" is supported (TLS is never terminated); remove it`,
    `${p}.endpoints[0].enforcement: must be "enforce" or "audit", not "block"`,
  ]);
});

Deno.test("validatePolicy: hosts, ports and CIDRs", () => {
  const ep = (e: Record<string, unknown>) =>
    validatePolicy({ network_policies: { r: { endpoints: [e] } } });
  const p = 'policy.network_policies["r"].endpoints[0]';
  assert.deepEqual(ep({ host: "*", port: 1 }), [
    `${p}.host: "*" matches every host; name the hosts (e.g. *.example.com)`,
  ]);
  assert.deepEqual(ep({ host: "**", port: 1 }).length, 1);
  assert.match(ep({ host: "a.*.com", port: 1 })[0], /wildcard may only be the whole first label/);
  assert.match(
    ep({ host: "foo*.example.com", port: 1 })[0],
    /wildcard may only be the whole first label/,
  );
  assert.match(ep({ host: "", port: 1 })[0], /host is empty$/);
  assert.match(ep({ port: 1 })[0], /host is empty$/);
  assert.match(ep({ host: "a..com", port: 1 })[0], /empty label/);
  assert.match(ep({ host: "a b.com", port: 1 })[0], /invalid label/);
  assert.match(ep({ host: `${"a".repeat(64)}.com`, port: 1 })[0], /invalid label/);
  assert.match(ep({ host: `${"a.".repeat(127)}com`, port: 1 })[0], /longer than 253/);
  assert.match(ep({ host: "fe80::1%eth0", port: 1 })[0], /zone/);
  assert.deepEqual(ep({ host: "10.0.0.1", port: 1 }), []);
  assert.deepEqual(ep({ host: "2001:db8::1", port: 1 }), []);
  assert.deepEqual(ep({ host: "**.example.com.", port: 1 }), []);
  assert.deepEqual(ep({ host: "x.com" }), [`${p}: endpoint needs port or ports`]);
  assert.deepEqual(ep({ host: "x.com", port: 0, ports: [] }), [
    `${p}: endpoint needs port or ports`,
  ]);
  assert.deepEqual(ep({ host: "x.com", port: 65536 }), [
    `${p}.port: 65536 is not a port (1-65535)`,
  ]);
  assert.deepEqual(ep({ host: "x.com", ports: [80, 0] }), [
    `${p}.ports[1]: 0 is not a port (1-65535)`,
  ]);
  assert.deepEqual(ep({ host: "x.com", ports: [1.5] }), [
    `${p}.ports[0]: 1.5 is not a port (1-65535)`,
  ]);
  assert.deepEqual(
    ep({ host: "x.com", port: 1, allowed_ips: ["10.0.0.0/8", "fd00::/8", "10.1.2.3"] }),
    [],
  );
  assert.deepEqual(ep({ host: "x.com", port: 1, allowed_ips: ["10.0.0.0/33"] }), [
    `${p}.allowed_ips[0]: "10.0.0.0/33" is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)`,
  ]);
  assert.equal(ep({ host: "x.com", port: 1, allowed_ips: ["example.com/8"] }).length, 1);
  assert.equal(ep({ host: "x.com", port: 1, allowed_ips: ["10.0.0.0/"] }).length, 1);
  assert.equal(ep({ host: "x.com", port: 1, allowed_ips: ["fd00::/129"] }).length, 1);
  assert.equal(ep({ host: "x.com", port: 1, allowed_ips: [""] }).length, 1);
});

Deno.test("validatePolicy: caps on rules, endpoints, ports, allowed_ips, names and errors", () => {
  const many: Wire<SandboxPolicy> = { network_policies: {} };
  for (let i = 0; i <= MAX_RULES; i++) many.network_policies![`r${i}`] = { endpoints: [] };
  assert.deepEqual(validatePolicy(many), [`policy.network_policies: at most 256 rules (got 257)`]);
  const eps = Array.from({ length: 257 }, () => ({ host: "a.com", port: 1 }));
  assert.deepEqual(validatePolicy({ network_policies: { r: { endpoints: eps } } }), [
    'policy.network_policies["r"].endpoints: at most 256 endpoints (got 257)',
  ]);
  const ports = Array.from({ length: 65 }, (_, i) => i + 1);
  assert.match(
    validatePolicy({ network_policies: { r: { endpoints: [{ host: "a.com", ports }] } } })[0],
    /ports: at most 64 ports \(got 65\)/,
  );
  const ips = Array.from({ length: 65 }, () => "10.0.0.0/8");
  assert.match(
    validatePolicy({
      network_policies: { r: { endpoints: [{ host: "a.com", port: 1, allowed_ips: ips }] } },
    })[0],
    /allowed_ips: at most 64 entries \(got 65\)/,
  );
  const long = "n".repeat(129);
  assert.match(
    validatePolicy({ network_policies: { [long]: { endpoints: [] } } })[0],
    /rule name is longer than 128/,
  );
  assert.match(
    validatePolicy({ network_policies: { "": { endpoints: [] } } })[0],
    /rule name is empty/,
  );
  assert.match(
    validatePolicy({ network_policies: { "a\nb": { endpoints: [] } } })[0],
    /control characters/,
  );
  assert.match(
    validatePolicy({ network_policies: { r: { name: long, endpoints: [] } } })[0],
    /\.name: name is longer than 128/,
  );
  const bad = Array.from({ length: 200 }, () => ({ host: "*", port: 0 }));
  const errs = validatePolicy({ network_policies: { r: { endpoints: bad } } });
  assert.equal(errs.length, MAX_ERRORS);
  assert.match(errs[MAX_ERRORS - 1], /^… and \d+ more errors$/);
});

Deno.test("validatePolicy: wrong types are errors, not crashes", () => {
  // deno-lint-ignore no-explicit-any
  const v = (x: any) => validatePolicy(x);
  assert.deepEqual(v("x"), ["policy: must be an object"]);
  assert.deepEqual(v({ network_policies: [] }), [
    "policy.network_policies: must be a map of rule name to rule",
  ]);
  assert.deepEqual(v({ network_policies: { r: null } }), [
    'policy.network_policies["r"]: must be an object with endpoints',
  ]);
  assert.deepEqual(v({ network_policies: { r: { endpoints: "x" } } }), [
    'policy.network_policies["r"].endpoints: must be a list',
  ]);
  assert.deepEqual(v({ network_policies: { r: { endpoints: [null] } } }), [
    'policy.network_policies["r"].endpoints[0]: must be an object with host and port',
  ]);
  assert.match(
    v({ network_policies: { r: { endpoints: [{ host: 5, port: 1 }] } } })[0],
    /host is empty/,
  );
  assert.match(
    v({ network_policies: { r: { endpoints: [{ host: "a.com", port: "80" }] } } })[0],
    /"80" is not a port/,
  );
});

Deno.test("policyHash: deterministic, key-order and default independent, content sensitive", () => {
  const a: Wire<SandboxPolicy> = {
    network_policies: {
      b: { endpoints: [{ host: "b.com", port: 443 }] },
      a: { endpoints: [{ host: "a.com", ports: [80, 443] }] },
    },
  };
  const b: Wire<SandboxPolicy> = {
    version: 0,
    filesystem: null,
    network_policies: {
      a: {
        name: "",
        endpoints: [{ host: "a.com", port: 0, ports: [80, 443], allowed_ips: [], tls: "" }],
      },
      b: { endpoints: [{ host: "b.com", port: 443, enforcement: "" }] },
    },
  };
  const h = policyHash(a);
  assert.match(h, /^[0-9a-f]{64}$/);
  assert.equal(policyHash(b), h);
  assert.equal(policyHash(structuredClone(a)), h);
  assert.notEqual(
    policyHash({ network_policies: { a: { endpoints: [{ host: "a.com", ports: [443, 80] }] } } }),
    h,
  );
  assert.notEqual(
    policyHash({ network_policies: { ...a.network_policies, c: { endpoints: [] } } }),
    h,
  );
  // The empty message: SHA-256 of zero bytes.
  const empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
  assert.equal(policyHash(undefined), empty);
  assert.equal(policyHash({}), empty);
  assert.equal(policyHash({ network_policies: {} }), empty);
});

Deno.test("policyHash: the serialization is protobuf (known bytes)", async () => {
  // SandboxPolicy{network_policies: {"r": {endpoints: [{host: "a", port: 1}]}}}:
  // field 5 (map entry) { key=1:"r", value=2:{ endpoints=2:{ host=1:"a", port=2:1 } } }
  const endpoint = [0x0a, 0x01, 0x61, 0x10, 0x01];
  const rule = [0x12, endpoint.length, ...endpoint];
  const entry = [0x0a, 0x01, 0x72, 0x12, rule.length, ...rule];
  const bytes = new Uint8Array([0x2a, entry.length, ...entry]);
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = [...digest].map((x) => x.toString(16).padStart(2, "0")).join("");
  assert.equal(
    policyHash({ network_policies: { r: { endpoints: [{ host: "a", port: 1 }] } } }),
    hex,
  );
});

Deno.test("dnsAddresses: only what some endpoint naming the host would let through", () => {
  assert.deepEqual(
    dnsAddresses(policy, "db.corp", ["10.1.0.5", "10.2.0.1", "127.0.0.1", "8.8.8.8"], []),
    ["10.1.0.5"],
  );
  assert.deepEqual(
    dnsAddresses(policy, "pypi.org", ["151.101.0.223", "::ffff:127.0.0.1", "fe80::1"], []),
    [
      "151.101.0.223",
    ],
  );
  assert.deepEqual(dnsAddresses(policy, "pypi.org", ["151.101.0.223"], ["151.101.0.223"]), []);
  // Audit endpoints pass private addresses, never loopback.
  assert.deepEqual(dnsAddresses(policy, "a.example.com", ["10.0.0.9", "127.0.0.1"], []), [
    "10.0.0.9",
  ]);
  assert.deepEqual(dnsAddresses(policy, "evil.net", ["1.1.1.1"], []), []);
  assert.deepEqual(dnsAddresses(undefined, "pypi.org", ["1.1.1.1"], []), []);
});
