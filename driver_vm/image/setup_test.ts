import assert from "node:assert/strict";
import { parseCandidate, parseKernelDepends } from "./setup.ts";

Deno.test("setup: the kernel package from apt-cache depends", () => {
  const text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
  assert.equal(parseKernelDepends(text), "linux-image-6.1.0-56-cloud-amd64");
  assert.equal(parseKernelDepends("linux-image-cloud-amd64\n"), undefined);
});

Deno.test("setup: the candidate version from apt-cache policy", () => {
  assert.equal(parseCandidate("  Installed: (none)\n  Candidate: 6.1.192-2\n"), "6.1.192-2");
  assert.equal(parseCandidate("  Candidate: (none)\n"), undefined);
});
