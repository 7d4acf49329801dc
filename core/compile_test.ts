import assert from "node:assert/strict";
import { compilePlan, isDenortFailure, parseCompileArgs, parseHostPort } from "./compile.ts";
import { REPO_ROOT } from "./launcher.ts";

Deno.test("compile plan builds every role's binary with production grants", () => {
  const plan = compilePlan(parseCompileArgs(["--out", "/o"]));
  assert.deepEqual(plan.map((s) => s.output), [
    "/o/openshell",
    "/o/openshell-gateway",
    "/o/openshell-driver-vm",
    "/o/openshell-sandbox",
    "/o/openshell-egress",
  ]);
  const egress = plan.find((s) => s.role === "egress")!;
  assert.ok(egress.args.includes("--allow-net"));
  assert.ok(egress.args.includes("--allow-read=/var/lib/openshell/gateway/egress"));
  assert.ok(egress.args.includes("--allow-sys=networkInterfaces"));
  assert.ok(!egress.args.some((a) => a.startsWith("--allow-run")));
  assert.ok(
    compilePlan(parseCompileArgs(["--out=/o", "--role=egress", "--egress-state-dir=/e"]))[0].args
      .includes("--allow-write=/e"),
  );
  const sup = plan.find((s) => s.role === "supervisor")!;
  assert.ok(
    sup.args.includes(
      "--allow-net=gateway.openshell.internal,10.0.2.100:8080,unix:/run/openshell/ssh.sock",
    ),
  );
  assert.ok(sup.args.includes("--allow-run=/usr/sbin/sshd"));
  const gw = plan.find((s) => s.role === "gateway")!;
  assert.ok(gw.args.some((a) => a.startsWith("--allow-net=0.0.0.0:8080,127.0.0.1:8081,")));
  const drv = plan.find((s) => s.role === "driver-vm")!;
  assert.ok(drv.args.some((a) => a.startsWith("--allow-net=") && a.endsWith(",127.0.0.1:8081")));
});

Deno.test("the driver may dial the supervisor plane it is compiled with, on loopback when unspecified", () => {
  const net = (...args: string[]) =>
    compilePlan(parseCompileArgs(["--out=/o", "--role=driver-vm", ...args]))[0]
      .args.find((a) => a.startsWith("--allow-net="))!.split(",").at(-1);
  assert.equal(net("--supervisor-listen=0.0.0.0:9000"), "127.0.0.1:9000");
  assert.equal(net("--supervisor-listen=10.1.2.3:8443"), "10.1.2.3:8443");
  // The user API's address does not move what guests reach.
  assert.equal(net("--gateway-listen=0.0.0.0:9000"), "127.0.0.1:8081");
});

Deno.test("the driver may use the egress proxy's guest socket of the gateway it is compiled with", () => {
  const net = (...args: string[]) =>
    compilePlan(parseCompileArgs(["--out=/o", "--role=driver-vm", ...args]))[0]
      .args.find((a) => a.startsWith("--allow-net="))!.split(",");
  assert.ok(net().includes("unix:/var/lib/openshell/gateway/egress/guest.sock"));
  const moved = net("--gateway-state-dir=/srv/gw");
  assert.ok(moved.includes("unix:/srv/gw/egress/guest.sock"));
  assert.ok(!moved.some((g) => g.includes("/var/lib/openshell/gateway/")));
});

Deno.test("compile options override the deployment parameters", () => {
  const plan = compilePlan(parseCompileArgs([
    "--out=/o",
    "--role=supervisor",
    "--supervisor-gateway=10.0.0.1:9443",
    "--ssh-socket-path=/run/x/s.sock",
  ]));
  assert.equal(plan.length, 1);
  assert.ok(plan[0].args.includes("--allow-net=10.0.0.1:9443,unix:/run/x/s.sock"));
  // The socket's directory, plus the session cgroup directory every supervisor writes.
  assert.ok(plan[0].args.includes("--allow-write=/run/x,/run/openshell-sessions"));
});

Deno.test("bad compile options are refused with a clear message", () => {
  assert.throws(() => parseCompileArgs(["--role=nope"]), /unknown role "nope"/);
  assert.throws(() => parseHostPort("nohost", "--x"), /expected HOST:PORT/);
  assert.throws(() => parseHostPort("h:99999", "--x"), /expected HOST:PORT/);
  assert.deepEqual(parseHostPort("[::1]:80", "--x"), { host: "::1", port: 80 });
});

Deno.test("compile either builds or explains how to provide denort", async () => {
  const out = await Deno.makeTempDir();
  try {
    const res = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${REPO_ROOT}/core/compile.ts`, "--out", out, "--role", "supervisor"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(res.stderr);
    if (res.success) {
      assert.ok((await Deno.stat(`${out}/openshell-sandbox`)).isFile);
    } else {
      assert.equal(res.code, 1);
      assert.ok(isDenortFailure(stderr) && stderr.includes("DENORT_BIN"), stderr);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
