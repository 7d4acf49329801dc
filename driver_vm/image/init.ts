/**
 * The guest's boot scripts, rendered at runtime build time (pure, so the
 * exact text is tested and part of the runtime's cache key).
 *
 * Three disks and files, one boot:
 *
 * - the **initramfs** (busybox, the kernel modules, {@link renderInit}):
 *   loads the modules, mounts the sandbox's disk (`/dev/vda`: its qcow2
 *   overlay over the shared read-only Debian image) read-write and the
 *   runtime disk (`/dev/vdb`: Deno, the supervisor, these scripts, the
 *   libraries they need) read-only at `/opt/openshell`, grows the root file
 *   system to the disk, moves `/dev`, `/proc` and `/sys` over, mounts the
 *   runtime file systems (`/run`, `/tmp` 1777, the driver's files on a
 *   private tmpfs at `/etc/openshell`), sets the host name, `/etc/hosts`,
 *   the network and what uses it ({@link renderNetworkSetup}: the name
 *   server, apt's proxy), and switches root;
 * - **PID 1** ({@link renderPid1}, from the runtime disk, so it works in any
 *   image): keeps the supervisor running ({@link renderRunner}), reaps
 *   orphans, and on ctrl-alt-delete (the driver's clean stop) or
 *   SIGTERM/SIGUSR2/SIGPWR ends every process, syncs, remounts `/`
 *   read-only and powers off.
 *
 * Everything of ours runs with our own busybox and, for Deno and
 * `resize2fs`, our own glibc through its loader: nothing depends on what
 * the image (or the sandbox's root user) did to `/bin` or `/lib`.
 *
 * @module
 */
import {
  DEFAULT_SESSION_CGROUP,
  DEFAULT_SSH_SOCKET_PATH,
  PRODUCTION_PARAMS,
  renderFlags,
  supervisorGrants,
} from "../../core/grants.ts";
import { shellJoin } from "../../core/shell.ts";
import { FW_CFG_PREFIX, GUEST_FILES } from "../guest.ts";

/** Where things live inside the guest. */
export const GUEST_LAYOUT = {
  /** Where the initramfs mounts the sandbox's root before switching to it. */
  newRoot: "/newroot",
  /** Mount point of the read-only runtime disk. */
  runtimeMount: "/opt/openshell",
  /** Our busybox (on the runtime disk). */
  busybox: "/opt/openshell/bin/busybox",
  /** The Deno binary (on the runtime disk). */
  deno: "/opt/openshell/bin/deno",
  /** Libraries of Deno and resize2fs, with glibc's loader (on the runtime disk). */
  libDir: "/opt/openshell/lib",
  /** glibc's loader (on the runtime disk). */
  loader: "/opt/openshell/lib/ld-linux-x86-64.so.2",
  /** resize2fs (on the runtime disk). */
  resize2fs: "/opt/openshell/sbin/resize2fs",
  /** The bundled supervisor (on the runtime disk). */
  supervisor: "/opt/openshell/supervisor.js",
  /** PID 1 after the switch (on the runtime disk). */
  pid1: "/opt/openshell/init",
  /** The supervisor runner script (on the runtime disk). */
  runner: "/opt/openshell/run-supervisor",
  /** OpenSSH daemon (the image's). */
  sshd: "/usr/sbin/sshd",
  /** Kernel modules (in the initramfs). */
  modules: "/modules",
  /** Marker printed on the console when booted with `openshell.probe`. */
  probeMarker: "OPENSHELL-PROBE-OK",
  /** Marker printed once PID 1 starts the supervisor. */
  readyMarker: "openshell-init: starting supervisor",
  /** Deno's cache dir at run time (tmpfs). */
  denoDir: "/run/deno",
  /** Deno's caches of the supervisor made at build time (on the runtime disk; `deno_cache.ts`). */
  denoCache: "/opt/openshell/deno-cache",
  /** The cgroup holding every SSH connection's cgroup (on the guest's cgroup2 mount). */
  sessionCgroup: "/sys/fs/cgroup/openshell",
  /** Where the supervisor sees it (a bind mount: Deno refuses `/sys` paths). */
  sessionCgroupMount: DEFAULT_SESSION_CGROUP,
} as const;

/** The sandbox user: uid/gid and home (the image creates it; init adds it when missing). */
export const SANDBOX_ACCOUNT = { name: "sandbox", uid: 1000, gid: 1000, home: "/sandbox" } as const;

/** Runs a program of the runtime disk with the runtime's own glibc (any image). */
function withOwnLibc(program: string, prefix = ""): string[] {
  return [
    `${prefix}${GUEST_LAYOUT.loader}`,
    "--library-path",
    `${prefix}${GUEST_LAYOUT.libDir}`,
    "--argv0",
    program,
    `${prefix}${program}`,
  ];
}

/**
 * The supervisor's command line inside the guest: Deno running the bundle
 * with exactly the supervisor's production grants (core/grants.ts).
 * Variables (`$OPENSHELL_…`) are expanded by the runner script.
 */
export function supervisorCommand(): string {
  return `${supervisorFixedCommand()} --sandbox-id "$OPENSHELL_SANDBOX_ID" ` +
    `--openshell-endpoint "$OPENSHELL_ENDPOINT" --log-level "$OPENSHELL_LOG_LEVEL" ` +
    `--env-file ${GUEST_FILES.environment.guestPath}`;
}

/**
 * The `deno run` flags of the supervisor that are not grants (the build's
 * warm-up of Deno's caches uses the same, `deno_cache.ts`).
 */
export const DENO_RUN_FLAGS: readonly string[] = ["--no-config", "--quiet", "--no-lock"];

function supervisorFixedCommand(): string {
  // The production grants already name the alias address the guest's /etc/hosts pins.
  const flags = renderFlags(supervisorGrants(PRODUCTION_PARAMS.supervisor));
  return shellJoin([
    ...withOwnLibc(GUEST_LAYOUT.deno),
    "run",
    ...DENO_RUN_FLAGS,
    ...flags,
    GUEST_LAYOUT.supervisor,
    "--ssh-socket-path",
    DEFAULT_SSH_SOCKET_PATH,
    "--sshd",
    PRODUCTION_PARAMS.supervisor.sshd,
    "--ssh-host-key",
    GUEST_FILES.sshHostKey.guestPath,
  ]);
}

const DENO_ENV = `DENO_DIR=${GUEST_LAYOUT.denoDir} NO_COLOR=1 DENO_NO_UPDATE_CHECK=1 HOME=/root`;

/** The runner PID 1 restarts: sources the config and runs the supervisor once. */
export function renderRunner(): string {
  const tokenFile = GUEST_FILES.supervisorToken.guestPath;
  const bb = GUEST_LAYOUT.busybox;
  return `#!${bb} sh
# openshell: runs the supervisor once; PID 1 (${GUEST_LAYOUT.pid1}) restarts it.
. ${GUEST_FILES.config.guestPath}
export ${DENO_ENV}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
token=""
[ -s ${tokenFile} ] && token="--supervisor-token-file ${tokenFile}"
tlsca=""
[ -s ${GUEST_FILES.tlsCa.guestPath} ] && tlsca="--tls-ca ${GUEST_FILES.tlsCa.guestPath}"
# Deno's caches of the supervisor, made at build time (once per boot: DENO_DIR is a tmpfs).
if [ ! -e ${GUEST_LAYOUT.denoDir}/v8_code_cache_v2 ] && [ -d ${GUEST_LAYOUT.denoCache} ]; then
  ${bb} mkdir -p ${GUEST_LAYOUT.denoDir}
  ${bb} cp ${GUEST_LAYOUT.denoCache}/* ${GUEST_LAYOUT.denoDir}/
fi
read -r up _ < /proc/uptime
echo "${GUEST_LAYOUT.readyMarker} after \${up}s"
${supervisorCommand()} $token $tlsca
rc=$?
echo "openshell-init: supervisor exited with status $rc; restarting in 1s"
# A killed supervisor could not end its SSH connections' processes: end them
# now (its successor also sweeps them at start).
for g in ${GUEST_LAYOUT.sessionCgroupMount}/*/; do
  [ -e "\${g}cgroup.kill" ] && echo 1 > "\${g}cgroup.kill"
done
${bb} sleep 1
`;
}

/**
 * PID 1 in the sandbox's root: runs the supervisor (restarting it), reaps
 * every orphan (busybox ash's `wait` takes any child), and shuts down
 * cleanly on ctrl-alt-delete or a signal (see the module docs).
 */
export function renderPid1(): string {
  const bb = GUEST_LAYOUT.busybox;
  const resize = shellJoin([...withOwnLibc(GUEST_LAYOUT.resize2fs), "/dev/vda"]);
  return `#!${bb} sh
# openshell guest init, stage 2: PID 1 in the sandbox's root (generated by deno task vm:rootfs)
[ "$$" = 1 ] || { echo "openshell init: refusing to run outside a VM (not PID 1)" >&2; exit 1; }
bb=${bb}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
log() { echo "openshell-init: $*"; }
# Whether a process other than PID 1 is left (kernel threads and zombies have no command line).
others() {
  for p in /proc/[0-9]*; do
    [ "\${p#/proc/}" = 1 ] && continue
    c=""
    read -r c < "$p/cmdline" 2>/dev/null
    [ -n "$c" ] && return 0
  done
  return 1
}
settle() {
  i=0
  while [ $i -lt "$1" ] && others; do $bb usleep 100000; i=$((i + 1)); done
}
stopping=""
stop() {
  [ -z "$stopping" ] || return 0
  stopping=1
  log "shutting down (uptime $($bb cut -d' ' -f1 /proc/uptime)s)"
  $bb kill -TERM -1 2>/dev/null
  settle 50
  $bb kill -KILL -1 2>/dev/null
  settle 20
  $bb sync
  $bb mount -o remount,ro / || log "cannot remount / read-only"
  $bb sync
  log "powering off"
  $bb poweroff -f
}
# ctrl-alt-delete (the driver's clean stop) signals PID 1 instead of rebooting.
echo 0 > /proc/sys/kernel/ctrl-alt-del
trap stop INT TERM USR1 USR2 PWR
# Grow the root file system to the disk (first boot, or a larger disk), online, while
# the supervisor starts: nothing it needs waits for the extra space.
(
  trap - INT TERM USR1 USR2 PWR
  if out=$(${resize} 2>&1); then
    case "$out" in
      *"is now"*) log "root file system grown to $($bb df -h / | $bb awk 'NR==2 {print $2}')" ;;
    esac
  else
    log "cannot grow the root file system: $(echo "$out" | $bb tail -n 1)"
  fi
) &
(
  trap - INT TERM USR1 USR2 PWR
  while :; do $bb sh ${GUEST_LAYOUT.runner}; done
) &
while :; do
  wait
  [ -n "$stopping" ] && break
  $bb sleep 1
done
while :; do $bb sleep 60; done
`;
}

/** Files the guest init writes at every boot from the driver's `network` file. */
export const NETWORK_FILES = {
  /** apt's proxy setting (egress on; removed when off). */
  aptProxy: "/etc/apt/apt.conf.d/95openshell-proxy",
  /** sudo keeps the proxy variables (egress on; removed when off). */
  sudoProxy: "/etc/sudoers.d/openshell-proxy",
} as const;

/** The proxy variables sudo keeps (its `env_reset` would drop them). */
const PROXY_VARIABLES =
  "HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY http_proxy https_proxy all_proxy no_proxy";

/**
 * The part of the init that applies this boot's network settings (the
 * driver's `network` file, see `guest.ts`) to the root at `root`: with
 * egress on, `/etc/resolv.conf` names the egress alias over TCP (`use-vc`:
 * qemu forwards TCP only), apt gets the proxy and sudo keeps the proxy
 * variables (the logins get them from the driver's environment); off, the
 * name server is one nothing answers at (look-ups fail at once: "could not
 * resolve") and the proxy files are removed. Rewritten at every boot.
 */
export function renderNetworkSetup(root: string): string {
  const net = `${root}${GUEST_FILES.network.guestPath}`;
  const apt = `${root}${NETWORK_FILES.aptProxy}`;
  const sudo = `${root}${NETWORK_FILES.sudoProxy}`;
  return `# This boot's network settings (the driver's; none: egress off).
OPENSHELL_EGRESS_PROXY=""
OPENSHELL_EGRESS_DNS=""
[ -s ${net} ] && . ${net}
rm -f ${root}/etc/resolv.conf ${apt} ${sudo}
if [ -n "$OPENSHELL_EGRESS_DNS" ]; then
  cat > ${root}/etc/resolv.conf <<EOF
# openshell (rewritten at every boot): names resolve through the egress proxy,
# only those the sandbox's network policy allows; over TCP (use-vc).
nameserver $OPENSHELL_EGRESS_DNS
options use-vc
EOF
else
  cat > ${root}/etc/resolv.conf <<EOF
# openshell (rewritten at every boot): egress is off; this sandbox reaches only
# the OpenShell gateway. Nothing answers here: look-ups fail at once.
nameserver 127.0.0.1
options use-vc attempts:1
EOF
fi
chmod 0644 ${root}/etc/resolv.conf
if [ -n "$OPENSHELL_EGRESS_PROXY" ]; then
  if [ -d ${root}/etc/apt/apt.conf.d ]; then
    cat > ${apt} <<EOF
// openshell (rewritten at every boot): apt goes through the egress proxy.
Acquire::http::Proxy "$OPENSHELL_EGRESS_PROXY";
Acquire::https::Proxy "$OPENSHELL_EGRESS_PROXY";
EOF
    chmod 0644 ${apt}
  fi
  if [ -d ${root}/etc/sudoers.d ]; then
    echo 'Defaults env_keep += "${PROXY_VARIABLES}"' > ${sudo}
    chmod 0440 ${sudo}
  fi
fi
`;
}

/** Options of {@link renderInit}. */
export interface InitOptions {
  /** Kernel modules to load, in dependency order (names of `/modules/<name>.ko`). */
  modules: readonly string[];
}

/** The guest's `/init` script (the initramfs stage; see the module docs). */
export function renderInit(options: InitOptions): string {
  for (const m of options.modules) {
    if (!/^[A-Za-z0-9_-]+$/.test(m)) throw new Error(`invalid module name: ${m}`);
  }
  const R = GUEST_LAYOUT.newRoot;
  const fw = `/sys/firmware/qemu_fw_cfg/by_name/${FW_CFG_PREFIX}`;
  const RT = `${R}${GUEST_LAYOUT.runtimeMount}`;
  const u = SANDBOX_ACCOUNT;
  const copies = Object.values(GUEST_FILES).map((f) => `fwcopy ${f.fwcfg} ${R}${f.guestPath}`)
    .join("\n");
  return `#!/bin/busybox sh
# openshell guest init, stage 1 (initramfs; generated by deno task vm:rootfs; do not edit)
# It mounts over /dev and switches root: never let it run anywhere but as a VM's PID 1.
[ "$$" = 1 ] || { echo "openshell guest init: refusing to run outside a VM (not PID 1)" >&2; exit 1; }
bb=/bin/busybox
export PATH=/bin
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
read -r cmdline < /proc/cmdline
case " $cmdline " in
  *" openshell.probe "*)
    echo "${GUEST_LAYOUT.probeMarker}"
    $bb poweroff -f
    ;;
esac
log() { echo "openshell-init: $*"; }
fail() { log "FATAL: $*"; $bb sleep 2; $bb poweroff -f; }
read -r up _ < /proc/uptime
log "userspace up after \${up}s"
# Boot stage stamps (guest uptime in s, read without a fork), logged in one line at the end.
stamps=""
stamp() { read -r t _ < /proc/uptime; stamps="$stamps $1=$t"; }
for m in ${options.modules.join(" ")}; do
  insmod ${GUEST_LAYOUT.modules}/$m.ko || log "insmod $m failed"
done
stamp modules
i=0
while { [ ! -b /dev/vda ] || [ ! -b /dev/vdb ]; } && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
# The sandbox's own disk (its overlay over the image), read-write.
mkdir -p ${R}
mount -t ext4 -o rw,relatime /dev/vda ${R} || fail "cannot mount the sandbox disk /dev/vda"
# The runtime disk: Deno, the supervisor, PID 1, their libraries; read-only.
mkdir -p ${RT}
mount -t ext4 -o ro /dev/vdb ${RT} || fail "cannot mount the runtime disk /dev/vdb"
stamp disks
# /dev moves into the new root now, /proc and /sys last; the rest is fresh at every boot.
mkdir -p ${R}/dev
mount --move /dev ${R}/dev || fail "cannot move /dev"
mkdir -p ${R}/dev/pts ${R}/dev/shm ${R}/run ${R}/tmp
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts ${R}/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs ${R}/dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs ${R}/run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs ${R}/tmp
mkdir -m 0755 ${R}/run/sshd
mkdir -m 1777 ${R}/run/lock
# / must not be writable by the sandbox user (the image says so; a root user may have changed it).
chown 0:0 ${R}
chmod go-w ${R}
# The driver's files (fw_cfg), private to root, in memory only (never on the disk).
mkdir -p ${R}/etc/openshell
mount -t tmpfs -o mode=0700,nosuid,nodev,noexec,size=4m tmpfs ${R}/etc/openshell ||
  fail "cannot mount /etc/openshell"
fwcopy() {
  if [ -r ${fw}/$1/raw ]; then
    cat ${fw}/$1/raw > "$2"
  fi
}
umask 077
${copies}
umask 022
[ -s ${R}${GUEST_FILES.config.guestPath} ] || fail "no sandbox config from the driver (fw_cfg ${FW_CFG_PREFIX}/config)"
. ${R}${GUEST_FILES.config.guestPath}
# Identity: the host name is the sandbox's; the sandbox user exists (images made elsewhere).
hostname "$OPENSHELL_HOSTNAME"
echo "$OPENSHELL_HOSTNAME" > ${R}/etc/hostname
hosts=${R}/etc/hosts
[ -L $hosts ] && rm -f $hosts
touch $hosts
sed -i '/^# openshell-begin/,/^# openshell-end/d' $hosts
cat >> $hosts <<EOF
# openshell-begin (rewritten at every boot)
127.0.0.1 localhost
127.0.1.1 $OPENSHELL_HOSTNAME
::1 localhost ip6-localhost ip6-loopback
$OPENSHELL_GATEWAY_IP $OPENSHELL_GATEWAY_HOST
# openshell-end
EOF
${renderNetworkSetup(R)}if ! grep -q '^${u.name}:' ${R}/etc/passwd; then
  log "the image has no ${u.name} user: adding it"
  echo "${u.name}::${u.uid}:${u.gid}:OpenShell sandbox:${u.home}:/bin/sh" >> ${R}/etc/passwd
  grep -q '^${u.name}:' ${R}/etc/group || echo "${u.name}:x:${u.gid}:" >> ${R}/etc/group
  [ -f ${R}/etc/shadow ] && echo "${u.name}::19000:0:99999:7:::" >> ${R}/etc/shadow
fi
if [ ! -d ${R}${u.home} ]; then
  mkdir -p ${R}${u.home}
  chown ${u.uid}:${u.gid} ${R}${u.home}
fi
# Network: loopback, and eth0 on qemu's user network (the gateway alias; with
# egress on also the egress alias: qemu forwards nothing else).
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add "$OPENSHELL_GUEST_IP/24" dev eth0
ip route add default via "$OPENSHELL_GUEST_ROUTER"
stamp network
# The VM's size for the log (shell built-ins only: every program run costs under emulation).
read -r sectors < /sys/block/vda/size
mem=0
while read -r k v _; do [ "$k" = MemTotal: ] && { mem=$((v / 1024)); break; }; done < /proc/meminfo
cpus=0
while read -r k _; do [ "$k" = processor ] && cpus=$((cpus + 1)); done < /proc/cpuinfo
size="$((sectors / 2097152)) GiB disk, $mem MiB, $cpus CPUs"
for d in proc sys; do
  mkdir -p ${R}/$d
  mount --move /$d ${R}/$d || fail "cannot move /$d"
done
# One cgroup per SSH connection, killed when it ends (the supervisor's
# --session-cgroup); bind-mounted outside /sys, which Deno refuses without --allow-all.
if mount -t cgroup2 cgroup2 ${R}/sys/fs/cgroup; then
  mkdir -p ${R}${GUEST_LAYOUT.sessionCgroup} ${R}${GUEST_LAYOUT.sessionCgroupMount}
  mount -o bind ${R}${GUEST_LAYOUT.sessionCgroup} ${R}${GUEST_LAYOUT.sessionCgroupMount} ||
    log "cannot bind-mount the session cgroup: SSH sessions will not be contained"
else
  log "cannot mount cgroup2: SSH sessions will not be contained"
fi
log "boot stages (uptime s):$stamps"
read -r up _ < ${R}/proc/uptime
log "guest ready after \${up}s (sandbox $OPENSHELL_SANDBOX_ID: $size)"
exec switch_root ${R} ${GUEST_LAYOUT.busybox} sh ${GUEST_LAYOUT.pid1}
`;
}
