/**
 * The qemu command line of one sandbox VM (pure). See the module docs of
 * `driver.ts` for the lifecycle; this file only decides the arguments.
 *
 * Machine: {@link MACHINE} with the serial console on qemu's stdout (the driver reads
 * it, see `console.ts`), no firmware option ROMs,
 * no default devices, the clock from the host in UTC (`-rtc base=utc`; the
 * kernel sets the system time from it at boot).
 * Disks (`-blockdev`, so qemu never follows a path written inside an image
 * file): `/dev/vda` is the sandbox's own qcow2 overlay (read-write; zeroed
 * and discarded blocks are given back to the host) over the shared image,
 * opened read-only with the backing chain named on the command line;
 * `/dev/vdb` is the runtime disk, read-only (see `image/init.ts`). Guest network: qemu user networking with
 * `restrict=on` (the guest reaches nothing, the host's loopback included)
 * plus `guestfwd` rules: one hands every guest connection to the gateway
 * alias to a forwarder program (`socat - UNIX-CONNECT:<socket>`), which
 * qemu spawns per connection; with egress on, two more do the same for the
 * egress alias's proxy and DNS ports. Each socket is the VM's own, served
 * by the driver with a connection cap (`guest_forwarder.ts`, which also
 * says why not a chardev). There is no way to open the guest network any
 * wider: everything else leaves through the egress proxy's policy.
 * Hardening: qemu's seccomp filter (`-sandbox`, see {@link sandboxOption});
 * the user and limits it runs with are `vm_user.ts`'s.
 *
 * @module
 */
import { GUEST_GATEWAY_PORT } from "../core/grants.ts";
import type { Accel } from "./config.ts";
import { FW_CFG_PREFIX, GUEST_EGRESS, GUEST_NET } from "./guest.ts";

/** A file handed to the guest through fw_cfg. */
export interface FwCfgFile {
  /** Name below {@link FW_CFG_PREFIX}. */
  name: string;
  /** Host file. */
  file: string;
}

/** Everything one VM's command line depends on. */
export interface QemuSpec {
  /** Sandbox id (also the VM's name, so `ps` shows which sandbox a qemu is). */
  id: string;
  accel: Accel;
  vcpus: number;
  memMib: number;
  kernel: string;
  initramfs: string;
  /** The shared read-only runtime disk (`/dev/vdb`, `/opt/openshell` in the guest). */
  disk: string;
  /** The sandbox's own disk (`/dev/vda`, its root). */
  rootDisk: RootDiskSpec;
  /** qemu writes its pid here. */
  pidFile: string;
  fwCfg: readonly FwCfgFile[];
  /** This VM's forwarder socket (the driver carries its connections to the gateway). */
  gatewaySocket: string;
  /** With egress on: this VM's forwarder sockets of the egress alias's ports. */
  egress?: EgressSockets;
  /** Forwarder program (`socat`). */
  forwarder: string;
  /** Extra kernel command line words (e.g. `openshell.probe`). */
  extraKernelArgs?: readonly string[];
  /** The driver's QMP socket qemu connects to (see `qmp.ts`); absent: no monitor. */
  qmpSocket?: string;
}

/** A VM's forwarder sockets to the egress proxy (see `guest_forwarder.ts`). */
export interface EgressSockets {
  /** Guest connections to the HTTP proxy port. */
  proxySocket: string;
  /** Guest connections to the DNS port (DNS over TCP). */
  dnsSocket: string;
}

/** The sandbox's root disk: its overlay and the image under it. */
export interface RootDiskSpec {
  /** The sandbox's qcow2 overlay (read-write). */
  overlay: string;
  /** The image it is layered on (opened read-only). */
  base: string;
  /** The image's format. */
  baseFormat: "raw" | "qcow2";
}

/** qemu's option syntax: a comma inside a value is written twice. */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/**
 * The command qemu runs for each guest connection to the gateway alias. qemu
 * splits it on spaces and socat parses `:` and `,` in addresses, so both
 * the program and the socket path are limited to plain path characters.
 */
export function forwarderCommand(forwarder: string, socket: string): string {
  if (!/^[A-Za-z0-9_./-]+$/.test(forwarder)) throw new Error(`invalid forwarder: ${forwarder}`);
  if (!/^\/[A-Za-z0-9_./-]+$/.test(socket)) {
    throw new Error(`invalid forwarder socket path: ${socket}`);
  }
  return `${forwarder} - UNIX-CONNECT:${socket}`;
}

/**
 * The `-netdev` value of the guest network: always `restrict=on`; a
 * `guestfwd` to the gateway alias, and with egress on to the egress alias's
 * proxy and DNS ports.
 */
export function netdevOption(
  spec: Pick<QemuSpec, "forwarder" | "gatewaySocket" | "egress">,
): string {
  const forward = (address: string, port: number, socket: string) =>
    `guestfwd=tcp:${address}:${port}-cmd:${
      escapeOptionValue(forwarderCommand(spec.forwarder, socket))
    }`;
  return [
    "user",
    "id=net0",
    "restrict=on",
    "ipv6=off",
    `net=${GUEST_NET.network}`,
    `host=${GUEST_NET.router}`,
    forward(GUEST_NET.gatewayAlias, GUEST_GATEWAY_PORT, spec.gatewaySocket),
    ...(spec.egress
      ? [
        forward(GUEST_NET.egressAlias, GUEST_EGRESS.proxyPort, spec.egress.proxySocket),
        forward(GUEST_NET.egressAlias, GUEST_EGRESS.dnsPort, spec.egress.dnsSocket),
      ]
      : []),
  ].join(",");
}

function accelArgs(accel: Accel): string[] {
  switch (accel) {
    case "kvm":
      return ["-accel", "kvm", "-cpu", "host"];
    case "hvf":
      return ["-accel", "hvf", "-cpu", "host"];
    case "tcg":
      return ["-accel", "tcg"];
  }
}

/**
 * qemu's seccomp filter (`-sandbox`): no obsolete system calls, no
 * scheduler or CPU-affinity changes, and — unless a `-netdev` still runs a
 * forwarder program per connection (`guestfwd=…-cmd:`) — no fork/exec and
 * no set*uid/set*gid/setsid/setpgid. The forwarder needs both: libslirp's
 * child calls `setsid()` before it execs, and the filter is inherited, so
 * `elevateprivileges=deny` would kill every forwarder. Running as an
 * unprivileged user with `no_new_privs` is what keeps qemu from gaining
 * privileges either way.
 */
export function sandboxOption(args: readonly string[]): string {
  const netdevs = args.filter((_, i) => args[i - 1] === "-netdev");
  const spawns = netdevs.some((n) => /guestfwd=[^,]*-cmd:/.test(n));
  const child = spawns ? "allow" : "deny";
  return [
    "on",
    "obsolete=deny",
    `elevateprivileges=${child}`,
    `spawn=${child}`,
    "resourcecontrol=deny",
  ].join(",");
}

/**
 * Kernel command line words that only shorten the boot (measured with
 * `e2e/bench_boot.ts`, initcall times from `initcall_debug`; docs/vm.md):
 * none of them touches the guest's isolation or anything the sandbox uses.
 *
 * - `cryptomgr.notests`: no self-tests of the kernel's crypto algorithms at
 *   boot (`crypto_algapi_init` and friends: ~0.4 s under TCG). They check
 *   the implementations, not any key or policy; a FIPS-mode kernel ignores
 *   the flag.
 * - `initcall_blacklist=init_kprobe_trace`: no kprobe-based trace events
 *   (0.4 s under TCG walking every kernel symbol); nothing in the guest
 *   traces the kernel.
 * - `no_timer_check`: no check for broken timer interrupt routing, a quirk
 *   of old hardware that qemu's machine does not have.
 */
export const BOOT_SPEED_ARGS: readonly string[] = [
  "cryptomgr.notests",
  "initcall_blacklist=init_kprobe_trace",
  "no_timer_check",
];

/**
 * Under TCG only: `tsc=reliable`. TCG's TSC follows the host's monotonic
 * clock on every vCPU, but the kernel's synchronisation check races under
 * emulation, marks it unstable and falls back to the HPET: every clock read
 * (Deno makes many) becomes a trapped MMIO read instead of a vDSO call, and
 * the clocksource watchdog adds ~0.8 s to the boot. Under KVM the kernel
 * uses kvm-clock and keeps its own checks.
 */
export const TCG_KERNEL_ARGS: readonly string[] = ["tsc=reliable"];

/**
 * The machine type: `q35` without SMM. Measured against `pc` (i440FX) under
 * TCG (docs/vm.md, boot stages): probing the virtio-pci devices took 0.9–1 s
 * on `pc`, where each device's interrupt goes through an ACPI PCI link
 * device whose AML methods the emulated CPU runs slowly, and 0.3–0.5 s on
 * `q35`, whose interrupts are routed to fixed GSIs; `smm=off` spares the
 * firmware's System Management Mode set-up, which nothing here uses
 * (SeaBIOS boots the kernel; SMM guards UEFI variables). Everything the
 * sandbox relies on is the same: the serial console, the PS/2 keyboard for
 * ctrl-alt-delete, ACPI power-off, fw_cfg, MSI-X for virtio.
 */
export const MACHINE = "q35,smm=off";

/** The kernel command line (`accel` adds {@link TCG_KERNEL_ARGS} under TCG). */
export function kernelCommandLine(extra: readonly string[] = [], accel?: Accel): string {
  return [
    "console=ttyS0",
    "quiet",
    "panic=-1",
    ...BOOT_SPEED_ARGS,
    ...(accel === "tcg" ? TCG_KERNEL_ARGS : []),
    ...extra,
  ].join(" ");
}

/** The `-blockdev`/`-device` arguments of the root disk (vda) and the runtime disk (vdb). */
export function diskArgs(spec: Pick<QemuSpec, "disk" | "rootDisk">): string[] {
  const e = escapeOptionValue;
  const root = spec.rootDisk;
  return [
    "-blockdev",
    `driver=file,node-name=image-file,filename=${e(root.base)},read-only=on`,
    "-blockdev",
    `driver=${root.baseFormat},node-name=image,file=image-file,read-only=on`,
    "-blockdev",
    `driver=file,node-name=root-file,filename=${e(root.overlay)},discard=unmap`,
    "-blockdev",
    "driver=qcow2,node-name=root,file=root-file,backing=image,discard=unmap,detect-zeroes=unmap",
    "-device",
    "virtio-blk-pci,drive=root",
    "-blockdev",
    `driver=file,node-name=runtime-file,filename=${e(spec.disk)},read-only=on`,
    "-blockdev",
    "driver=raw,node-name=runtime,file=runtime-file,read-only=on",
    "-device",
    "virtio-blk-pci,drive=runtime",
  ];
}

/** The arguments after the qemu binary. */
export function buildQemuArgs(spec: QemuSpec): string[] {
  const e = escapeOptionValue;
  const args = [
    "-name",
    `openshell-${spec.id}`,
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-machine",
    MACHINE,
    ...accelArgs(spec.accel),
    "-m",
    String(spec.memMib),
    "-smp",
    String(spec.vcpus),
    "-rtc",
    "base=utc",
    "-kernel",
    spec.kernel,
    "-initrd",
    spec.initramfs,
    "-append",
    kernelCommandLine(spec.extraKernelArgs, spec.accel),
    "-chardev",
    "stdio,id=console,signal=off",
    "-serial",
    "chardev:console",
    ...diskArgs(spec),
    "-netdev",
    netdevOption(spec),
    "-device",
    "virtio-net-pci,netdev=net0,romfile=",
    ...spec.fwCfg.flatMap((f) => {
      if (!/^[a-z0-9_]+$/.test(f.name)) throw new Error(`invalid fw_cfg name: ${f.name}`);
      return ["-fw_cfg", `name=${FW_CFG_PREFIX}/${f.name},file=${e(f.file)}`];
    }),
    ...(spec.qmpSocket
      ? [
        "-chardev",
        `socket,id=qmp,path=${e(spec.qmpSocket)}`,
        "-mon",
        "chardev=qmp,mode=control",
      ]
      : []),
    "-pidfile",
    spec.pidFile,
  ];
  return [...args, "-sandbox", sandboxOption(args)];
}

/** Arguments of the accelerator probe: boot the kernel, print a marker, power off. */
export function buildProbeArgs(
  spec: { accel: Accel; kernel: string; initramfs: string },
): string[] {
  const args = [
    "-nodefaults",
    "-no-user-config",
    "-display",
    "none",
    "-no-reboot",
    "-machine",
    MACHINE,
    ...accelArgs(spec.accel),
    "-m",
    "256",
    "-smp",
    "1",
    "-kernel",
    spec.kernel,
    "-initrd",
    spec.initramfs,
    "-append",
    kernelCommandLine(["openshell.probe"], spec.accel),
    "-serial",
    "stdio",
  ];
  return [...args, "-sandbox", sandboxOption(args)];
}
