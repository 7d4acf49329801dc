import assert from "node:assert/strict";
import { policyHash, validatePolicy } from "../core/policy.ts";
import {
  ALLOW_RULE,
  composePolicy,
  parseAllow,
  parsePolicyYaml,
  PolicyInputError,
  presetRule,
  PRESETS,
  readPolicyFile,
  renderPolicyYaml,
} from "./policy_file.ts";

const FIVE_LINES = `network_policies:
  pypi:
    endpoints:
      - { host: pypi.org, port: 443 }
      - { host: files.pythonhosted.org, port: 443 }
`;

function fails(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PolicyInputError, String(e));
    assert.ok(!e.message.includes("\n"), `one line: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

Deno.test("policy YAML: upstream's shape parses into the wire policy", () => {
  const p = parsePolicyYaml(
    `version: 1
network_policies:
  api:
    name: api
    endpoints:
      - host: "*.example.com"
        ports: [80, 443]
        enforcement: audit
      - host: db.internal
        port: 5432
        allowed_ips: ["10.0.0.0/8"]
        tls: passthrough
  empty:
`,
    "p.yaml",
  );
  assert.equal(p.version, 1);
  assert.deepEqual(p.network_policies?.api, {
    name: "api",
    endpoints: [
      { host: "*.example.com", ports: [80, 443], enforcement: "audit" },
      { host: "db.internal", port: 5432, allowed_ips: ["10.0.0.0/8"], tls: "passthrough" },
    ],
  });
  assert.deepEqual(p.network_policies?.empty, { name: "", endpoints: [] });
  assert.deepEqual(validatePolicy(p), []);
  const five = parsePolicyYaml(FIVE_LINES, "five.yaml");
  assert.equal(five.network_policies?.pypi.endpoints?.length, 2);
  // No rules at all: valid, denies everything.
  assert.deepEqual(parsePolicyYaml("network_policies: {}\n", "deny.yaml"), {
    network_policies: {},
  });
});

Deno.test("policy YAML: unknown and unsupported keys are one line with file:line:col and the path", () => {
  fails(
    () =>
      parsePolicyYaml(
        "network_policies:\n  pypi:\n    endpoints:\n      - hots: pypi.org\n        port: 443\n",
        "p.yaml",
      ),
    /^p\.yaml:4:9: network_policies\.pypi\.endpoints\[0\]\.hots: unknown key \(expected host, port, ports, allowed_ips, enforcement, tls\)$/,
  );
  fails(
    () =>
      parsePolicyYaml(
        "network_policies:\n  api:\n    endpoints:\n      - {host: a.example, port: 443, protocol: rest}\n",
        "p.yaml",
      ),
    /^p\.yaml:4:\d+: network_policies\.api\.endpoints\[0\]\.protocol: L7 inspection is not supported; remove it$/,
  );
  fails(
    () =>
      parsePolicyYaml("filesystem_policy:\n  read_only: [/usr]\nnetwork_policies: {}\n", "p.yaml"),
    /^p\.yaml:1:1: filesystem_policy: filesystem policy is not supported/,
  );
  fails(
    () =>
      parsePolicyYaml("network_policies:\n  r:\n    binaries: [{path: /usr/bin/curl}]\n", "p.yaml"),
    /network_policies\.r\.binaries: per-binary rules are not supported/,
  );
  fails(
    () => parsePolicyYaml("netwrk_policies: {}\n", "p.yaml"),
    /^p\.yaml:1:1: netwrk_policies: unknown key/,
  );
  fails(
    () =>
      parsePolicyYaml(
        'network_policies:\n  "a.b":\n    endpoints: [{host: x, port: 1, x: 2}]\n',
        "p.yaml",
      ),
    /network_policies\["a\.b"\]\.endpoints\[0\]\.x: unknown key/,
  );
});

Deno.test("policy YAML: wrong types, bad YAML, aliases, empty files and invalid values", () => {
  fails(
    () =>
      parsePolicyYaml(
        'network_policies:\n  r:\n    endpoints: [{host: x, port: "443"}]\n',
        "p.yaml",
      ),
    /network_policies\.r\.endpoints\[0\]\.port: must be a whole number/,
  );
  fails(
    () => parsePolicyYaml("network_policies:\n  r:\n    endpoints: {host: x}\n", "p.yaml"),
    /network_policies\.r\.endpoints: must be a list of endpoints/,
  );
  fails(
    () => parsePolicyYaml("network_policies: [a]\n", "p.yaml"),
    /network_policies: must be a mapping/,
  );
  fails(
    () => parsePolicyYaml("network_policies:\n  r: {endpoints: [\n", "p.yaml"),
    /^p\.yaml:\d+:\d+: not valid YAML/,
  );
  fails(
    () => parsePolicyYaml("network_policies:\n  r: {}\n  r: {}\n", "p.yaml"),
    /not valid YAML: Map keys must be unique/,
  );
  fails(
    () =>
      parsePolicyYaml(
        "x: &e {host: a, port: 1}\nnetwork_policies:\n  r:\n    endpoints: [*e]\n",
        "p.yaml",
      ),
    /x: unknown key/,
  );
  fails(
    () =>
      parsePolicyYaml(
        "network_policies:\n  r:\n    endpoints: [&e {host: a, port: 1}, *e]\n",
        "p.yaml",
      ),
    /endpoints\[1\]: YAML aliases are not supported/,
  );
  fails(() => parsePolicyYaml("", "p.yaml"), /^p\.yaml: the file is empty/);
  fails(() => parsePolicyYaml("# nothing\n", "p.yaml"), /the file is empty/);
  // Values the gateway would refuse are refused here first, with validatePolicy's path.
  fails(
    () =>
      parsePolicyYaml("network_policies:\n  r:\n    endpoints: [{host: a.example}]\n", "p.yaml"),
    /^p\.yaml: policy\.network_policies\["r"\]\.endpoints\[0\]: endpoint needs port or ports$/,
  );
  fails(
    () =>
      parsePolicyYaml(
        'network_policies:\n  r:\n    endpoints: [{host: "a.*.com", port: 70000}]\n',
        "p.yaml",
      ),
    /\(and 1 more problems\)$/,
  );
});

Deno.test("renderPolicyYaml: round-trips, defaults left out, rules in name order", () => {
  const p = parsePolicyYaml(
    FIVE_LINES.replace("pypi:", "zeta:") +
      "  alpha:\n    endpoints:\n      - {host: a.example, ports: [1, 2], enforcement: audit}\n",
    "p.yaml",
  );
  const yaml = renderPolicyYaml(p);
  assert.ok(yaml.indexOf("alpha:") < yaml.indexOf("zeta:"), yaml);
  assert.ok(!yaml.includes("name:"), "a name equal to its key is left out");
  assert.equal(policyHash(parsePolicyYaml(yaml, "again")), policyHash(p));
  // A decoded wire policy (defaults filled in) renders the same.
  const decoded = {
    version: 0,
    filesystem: null,
    network_policies: {
      r: {
        name: "r",
        binaries: [],
        endpoints: [{
          host: "x.example",
          port: 443,
          protocol: "",
          tls: "",
          enforcement: "",
          access: "",
          rules: [],
          allowed_ips: [],
          ports: [],
          deny_rules: [],
          allow_encoded_slash: false,
        }],
      },
    },
  };
  assert.equal(
    renderPolicyYaml(decoded),
    "network_policies:\n  r:\n    endpoints:\n      - host: x.example\n        port: 443\n",
  );
  assert.equal(renderPolicyYaml(null), "network_policies: {}\n");
});

Deno.test("--allow: HOST defaults to port 443; HOST:PORT, IPv6 and globs; bad values named", () => {
  assert.deepEqual(parseAllow("pypi.org"), { host: "pypi.org", port: 443 });
  assert.deepEqual(parseAllow("example.com:80"), { host: "example.com", port: 80 });
  assert.deepEqual(parseAllow("*.example.com:8443"), { host: "*.example.com", port: 8443 });
  assert.deepEqual(parseAllow("[2001:db8::1]:22"), { host: "2001:db8::1", port: 22 });
  assert.deepEqual(parseAllow("[2001:db8::1]"), { host: "2001:db8::1", port: 443 });
  assert.deepEqual(parseAllow("10.1.2.3:5432"), { host: "10.1.2.3", port: 5432 });
  fails(() => parseAllow("example.com:0"), /^--allow example\.com:0: 0 is not a port/);
  fails(() => parseAllow("example.com:99999"), /99999 is not a port/);
  fails(() => parseAllow("example.com:https"), /the port must be a number/);
  fails(() => parseAllow("*"), /^--allow \*: /);
  fails(() => parseAllow(""), /^--allow : /);
  fails(() => parseAllow("a.*.com"), /^--allow a\.\*\.com: /);
});

Deno.test("presets: every preset is a valid rule named like its file, embedded as text", () => {
  assert.deepEqual(Object.keys(PRESETS).sort(), ["debian", "github", "npm", "pypi"]);
  for (const name of Object.keys(PRESETS)) {
    const rule = presetRule(name);
    assert.ok((rule.endpoints ?? []).length > 0, name);
    assert.deepEqual(validatePolicy({ network_policies: { [name]: rule } }), [], name);
  }
  const hosts = (name: string) => presetRule(name).endpoints!.map((e) => e.host);
  assert.ok(hosts("pypi").includes("files.pythonhosted.org"));
  assert.ok(hosts("npm").includes("registry.npmjs.org"));
  assert.ok(hosts("debian").includes("deb.debian.org"));
  assert.ok(hosts("github").includes("github.com"));
  fails(
    () => presetRule("pipy"),
    /^--preset pipy: no such preset \(there are debian, github, npm, pypi\)$/,
  );
});

Deno.test("composePolicy: file, presets and --allow side by side; clashes and nothing given", () => {
  assert.equal(composePolicy({}), undefined);
  const p = composePolicy({
    file: {
      text: "network_policies:\n  api:\n    endpoints: [{host: api.example, port: 443}]\n",
      source: "f.yaml",
    },
    presets: ["pypi", "npm", "pypi"],
    allow: ["example.com", "mirror.example:8080"],
  })!;
  assert.deepEqual(Object.keys(p.network_policies!).sort(), ["allow", "api", "npm", "pypi"]);
  assert.deepEqual(p.network_policies![ALLOW_RULE].endpoints, [
    { host: "example.com", port: 443 },
    { host: "mirror.example", port: 8080 },
  ]);
  fails(
    () =>
      composePolicy({
        file: {
          text: "network_policies:\n  pypi:\n    endpoints: [{host: x, port: 1}]\n",
          source: "f.yaml",
        },
        presets: ["pypi"],
      }),
    /rule "pypi" is given twice \(--preset pypi and f\.yaml\)/,
  );
  fails(() => composePolicy({ allow: ["ok.example", "bad:port"] }), /^--allow bad:port/);
});

Deno.test("readPolicyFile: missing, too big and non-UTF-8 files are one clear line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      readPolicyFile(`${dir}/nope.yaml`),
      /^PolicyInputError: --policy .*nope\.yaml: cannot read it/,
    );
    await Deno.writeFile(`${dir}/big.yaml`, new Uint8Array(1024 * 1024 + 1));
    await assert.rejects(readPolicyFile(`${dir}/big.yaml`), /a policy file is at most 1048576/);
    await Deno.writeFile(`${dir}/bin.yaml`, new Uint8Array([0xff, 0xfe, 0x00]));
    await assert.rejects(readPolicyFile(`${dir}/bin.yaml`), /not UTF-8 text/);
    await Deno.writeTextFile(`${dir}/ok.yaml`, FIVE_LINES);
    assert.deepEqual(await readPolicyFile(`${dir}/ok.yaml`), {
      text: FIVE_LINES,
      source: `${dir}/ok.yaml`,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
