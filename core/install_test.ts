import assert from "node:assert/strict";
import {
  cliGrants,
  driverGrants,
  egressGrants,
  gatewayGrants,
  type Grants,
  imageBuilderRunArgs,
  renderFlags,
  type Role,
  supervisorGrants,
} from "./grants.ts";
import {
  checkOptions,
  checkTrustedSources,
  installDefaults,
  InstallError,
  type InstallOptions,
  installPlan,
  installSummary,
  parseInstallArgs,
  parseManifest,
  renderWrapper,
  WRAPPER_MARK,
} from "./install.ts";

const OPTIONS: InstallOptions = {
  root: "/opt/os",
  repo: "/src/openshell",
  deno: "/npx/deno",
  copyDeno: true,
  stateDir: "/var/lib/openshell",
  vmCacheDir: "/root/.cache/openshell-deno/vm",
  gatewayListen: { host: "127.0.0.1", port: 8080 },
  supervisorListen: { host: "127.0.0.1", port: 8081 },
  supervisorGateway: { host: "127.0.0.1", port: 8081 },
  sshSocketPath: "/run/openshell/ssh.sock",
  supervisorFilesDir: "/etc/openshell",
};

/** The argv a wrapper execs (its last line), unquoted (the test paths need no quoting). */
function execLine(text: string): string[] {
  const line = text.trimEnd().split("\n").at(-1)!;
  assert.ok(line.startsWith("exec ") && line.endsWith(' "$@"'), line);
  return line.slice(5, -5).split(" ").map((w) => w.replace(/^'(.*)'$/, "$1"));
}

function wrapperOf(plan: ReturnType<typeof installPlan>, path: string): string {
  const f = plan.files.find((x) => x.path === path);
  assert.ok(f && "text" in f.content, `no wrapper ${path}`);
  return f.content.text;
}

Deno.test("install plan: five wrappers on the PATH, the image builder, deno and the manifest", () => {
  const plan = installPlan(OPTIONS);
  assert.deepEqual(plan.files.map((f) => [f.path, f.mode.toString(8)]), [
    ["/opt/os/lib/openshell/deno", "755"],
    ["/opt/os/bin/openshell", "755"],
    ["/opt/os/bin/openshell-gateway", "755"],
    ["/opt/os/bin/openshell-driver-vm", "755"],
    ["/opt/os/bin/openshell-sandbox", "755"],
    ["/opt/os/bin/openshell-egress", "755"],
    ["/opt/os/lib/openshell/openshell-image-builder", "755"],
    ["/opt/os/lib/openshell/openshell-vm-image", "755"],
    ["/opt/os/lib/openshell/install.json", "644"],
  ]);
  assert.deepEqual(plan.files[0].content, { copyFrom: "/npx/deno" });
  assert.deepEqual(plan.manifest.files, plan.files.map((f) => f.path));
  const m = parseManifest(
    wrapperOf(plan, "/opt/os/lib/openshell/install.json"),
    "install.json",
  );
  assert.deepEqual(m, plan.manifest);
  assert.equal(m.gateway.url, "https://127.0.0.1:8080");
  assert.equal(m.gateway.pidFile, "/var/lib/openshell/gateway/gateway.pid");
  assert.equal(m.gateway.logFile, "/var/lib/openshell/gateway/gateway.log");
  assert.equal(m.gateway.driverDir, "/opt/os/bin");
  assert.deepEqual(m.vm, {
    stateDir: "/var/lib/openshell/vm",
    cacheDir: "/root/.cache/openshell-deno/vm",
  });
  // Referenced instead of copied: no deno file, the wrappers exec the given one.
  const ref = installPlan({ ...OPTIONS, copyDeno: false });
  assert.ok(!ref.files.some((f) => f.path.endsWith("/deno")));
  assert.equal(execLine(wrapperOf(ref, "/opt/os/bin/openshell"))[0], "/npx/deno");
});

Deno.test("install plan: each wrapper runs its role with exactly its grants from grants.ts", () => {
  const plan = installPlan(OPTIONS);
  const expected: Record<Role, Grants> = {
    "gateway": gatewayGrants({
      listen: { host: "127.0.0.1", port: 8080 },
      supervisorListen: { host: "127.0.0.1", port: 8081 },
      stateDir: "/var/lib/openshell/gateway",
      driverBinary: "/opt/os/bin/openshell-driver-vm",
      driverStateDir: "/var/lib/openshell/vm",
      egressBinary: "/opt/os/bin/openshell-egress",
      egressStateDir: "/var/lib/openshell/gateway/egress",
    }),
    "driver-vm": driverGrants({
      stateDir: "/var/lib/openshell/vm",
      gateway: { host: "127.0.0.1", port: 8081 },
      runtimeDir: "/root/.cache/openshell-deno/vm",
      qemu: "/usr/bin/qemu-system-x86_64",
      setpriv: "/usr/bin/setpriv",
      imageBuilder: "/opt/os/lib/openshell/openshell-image-builder",
      egressSocket: "/var/lib/openshell/gateway/egress/guest.sock",
    }),
    "supervisor": supervisorGrants({
      gateway: { host: "127.0.0.1", port: 8081 },
      socketPath: "/run/openshell/ssh.sock",
      sshd: "/usr/sbin/sshd",
      readFiles: ["/etc/openshell"],
      writeFiles: ["/etc/openshell"],
      sessionCgroup: "/run/openshell-sessions",
    }),
    "cli": cliGrants({
      run: ["/opt/os/bin/openshell-gateway", "/opt/os/lib/openshell/openshell-vm-image"]
        .concat(["/bin/kill", "/bin/ps"]),
    }),
    "egress": egressGrants({ stateDir: "/var/lib/openshell/gateway/egress" }),
  };
  const entries: Record<Role, string> = {
    "gateway": "gateway/main.ts",
    "driver-vm": "driver_vm/main.ts",
    "supervisor": "supervisor/main.ts",
    "cli": "cli/main.ts",
    "egress": "egress/main.ts",
  };
  const bins: Record<Role, string> = {
    "gateway": "openshell-gateway",
    "driver-vm": "openshell-driver-vm",
    "supervisor": "openshell-sandbox",
    "cli": "openshell",
    "egress": "openshell-egress",
  };
  for (const role of Object.keys(expected) as Role[]) {
    assert.deepEqual(plan.grants[role], expected[role], role);
    const argv = execLine(wrapperOf(plan, `/opt/os/bin/${bins[role]}`));
    assert.deepEqual(argv, [
      "/opt/os/lib/openshell/deno",
      "run",
      "--quiet",
      "--config=/src/openshell/deno.json",
      ...renderFlags(expected[role]),
      `/src/openshell/${entries[role]}`,
    ], role);
  }
  // The gateway may run its driver and egress proxy and nothing else; the driver qemu,
  // setpriv, qemu-img and its image builder, which runs with exactly its own grants.
  assert.deepEqual(plan.grants.gateway.run, [
    "/opt/os/bin/openshell-driver-vm",
    "/opt/os/bin/openshell-egress",
  ]);
  assert.deepEqual(plan.grants["driver-vm"].run, [
    "/usr/bin/qemu-system-x86_64",
    "/usr/bin/setpriv",
    "/usr/bin/qemu-img",
    "/opt/os/lib/openshell/openshell-image-builder",
  ]);
  const builder = execLine(wrapperOf(plan, "/opt/os/lib/openshell/openshell-image-builder"));
  assert.deepEqual(builder, [
    "/opt/os/lib/openshell/deno",
    ...imageBuilderRunArgs("/src/openshell", "/var/lib/openshell/vm"),
  ]);
  assert.match(
    wrapperOf(plan, "/opt/os/bin/openshell-driver-vm"),
    /\|\| OPENSHELL_VM_IMAGE_BUILDER=\/opt\/os\/lib\/openshell\/openshell-image-builder\n/,
  );
});

Deno.test("install plan: the gateway's defaults match its grants; the CLI names its install", () => {
  const plan = installPlan(OPTIONS);
  const gw = wrapperOf(plan, "/opt/os/bin/openshell-gateway");
  for (
    const [name, value] of [
      ["OPENSHELL_STATE_DIR", "/var/lib/openshell/gateway"],
      ["OPENSHELL_BIND_ADDRESS", "127.0.0.1"],
      ["OPENSHELL_SERVER_PORT", "8080"],
      ["OPENSHELL_SUPERVISOR_BIND_ADDRESS", "127.0.0.1"],
      ["OPENSHELL_SUPERVISOR_PORT", "8081"],
      ["OPENSHELL_DRIVER_DIR", "/opt/os/bin"],
      ["OPENSHELL_VM_DRIVER_STATE_DIR", "/var/lib/openshell/vm"],
      ["OPENSHELL_VM_RUNTIME_DIR", "/root/.cache/openshell-deno/vm/current"],
      // The gateway starts the egress proxy on the dir the proxy's own grants name.
      ["OPENSHELL_EGRESS_STATE_DIR", "/var/lib/openshell/gateway/egress"],
    ]
  ) {
    assert.ok(gw.includes(`[ -n "\${${name}:-}" ] || ${name}=${value}\n`), `${name} in\n${gw}`);
  }
  assert.ok(gw.includes(WRAPPER_MARK));
  const cli = wrapperOf(plan, "/opt/os/bin/openshell");
  assert.ok(cli.includes("\nOPENSHELL_INSTALL=/opt/os/lib/openshell/install.json\n"), cli);
  const image = wrapperOf(plan, "/opt/os/lib/openshell/openshell-vm-image");
  assert.ok(image.includes("OPENSHELL_VM_CACHE_DIR=/root/.cache/openshell-deno/vm\n"));
  assert.ok(image.trimEnd().endsWith('/src/openshell/driver_vm/image/build.ts "$@"'));
});

Deno.test("wrapper: quotes its values, sets defaults only when unset, and execs (same pid)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/w`;
    const text = renderWrapper({
      name: "w",
      what: "test",
      repo: "/r",
      vars: [
        { name: "OS_DEFAULT", value: "it's $HOME `x`", default: true },
        { name: "OS_FORCED", value: "forced value" },
      ],
      argv: ["/bin/sh", "-c", 'echo "$$|$OS_DEFAULT|$OS_FORCED|$DENO_NO_UPDATE_CHECK|$1"', "sh"],
    });
    await Deno.writeTextFile(path, text, { mode: 0o755 });
    const run = async (env: Record<string, string>) => {
      const child = new Deno.Command(path, {
        args: ["arg one"],
        env,
        clearEnv: true,
        stdout: "piped",
      }).spawn();
      const out = new TextDecoder().decode((await child.output()).stdout).trim();
      return { pid: child.pid, fields: out.split("|") };
    };
    const a = await run({ OS_FORCED: "mine" });
    assert.equal(Number(a.fields[0]), a.pid, "exec: the program has the wrapper's pid");
    assert.deepEqual(a.fields.slice(1), ["it's $HOME `x`", "forced value", "1", "arg one"]);
    const b = await run({ OS_DEFAULT: "set by the user" });
    assert.equal(b.fields[1], "set by the user");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("install defaults: root and users, DENO_INSTALL_ROOT, XDG dirs", () => {
  const env = (vars: Record<string, string>) => (n: string) => vars[n];
  const root = installDefaults(env({ HOME: "/root" }), { uid: 0, deno: "/d", repo: "/r" });
  assert.equal(root.root, "/root/.deno");
  assert.equal(root.stateDir, "/var/lib/openshell");
  assert.equal(root.vmCacheDir, "/root/.cache/openshell-deno/vm");
  const user = installDefaults(
    env({
      HOME: "/home/u",
      DENO_INSTALL_ROOT: "/home/u/.local/",
      XDG_STATE_HOME: "/home/u/st",
      XDG_CACHE_HOME: "/home/u/c",
    }),
    { uid: 1000, deno: "/d", repo: "/r" },
  );
  assert.equal(user.root, "/home/u/.local");
  assert.equal(user.stateDir, "/home/u/st/openshell");
  assert.equal(user.vmCacheDir, "/home/u/c/openshell-deno/vm");
  assert.equal(
    installDefaults(env({ HOME: "/home/u" }), { uid: 1000, deno: "/d" }).stateDir,
    "/home/u/.local/state/openshell",
  );
});

Deno.test("install arguments: addresses follow each other; mistakes are one line", () => {
  const req = parseInstallArgs([
    "--root=/x",
    "--state-dir",
    "/s/",
    "--gateway-listen",
    "0.0.0.0:9000",
    "--supervisor-listen",
    "0.0.0.0:9001",
  ], OPTIONS);
  assert.equal(req.kind, "install");
  if (req.kind !== "install") return;
  assert.equal(req.options.root, "/x");
  assert.equal(req.options.stateDir, "/s");
  assert.deepEqual(req.options.supervisorGateway, { host: "127.0.0.1", port: 9001 });
  const plan = installPlan(req.options);
  assert.equal(plan.manifest.gateway.url, "https://127.0.0.1:9000");
  assert.ok(
    plan.grants["driver-vm"].net !== true &&
      plan.grants["driver-vm"].net.includes("127.0.0.1:9001"),
  );
  assert.deepEqual(parseInstallArgs(["--uninstall", "--root", "/x"], OPTIONS), {
    kind: "uninstall",
    root: "/x",
  });
  const bad = (args: string[], message: RegExp) =>
    assert.throws(() => parseInstallArgs(args, OPTIONS), (e: unknown) => {
      assert.ok(e instanceof InstallError, String(e));
      assert.match(e.message, message);
      assert.doesNotMatch(e.message, /\n/);
      return true;
    });
  bad(["--root", "rel"], /--root must be an absolute path, got "rel"/);
  bad(["--gateway-listen", "8080"], /--gateway-listen: expected HOST:PORT/);
  bad(["--gateway-listen", "127.0.0.1:9", "--supervisor-listen", "127.0.0.1:9"], /must differ/);
  bad(["--gateway-listen", "127.0.0.1:0"], /fixed at install time/);
  bad(["--state-dir", `/${"x".repeat(100)}`], /too long for its sockets/);
  bad(["--bogus"], /bogus/);
  assert.deepEqual(checkOptions(OPTIONS), []);
});

Deno.test("install summary: what went where, the PATH hint only when needed, next steps", () => {
  const plan = installPlan(OPTIONS);
  const off = installSummary(plan, "/usr/bin:/bin");
  assert.ok(off.includes('/opt/os/bin is not on your PATH: export PATH="/opt/os/bin:$PATH"'));
  assert.ok(off.includes("openshell gateway start && openshell sandbox create -- echo hi"));
  assert.ok(off.includes("deno task install --uninstall --root /opt/os"));
  assert.ok(!installSummary(plan, "/usr/bin:/opt/os/bin/").includes("not on your PATH"));
});

Deno.test("install refuses sources others can change; node_modules write bits are removed", async () => {
  const repo = await Deno.makeTempDir({ prefix: "ostrust-" });
  try {
    const uid = Deno.uid()!;
    await Deno.chmod(repo, 0o755);
    await Deno.mkdir(`${repo}/core`, { mode: 0o755 });
    await Deno.writeTextFile(`${repo}/core/a.ts`, "export {};\n", { mode: 0o644 });
    await Deno.mkdir(`${repo}/node_modules/pkg`, { recursive: true, mode: 0o755 });
    await Deno.writeTextFile(`${repo}/node_modules/pkg/index.js`, "", { mode: 0o644 });
    await Deno.chmod(`${repo}/node_modules/pkg/index.js`, 0o666);
    const deno = Deno.execPath();
    await checkTrustedSources({ repo, deno }, uid);
    assert.equal((await Deno.stat(`${repo}/node_modules/pkg/index.js`)).mode! & 0o777, 0o644);
    await Deno.chmod(`${repo}/core/a.ts`, 0o664);
    await assert.rejects(
      () => checkTrustedSources({ repo, deno }, uid),
      /^InstallError: refusing to install: .*core\/a\.ts is writable by other users \(mode 0664\)/,
    );
    await Deno.chmod(`${repo}/core/a.ts`, 0o644);
    await Deno.chmod(`${repo}/core`, 0o777);
    await assert.rejects(
      () => checkTrustedSources({ repo, deno }, uid),
      /core is writable by other/,
    );
    await Deno.chmod(`${repo}/core`, 0o755);
    if (uid === 0) {
      await Deno.chown(`${repo}/core/a.ts`, 65534, 65534);
      await assert.rejects(
        () => checkTrustedSources({ repo, deno }, uid),
        /core\/a\.ts is owned by uid 65534/,
      );
    }
  } finally {
    await Deno.remove(repo, { recursive: true });
  }
});
