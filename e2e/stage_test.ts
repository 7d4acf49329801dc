import assert from "node:assert/strict";
import { driverGrants, imageBuilderGrants, renderFlags } from "../core/grants.ts";
import { driverWrapper, imageBuilderWrapper, stageDriverDir } from "./stage.ts";

Deno.test("stage: the wrapper execs deno run with exactly the driver's grants", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osstage" });
  try {
    const opts = {
      dir: `${dir}/bin`,
      stateDir: `${dir}/vm`,
      runtimeDir: `${dir}/rt`,
      gateway: { host: "127.0.0.1", port: 8080 },
    };
    const path = await stageDriverDir(opts);
    assert.equal(path, `${dir}/bin/openshell-driver-vm`);
    assert.equal((await Deno.stat(path)).mode! & 0o111, 0o111, "executable");
    const text = driverWrapper(opts);
    assert.ok(text.startsWith("#!/bin/sh\n"));
    assert.match(
      text,
      /^exec .* run .*driver_vm\/main\.ts --image-builder \S+\/openshell-image-builder "\$@"$/m,
    );
    const grants = driverGrants({
      stateDir: opts.stateDir,
      gateway: opts.gateway,
      runtimeDir: opts.runtimeDir,
      qemu: "/usr/bin/qemu-system-x86_64",
      setpriv: "/usr/bin/setpriv",
      imageBuilder: `${opts.dir}/openshell-image-builder`,
    });
    for (const f of renderFlags(grants)) assert.ok(text.includes(f), `missing ${f}`);
    assert.ok(!text.includes("--allow-all") && !text.includes(" -A "));
    assert.ok(!text.includes("guest.sock"), "no egress socket unless given");
    const egress = driverWrapper({ ...opts, egressSocket: `${dir}/gw/egress/guest.sock` });
    assert.ok(egress.includes(`unix:${dir}/gw/egress/guest.sock`), "the egress socket granted");
    assert.ok(!egress.includes("control.sock"), "not the egress proxy's control socket");
    const out = await new Deno.Command(path, {
      args: ["--version"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    assert.match(new TextDecoder().decode(out.stdout), /^openshell-driver-vm \S+/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("stage: the image builder's wrapper runs it with exactly its own grants", async () => {
  const dir = await Deno.makeTempDir({ prefix: "osstage" });
  try {
    const opts = {
      dir: `${dir}/bin`,
      stateDir: `${dir}/vm`,
      runtimeDir: `${dir}/rt`,
      gateway: { host: "127.0.0.1", port: 8080 },
    };
    await stageDriverDir(opts);
    const text = imageBuilderWrapper(opts);
    for (const f of renderFlags(imageBuilderGrants({ stateDir: opts.stateDir }))) {
      assert.ok(text.includes(f), `missing ${f}`);
    }
    assert.ok(!text.includes("--allow-net"), "no network grant");
    const out = await new Deno.Command(`${dir}/bin/openshell-image-builder`, {
      args: ["nope", "--work", "/w", "--out", "/o"],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(out.code, 2);
    assert.match(
      new TextDecoder().decode(out.stderr),
      /unknown command "nope" \(build or import\)/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
