/**
 * The guest's `/init` and the scripts it installs, rendered at image build
 * time (pure, so the exact text is tested and part of the image cache key).
 *
 * Boot: the kernel unpacks the initramfs (busybox, kernel modules, these
 * scripts) and runs `/init`, which mounts the read-only guest disk (OpenSSH,
 * Deno and the bundled supervisor, with their libraries), copies the
 * driver's fw_cfg files into `/etc/openshell`, sets up users, `/etc/hosts`
 * and the network, then hands PID 1 to busybox `init`, which reaps orphans
 * and keeps the supervisor running (respawn).
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
  /** Mount point of the read-only guest disk. */
  roMount: "/ro",
  /** Top-level directories of the disk linked into `/`. */
  roLinks: ["lib", "lib64", "usr", "opt"],
  /** The Deno binary (on the disk). */
  deno: "/opt/openshell/bin/deno",
  /** The bundled supervisor (on the disk). */
  supervisor: "/opt/openshell/supervisor.js",
  /** OpenSSH daemon (on the disk). */
  sshd: "/usr/sbin/sshd",
  /** Kernel modules (in the initramfs). */
  modules: "/modules",
  /** The supervisor runner script (in the initramfs). */
  runner: "/etc/openshell-run-supervisor",
  /** Marker printed on the console when booted with `openshell.probe`. */
  probeMarker: "OPENSHELL-PROBE-OK",
  /** Marker printed once the guest init handed over to the supervisor. */
  readyMarker: "openshell-init: starting supervisor",
  /** Deno's cache dir at run time (tmpfs). */
  denoDir: "/run/deno",
  /** The cgroup holding every SSH connection's cgroup (on the guest's cgroup2 mount). */
  sessionCgroup: "/sys/fs/cgroup/openshell",
  /** Where the supervisor sees it (a bind mount: Deno refuses `/sys` paths). */
  sessionCgroupMount: DEFAULT_SESSION_CGROUP,
} as const;

/** The sandbox user: uid/gid and home. */
export const SANDBOX_ACCOUNT = { name: "sandbox", uid: 1000, gid: 1000, home: "/sandbox" } as const;

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

function supervisorFixedCommand(): string {
  // The production grants already name the alias address the guest's /etc/hosts pins.
  const flags = renderFlags(supervisorGrants(PRODUCTION_PARAMS.supervisor));
  return shellJoin([
    GUEST_LAYOUT.deno,
    "run",
    "--no-config",
    "--quiet",
    "--no-lock",
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

/** The runner busybox `init` respawns: sources the config and runs the supervisor once. */
export function renderRunner(): string {
  const tokenFile = GUEST_FILES.supervisorToken.guestPath;
  return `#!/bin/sh
# openshell: runs the supervisor once; busybox init respawns this script.
. ${GUEST_FILES.config.guestPath}
export ${DENO_ENV}
token=""
[ -s ${tokenFile} ] && token="--supervisor-token-file ${tokenFile}"
tlsca=""
[ -s ${GUEST_FILES.tlsCa.guestPath} ] && tlsca="--tls-ca ${GUEST_FILES.tlsCa.guestPath}"
echo "${GUEST_LAYOUT.readyMarker} after $(cut -d' ' -f1 /proc/uptime)s"
${supervisorCommand()} $token $tlsca
rc=$?
echo "openshell-init: supervisor exited with status $rc; restarting in 1s"
# A killed supervisor could not end its SSH connections' processes: end them
# now (its successor also sweeps them at start).
for g in ${GUEST_LAYOUT.sessionCgroupMount}/*/; do
  [ -e "\${g}cgroup.kill" ] && echo 1 > "\${g}cgroup.kill"
done
sleep 1
`;
}

/** busybox `init`'s table: respawn the supervisor, power off on shutdown. */
export function renderInittab(): string {
  return `# openshell guest inittab
::respawn:${GUEST_LAYOUT.runner}
::ctrlaltdel:/bin/poweroff -f
::shutdown:/bin/sync
`;
}

/** Options of {@link renderInit}. */
export interface InitOptions {
  /** Kernel modules to load, in dependency order (names of `/modules/<name>.ko`). */
  modules: readonly string[];
}

/** The guest's `/init` script. */
export function renderInit(options: InitOptions): string {
  for (const m of options.modules) {
    if (!/^[A-Za-z0-9_-]+$/.test(m)) throw new Error(`invalid module name: ${m}`);
  }
  const fw = `/sys/firmware/qemu_fw_cfg/by_name/${FW_CFG_PREFIX}`;
  const u = SANDBOX_ACCOUNT;
  const copies = Object.values(GUEST_FILES).map((f) => `fwcopy ${f.fwcfg} ${f.guestPath}`).join(
    "\n",
  );
  const links = GUEST_LAYOUT.roLinks.map((d) =>
    `[ -e ${GUEST_LAYOUT.roMount}/${d} ] && $bb ln -s ${GUEST_LAYOUT.roMount}/${d} /${d}`
  ).join("\n");
  return `#!/bin/busybox sh
# openshell guest init (generated by deno task vm:rootfs; do not edit)
# It rewrites /etc and mounts over /dev: never let it run anywhere but as a VM's PID 1.
[ "$$" = 1 ] || { echo "openshell guest init: refusing to run outside a VM (not PID 1)" >&2; exit 1; }
bb=/bin/busybox
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs devtmpfs /dev
if $bb grep -q openshell.probe /proc/cmdline; then
  echo "${GUEST_LAYOUT.probeMarker}"
  $bb poweroff -f
fi
log() { echo "openshell-init: $*"; }
fail() { log "FATAL: $*"; $bb sleep 2; $bb poweroff -f; }
$bb --install -s /bin
log "userspace up after $(cut -d' ' -f1 /proc/uptime)s"
for m in ${options.modules.join(" ")}; do
  insmod ${GUEST_LAYOUT.modules}/$m.ko || log "insmod $m failed"
done
mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
# One cgroup per SSH connection, killed when it ends (the supervisor's
# --session-cgroup); bind-mounted outside /sys, which Deno refuses without --allow-all.
if mount -t cgroup2 cgroup2 /sys/fs/cgroup; then
  mkdir -p ${GUEST_LAYOUT.sessionCgroup} ${GUEST_LAYOUT.sessionCgroupMount}
  mount -o bind ${GUEST_LAYOUT.sessionCgroup} ${GUEST_LAYOUT.sessionCgroupMount} ||
    log "cannot bind-mount the session cgroup: SSH sessions will not be contained"
else
  log "cannot mount cgroup2: SSH sessions will not be contained"
fi
# The read-only guest disk: OpenSSH, Deno, the supervisor, their libraries.
mkdir -p ${GUEST_LAYOUT.roMount}
i=0
while [ ! -b /dev/vda ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o ro /dev/vda ${GUEST_LAYOUT.roMount} || fail "cannot mount the guest disk /dev/vda"
${links}
# The driver's files (fw_cfg), private to root.
mkdir -p /etc/openshell
chmod 0700 /etc/openshell
fwcopy() {
  if [ -r ${fw}/$1/raw ]; then
    cat ${fw}/$1/raw > "$2" && chmod 0600 "$2"
  fi
}
${copies}
[ -s ${GUEST_FILES.config.guestPath} ] || fail "no sandbox config from the driver (fw_cfg ${FW_CFG_PREFIX}/config)"
. ${GUEST_FILES.config.guestPath}
# The sandbox's name is its host name (the driver made it a DNS label) and is in the prompt.
hostname "\${OPENSHELL_HOSTNAME:-openshell-sandbox}"
hostname > /etc/hostname
cat > /etc/hosts <<EOF
127.0.0.1 localhost
127.0.1.1 $(hostname)
$OPENSHELL_GATEWAY_IP $OPENSHELL_GATEWAY_HOST
EOF
cat > /etc/profile <<'EOF'
PS1='\\u@\\h:\\w\\$ '
export PS1
EOF
echo "hosts: files" > /etc/nsswitch.conf
cat > /etc/passwd <<EOF
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534:sshd privsep:/run/sshd:/bin/false
${u.name}::${u.uid}:${u.gid}:sandbox:${u.home}:/bin/sh
EOF
cat > /etc/shadow <<EOF
root:*:19000:0:99999:7:::
sshd:*:19000:0:99999:7:::
${u.name}::19000:0:99999:7:::
EOF
chmod 0600 /etc/shadow
cat > /etc/group <<EOF
root:x:0:
tty:x:5:
nogroup:x:65534:
${u.name}:x:${u.gid}:
EOF
echo /bin/sh > /etc/shells
mkdir -p /root ${u.home} /run/sshd /var/empty /var/log
chmod 0700 /root
chown ${u.uid}:${u.gid} ${u.home}
chmod 0755 /run/sshd
# Network: loopback, and eth0 on qemu's user network (the gateway alias only).
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add "$OPENSHELL_GUEST_IP/24" dev eth0
ip route add default via "$OPENSHELL_GUEST_ROUTER"
log "guest ready after $(cut -d' ' -f1 /proc/uptime)s (sandbox $OPENSHELL_SANDBOX_ID)"
exec /bin/init
`;
}
