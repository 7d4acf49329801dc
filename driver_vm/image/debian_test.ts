import assert from "node:assert/strict";
import {
  debootstrapProgress,
  DEFAULT_PACKAGES,
  IMAGE_FORMAT,
  imageGeometry,
  imageKey,
  mkfsArgs,
  normalizeSpec,
  renderSetup,
  setupLine,
} from "./debian.ts";

Deno.test("image: the default holds what the issue asks for", () => {
  for (
    const p of [
      "ca-certificates",
      "curl",
      "git",
      "iproute2",
      "less",
      "locales",
      "openssh-server",
      "openssh-sftp-server",
      "procps",
      "python3",
      "rsync",
      "sudo",
      "tzdata",
      "wget",
    ]
  ) {
    assert.ok(DEFAULT_PACKAGES.includes(p), p);
  }
});

Deno.test("image: the cache key changes with every input and not with their order", async () => {
  const base = await imageKey();
  assert.match(base, /^[0-9a-f]{16}$/);
  assert.equal(await imageKey({}), base);
  assert.equal(await imageKey({ packages: [...DEFAULT_PACKAGES].reverse() }), base, "order");
  assert.equal(await imageKey({ packages: [...DEFAULT_PACKAGES, "git"] }), base, "duplicates");
  const variants = [
    { packages: [...DEFAULT_PACKAGES, "make"] },
    { packages: DEFAULT_PACKAGES.filter((p) => p !== "rsync") },
    { extraPackages: ["make"] },
    { script: "echo hi" },
    { suite: "trixie" },
    { mirror: "http://mirror.example/debian" },
    { securityMirror: "http://mirror.example/debian-security" },
  ];
  const keys = new Set([base]);
  for (const v of variants) keys.add(await imageKey(v));
  assert.equal(keys.size, variants.length + 1, "each input gives its own key");
  // The builder's version is part of the key: its format string and its setup script are hashed.
  assert.match(IMAGE_FORMAT, /^openshell-vm-image\/\d+$/);
});

Deno.test("image: specs are checked; nothing unchecked reaches the setup script", () => {
  assert.throws(() => normalizeSpec({ packages: ["git; rm -rf /"] }), /not a Debian package name/);
  assert.throws(() => normalizeSpec({ extraPackages: ["-o"] }), /not a Debian package name/);
  assert.throws(() => normalizeSpec({ suite: "bookworm main" }), /not a Debian suite/);
  assert.throws(() => normalizeSpec({ mirror: "http://x/ $(id)" }), /not a mirror URL/);
  assert.throws(() => normalizeSpec({ mirror: "file:///etc" }), /not a mirror URL/);
  assert.equal(
    normalizeSpec({ mirror: "http://m.example/debian/" }).mirror,
    "http://m.example/debian",
  );
});

Deno.test("image: the setup makes the sandbox user, sudo, locales, UTC; cleans; no shared host keys", async () => {
  const text = renderSetup();
  const sh = await new Deno.Command("sh", { args: ["-n", "-c", text], stderr: "piped" }).output();
  assert.equal(sh.code, 0, new TextDecoder().decode(sh.stderr));
  assert.match(text, /^set -eu$/m);
  assert.match(
    text,
    /useradd --uid 1000 --gid 1000 --home-dir \/sandbox --create-home --shell \/bin\/bash/,
  );
  assert.match(text, /^passwd -d sandbox/m);
  assert.match(
    text,
    /^echo "sandbox ALL=\(ALL:ALL\) NOPASSWD: ALL" > \/etc\/sudoers\.d\/openshell-sandbox$/m,
  );
  assert.match(text, /^chmod 0440 \/etc\/sudoers\.d\/openshell-sandbox$/m);
  assert.match(text, /^visudo -cq$/m);
  assert.match(text, /^locale-gen/m);
  assert.match(text, /ln -sf \/usr\/share\/zoneinfo\/Etc\/UTC \/etc\/localtime/);
  assert.match(text, /Suites: bookworm-security/);
  assert.match(text, /^apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade/m);
  assert.match(text, /^rm -f \/etc\/ssh\/ssh_host_\*$/m);
  assert.match(text, /^rm -rf \/var\/lib\/apt\/lists\/\*/m);
  assert.match(text, /path-exclude=\/usr\/share\/doc\/\*/);
  assert.match(text, /path-include=\/usr\/share\/doc\/\*\/copyright/);
  assert.match(text, /^chmod 0755 \/$/m);
  assert.match(text, /^chmod 1777 \/tmp \/var\/tmp$/m);
  assert.ok(text.indexOf("upgrade") < text.indexOf("useradd"), "updates first");
  assert.ok(text.trimEnd().endsWith('say "done"'));
  assert.ok(!text.includes("openshell-user-script"), "no user script unless given");
  const custom = renderSetup({ extraPackages: ["make", "jq"], script: "echo x" });
  assert.match(custom, /apt-get install -y -qq --no-install-recommends jq make/);
  assert.match(custom, /^sh \/tmp\/openshell-user-script$/m);
  assert.ok(custom.indexOf("openshell-user-script") < custom.indexOf('say "cleaning"'));
});

Deno.test("image: debootstrap's output becomes one line per phase, not one per package", () => {
  const out: string[] = [];
  const feed = debootstrapProgress((l) => out.push(l));
  const lines = [
    "I: Retrieving InRelease ",
    "I: Checking Release signature",
    "I: Retrieving Packages ",
    "I: Resolving dependencies of required packages...",
    ...Array.from({ length: 150 }, (_, i) => `I: Retrieving pkg${i} 1.0`),
    ...Array.from({ length: 150 }, (_, i) => `I: Validating pkg${i} 1.0`),
    "I: Extracting adduser...",
    "I: Extracting apt...",
    "W: Failure trying to run: chroot x",
    "I: Unpacking required packages...",
    "I: Unpacking the base system...",
    "some other line",
    "I: Base system installed successfully.",
  ];
  for (const l of lines) feed(l);
  assert.deepEqual(out, [
    "debootstrap: Retrieving InRelease",
    "debootstrap: Checking Release signature",
    "debootstrap: Resolving dependencies of required packages...",
    "debootstrap: Validating pkg0 1.0",
    "debootstrap: downloaded 40 packages",
    "debootstrap: downloaded 80 packages",
    "debootstrap: downloaded 120 packages",
    "debootstrap: Extracting adduser...",
    "debootstrap: W: Failure trying to run: chroot x",
    "debootstrap: Unpacking required packages...",
    "debootstrap: Unpacking the base system...",
    "debootstrap: Base system installed successfully.",
  ]);
  assert.equal(setupLine("image: cleaning"), "cleaning");
  assert.equal(setupLine("E: Can not write log (Is /dev/pts mounted?) - posix_openpt"), undefined);
  assert.equal(setupLine("E: Unable to locate package nope"), "  E: Unable to locate package nope");
  assert.equal(setupLine("Setting up foo"), undefined);
});

Deno.test("image: the ext4 image is 4 KiB blocks, journalled, root-owned, with room to grow", () => {
  const g = imageGeometry(10_000, 240 * 2 ** 20);
  assert.ok(g.sizeKiB * 1024 > 240 * 2 ** 20 * 1.2, "room for the data");
  assert.equal(g.sizeKiB % 4, 0);
  assert.ok(g.inodes >= 20_000 && g.inodes % 8192 === 0);
  assert.equal(imageGeometry(10, 10).inodes, 32768);
  const args = mkfsArgs("/stage", "/out.img", { sizeKiB: 4096, inodes: 32768 });
  assert.deepEqual(args, [
    "-q",
    "-F",
    "-t",
    "ext4",
    "-b",
    "4096",
    "-N",
    "32768",
    "-m",
    "0",
    "-L",
    "openshell-root",
    "-E",
    "root_owner=0:0",
    "-d",
    "/stage",
    "/out.img",
    "4096k",
  ]);
  assert.ok(!args.some((a) => a.includes("has_journal")), "the root is written: keep the journal");
});
