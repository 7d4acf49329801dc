import assert from "node:assert/strict";
import { ConfigStore } from "./config.ts";
import { gatewaysOf as gatewaysWith } from "./launch.ts";

const noEnv = () => undefined;
const gatewaysOf = (args: string[], root: string) => gatewaysWith(args, root, noEnv);

Deno.test("the dev launcher grants exactly the gateway the arguments select", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const root = `${dir}/openshell`;
    assert.deepEqual(
      await gatewaysOf(["--gateway-endpoint", "http://10.0.0.5:8080", "sandbox", "list"], root),
      [{ host: "10.0.0.5", port: 8080 }],
    );
    assert.deepEqual(
      await gatewaysOf(
        ["ssh-proxy", "--gateway", "https://gw.example/connect/ssh", "--sandbox-id", "s"],
        root,
      ),
      [{ host: "gw.example", port: 443 }],
      "upstream's form: --gateway URL",
    );
    assert.deepEqual(
      await gatewaysOf(
        ["ssh-proxy", "--gateway-url", "https://gw2.example:8443/connect/ssh", "-g", "local"],
        root,
      ),
      [{ host: "gw2.example", port: 8443 }],
      "what ssh sessions emit: --gateway-url URL --gateway NAME",
    );
    assert.deepEqual(await gatewaysOf(["--bogus"], root), [], "bad arguments: no network");
    await new ConfigStore(root).addGateway({ name: "local", endpoint: "http://localhost:9000" });
    assert.deepEqual(
      (await gatewaysOf(["-g", "local", "status"], root)).map((h) => `${h.host}:${h.port}`),
      // The bare name (port 0) for the DNS lookup Deno checks, then the addresses on that port.
      ["localhost:0", "127.0.0.1:9000", "::1:9000"],
    );
    assert.deepEqual(await gatewaysOf(["-g", "missing", "status"], root), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the dev launcher lets image import and build --script read the file they name", async () => {
  const { readsNamedFiles } = await import("./launch.ts");
  assert.equal(readsNamedFiles(["image", "import", "mine", "/tmp/rootfs.tar"]), true);
  assert.equal(readsNamedFiles(["image", "build", "py", "--script", "/tmp/s.sh"]), true);
  assert.equal(readsNamedFiles(["image", "build", "py", "--packages", "cowsay"]), false);
  // --policy FILE is read wherever it is; --allow and --preset read nothing.
  assert.equal(readsNamedFiles(["policy", "set", "dev", "--policy", "/tmp/p.yaml"]), true);
  assert.equal(readsNamedFiles(["sandbox", "create", "--policy", "/tmp/p.yaml"]), true);
  assert.equal(readsNamedFiles(["policy", "set", "dev", "--allow", "x.example"]), false);
  assert.equal(readsNamedFiles(["sandbox", "create", "--preset", "pypi"]), false);
  assert.equal(readsNamedFiles(["image", "list"]), false);
  assert.equal(readsNamedFiles(["sandbox", "list"]), false);
});
