// The batch script of a Slurm desktop job, generated (pure) from values the
// broker has already validated. It runs on the compute node under bash:
//   1. creates the session's qcow2 overlay in the shared job dir (never the master);
//   2. picks the accelerator on the node (KVM only where it is real hardware KVM
//      of the guest's architecture, as src/qemu/accel.ts decides on the broker);
//   3. starts QEMU with VNC on a TCP port from the configured range, the VNC
//      password read from a secret file (never on a command line), QMP on a
//      node-local Unix socket; a port another process holds is skipped;
//   4. reports "ready" (node, port, accelerator) in status.json once QEMU itself
//      listens on the port (checked in /proc, not by connecting to whatever answers);
//   5. forwards SIGTERM (scancel) to QEMU, which then shuts down in order as
//      QMP quit does, and reports how QEMU ended.
// With guest network (qemu.network: user), 3 differs: QEMU runs in a network
// namespace of its own on the node, as on a single host (launcher/guest-netns.ts)
// but made by the job: an unprivileged user namespace owns it (jobs need no
// root), the guest rules (guest/network-policy.ts) plus every address of the
// node are loaded into it, and pasta connects it to the node's network, outbound
// only. QEMU's VNC is then a Unix socket in the node-local dir, which socat
// serves on the TCP port; all of it ends with the job.
// With GPUs, before 3: picks free VFIO GPUs on the node by the rules of
// src/gpu/discover.ts (display-class device, its whole IOMMU group bound to
// vfio-pci, PCI bridges stay, gpu.exclude honoured), one whole group per GPU,
// each held exclusively for the job's life by flock(1) on a node-local lock
// file; Slurm's gres count guarantees enough exist, the locks decide which.
// Every value is single-quoted for bash; the script is sbatch's stdin, never a
// command line.
import type { Arch } from '../config/schema.js';

export const VNC_DISPLAY_PLACEHOLDER = '@QWD_VNC_DISPLAY@';
export const NODE_DIR_PLACEHOLDER = '@QWD_NODE_DIR@';
export const STATUS_FILE = 'status.json';
export const SECRET_FILE = 'vnc.secret';

export interface JobScriptInput {
  sessionId: string;
  jobDir: string;
  qemuBinary: string;
  qemuImg: string;
  /** qemu-img arguments creating the overlay (empty: the overlay exists). */
  overlayArgv: readonly string[];
  overlayPath: string;
  /** QEMU argv for each accelerator, with the placeholders above. */
  argvKvm: readonly string[];
  argvTcg: readonly string[];
  accel: 'auto' | 'kvm' | 'tcg';
  guestArch: Arch;
  vncBind: string;
  vncPortMin: number;
  vncPortMax: number;
  /** GPUs the job picks on its node (Slurm counted them as gres); null: none. */
  gpus?: { count: number; sysfsRoot: string; lockDir: string; exclude: readonly string[] } | null;
  /**
   * A network namespace of its own for QEMU on the node; null: QEMU shares the
   * node's (no guest network, or the site accepts unisolated guests).
   */
  guestNetwork?: GuestNetworkJob | null;
}

export interface GuestNetworkJob {
  /** The tools, by absolute path, as on the broker (guestNetwork.*). */
  tools: { unshare: string; nsenter: string; ip: string; nft: string; pasta: string; socat: string };
  /** The nftables ruleset file in the job dir, without the node's own addresses (the job adds those). */
  rulesFile: string;
}

/** QEMU's VNC address (-vnc) when it runs in a namespace of its own: a Unix socket in the node-local dir. */
export const NAMESPACED_VNC_LISTEN = `unix:${NODE_DIR_PLACEHOLDER}/vnc.sock`;

/** Bash single-quoting: the value comes out exactly as given. */
export function shellQuote(value: string): string {
  if (/[\0\n\r]/.test(value)) {
    throw new Error(`refusing a job script value with a control character: ${JSON.stringify(value)}`);
  }
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

const array = (values: readonly string[]) => `(${values.map(shellQuote).join(' ')})`;

/** The host the node itself probes (and the broker connects to, when the bind address is specific). */
export function probeHost(bind: string): string {
  if (bind === '0.0.0.0') return '127.0.0.1';
  if (bind === '::') return '::1';
  return bind;
}

/** "host:display" for -vnc (IPv6 in brackets). */
export function vncListen(bind: string): string {
  return `${bind.includes(':') ? `[${bind}]` : bind}:${VNC_DISPLAY_PLACEHOLDER}`;
}

const UNAME_ARCH: Record<Arch, string> = { x86_64: 'x86_64', aarch64: 'aarch64' };

// Bash lines of the script longer than this file's 120 columns are cut with + in
// the constants below and interpolated where they stand: each is still one line
// of the script, byte for byte. They are written as in the templates (\${ is
// bash's ${, \\ its \).

/** What `fail` reports, where the message would not fit on its line of the script. */
const FAILURE = {
  nodeDir: `cannot create a node-local directory on $(hostname)`,
  commaInNodeDir:
    `the node-local directory $NODE_DIR contains a comma (TMPDIR on $(hostname)); QEMU options cannot hold it`,
  noQemu: `$QEMU is not installed on node $(hostname) (Debian: qemu-system-x86 / qemu-system-arm)`,
  overlay: `creating the session disk failed on $(hostname): $(tail -c 400 "$JOB_DIR/qemu-img.log")`,
  qemuStart: `qemu failed to start on $(hostname): $(tail -c 500 "$JOB_DIR/qemu.log")`,
  noTool: `$1 is not installed on node $(hostname) (Debian package $2); guests with network need it`,
  noNamespace: `cannot make a network namespace for the guest on $(hostname) ` +
    `(unprivileged user namespaces must be allowed): $(tail -c 300 "$NODE_DIR/unshare.log")`,
  rulesUnreadable: `cannot read the guest network rules $GUEST_RULES on $(hostname)`,
  rulesAbsent: `$NFT did not load the guest network rules on $(hostname)`,
  pastaEnded: `pasta could not connect the guest's network on $(hostname): $(tail -c 400 "$JOB_DIR/pasta.log")`,
  socat: `socat could not serve the VNC port on $(hostname): $(tail -c 400 "$JOB_DIR/socat.log")`,
  lockDir: `the GPU lock directory $LOCK_DIR cannot be written on $(hostname)`,
  tooFewGpus: `only \${#GPU_PICKED[@]} of $GPU_COUNT VFIO GPUs usable and free on $(hostname)` +
    `\${GPU_WHY:+ (\${GPU_WHY#; })}`,
};

const STOP_REQUESTED_NOTE = `# A stop before QEMU runs (during qemu-img, say: bash runs the trap once it returns) ` +
  `is remembered, and QEMU is never started.`;

/** The two halves of the test for real hardware KVM of the guest's architecture (accel auto). */
const KVM_OF_GUEST_ARCH = `[ "$(uname -m)" = "$GUEST_ARCH" ] ` +
  `&& [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] && [ ! -e /sys/module/kvm_pvm ]`;
const KVM_IN_HARDWARE =
  `{ [ -e /sys/module/kvm_intel ] || [ -e /sys/module/kvm_amd ] || [ "$GUEST_ARCH" = aarch64 ]; }`;

/** The inodes of the sockets that listen on TCP port $hex, IPv4 or IPv6. */
const LISTENING_INODES = `awk -v p=":$hex" '$4 == "0A" && substr($2, length($2) - 4) == p { print $10 }' ` +
  `/proc/net/tcp /proc/net/tcp6 2>/dev/null`;

/** status.json once QEMU listens: JSON inside a bash double-quoted string. */
const READY_STATUS = `{\\"state\\":\\"ready\\",\\"node\\":\\"$(json_text "$NODE_NAME")\\",` +
  `\\"bind\\":\\"$(json_text "$VNC_BIND")\\",\\"port\\":$PORT,\\"accel\\":\\"$USE\\",` +
  `\\"pid\\":$QEMU_PID,\\"gpus\\":[$GPU_JSON]}`;

export function buildJobScript(input: JobScriptInput): string {
  if (
    !Number.isInteger(input.vncPortMin) || !Number.isInteger(input.vncPortMax) || input.vncPortMin < 5900
    || input.vncPortMax < input.vncPortMin || input.vncPortMax > 65535
  ) {
    throw new Error(`bad VNC port range ${input.vncPortMin}-${input.vncPortMax}`);
  }
  return `#!/bin/bash
# qemu-web-desktop: session ${input.sessionId} (generated by the broker; runs on the compute node)
set -u
umask 077
SESSION=${shellQuote(input.sessionId)}
JOB_DIR=${shellQuote(input.jobDir)}
QEMU=${shellQuote(input.qemuBinary)}
QEMU_IMG=${shellQuote(input.qemuImg)}
OVERLAY=${shellQuote(input.overlayPath)}
OVERLAY_ARGS=${array(input.overlayArgv)}
ARGV_KVM=${array(input.argvKvm)}
ARGV_TCG=${array(input.argvTcg)}
ACCEL=${shellQuote(input.accel)}
GUEST_ARCH=${shellQuote(UNAME_ARCH[input.guestArch])}
VNC_BIND=${shellQuote(input.vncBind)}
PROBE_HOST=${shellQuote(probeHost(input.vncBind))}
PORT_MIN=${input.vncPortMin}
PORT_MAX=${input.vncPortMax}
STATUS="$JOB_DIR/${STATUS_FILE}"

json_text() { printf '%s' "$1" | tr -d '"\\\\\\000-\\037' | cut -c1-600; }
report() { printf '%s\\n' "$1" > "$STATUS.tmp" && mv -f "$STATUS.tmp" "$STATUS"; }
fail() { report "{\\"state\\":\\"failed\\",\\"error\\":\\"$(json_text "$1")\\"}"; exit 1; }

cd "$JOB_DIR" || fail "the shared directory $JOB_DIR is not reachable from node $(hostname)"
NODE_DIR=$(mktemp -d "\${TMPDIR:-/tmp}/qwd-$SESSION.XXXXXX") || fail "${FAILURE.nodeDir}"
# It goes into QEMU options (-qmp, -pidfile), where a comma would start another option.
case "$NODE_DIR" in *,*) rm -rf "$NODE_DIR"; fail "${FAILURE.commaInNodeDir}" ;; esac
QEMU_PID=
NS_PID=
PASTA_PID=
IN_NS=()
FWD_PID=
stop_pid() { [ -n "$1" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null; }
${STOP_REQUESTED_NOTE}
STOP_REQUESTED=
forward() { if [ -n "$QEMU_PID" ]; then kill -TERM "$QEMU_PID" 2>/dev/null; else STOP_REQUESTED=1; fi; }
trap forward TERM INT HUP USR1
# QEMU first: a failure after it started (no free port, say) must not leave it running.
trap 'stop_pid "$QEMU_PID"; stop_pid "$FWD_PID"; stop_pid "$PASTA_PID"; stop_pid "$NS_PID"; rm -rf "$NODE_DIR"' EXIT

command -v "$QEMU" >/dev/null 2>&1 || fail "${FAILURE.noQemu}"
if [ ! -e "$OVERLAY" ] && [ \${#OVERLAY_ARGS[@]} -gt 0 ]; then
  "$QEMU_IMG" "\${OVERLAY_ARGS[@]}" > "$JOB_DIR/qemu-img.log" 2>&1 || fail "${FAILURE.overlay}"
fi

case "$ACCEL" in
  kvm) USE=kvm ;;
  tcg) USE=tcg ;;
  *)
    # Real hardware KVM of the guest's architecture only: kvm-pvm cannot run ordinary guests.
    if ${KVM_OF_GUEST_ARCH} \\
       && ${KVM_IN_HARDWARE}; then USE=kvm; else USE=tcg; fi ;;
esac
if [ "$USE" = kvm ]; then ARGV=("\${ARGV_KVM[@]}"); else ARGV=("\${ARGV_TCG[@]}"); fi
${gpuPart(input)}${networkPart(input)}
# True when process $1 itself (not another program) listens on TCP port $2.
listens() {
  local hex inode fd
  hex=$(printf '%04X' "$2")
  for inode in $(${LISTENING_INODES}); do
    for fd in /proc/"$1"/fd/*; do
      [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ] && return 0
    done
  done
  return 1
}

SPAN=$((PORT_MAX - PORT_MIN + 1))
PORT=
if [ -n "$NS_PID" ]; then start_namespaced; fi
[ -n "$PORT" ] || for attempt in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do
  try=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % SPAN))
  args=("\${ARGV[@]//${VNC_DISPLAY_PLACEHOLDER}/$((try - 5900))}")
  # Quoted: with bash 5.2's patsub_replacement an unquoted & in the replacement would stand for the match.
  args=("\${args[@]//${NODE_DIR_PLACEHOLDER}/"$NODE_DIR"}")
  if [ -n "$STOP_REQUESTED" ]; then report '{"state":"exited","code":0}'; exit 0; fi
  : > "$JOB_DIR/qemu.log"
  "$QEMU" "\${args[@]}" >> "$JOB_DIR/qemu.log" 2>&1 &
  QEMU_PID=$!
  while kill -0 "$QEMU_PID" 2>/dev/null; do
    if listens "$QEMU_PID" "$try"; then PORT=$try; break 2; fi
    sleep 0.05
  done
  wait "$QEMU_PID"
  QEMU_PID=
  grep -q 'Address already in use' "$JOB_DIR/qemu.log" || fail "${FAILURE.qemuStart}"
done
[ -n "$PORT" ] || fail "no free VNC port in $PORT_MIN-$PORT_MAX on $(hostname) after 16 tries"

NODE_NAME=\${SLURMD_NODENAME:-$(hostname)}
GPU_JSON=
for gpu in "\${GPU_PICKED[@]}"; do GPU_JSON="$GPU_JSON\${GPU_JSON:+,}\\"$(json_text "$gpu")\\""; done
report "${READY_STATUS}"

# wait returns early when a trapped signal arrives: keep waiting until QEMU is gone.
while :; do
  wait "$QEMU_PID"
  STATUS_CODE=$?
  kill -0 "$QEMU_PID" 2>/dev/null || break
done
QEMU_PID=
report "{\\"state\\":\\"exited\\",\\"code\\":$STATUS_CODE}"
exit "$STATUS_CODE"
`;
}

const NEED_NETWORK_TOOLS = `need "$UNSHARE" util-linux; need "$NSENTER" util-linux; need "$IP" iproute2; ` +
  `need "$NFT" nftables; need "$PASTA" passt; need "$SOCAT" socat; need setpriv util-linux`;

/** True once the sleep that holds the namespace is in a network namespace other than the job's. */
const NAMESPACE_HELD = `[ "$(cat /proc/"$NS_PID"/comm 2>/dev/null)" = sleep ] ` +
  `&& [ "$(readlink /proc/"$NS_PID"/ns/net 2>/dev/null)" != "$OWN_NET" ]`;

/** The node's addresses, one a line: its interfaces' ($addrs) and its local routes' ($v4, $v6). */
const NODE_ADDRESS_LIST = `{ printf '%s\\n' "$addrs" | awk '{ sub("/.*", "", $4); print $4 }'; ` +
  `printf '%s\\n%s\\n' "$v4" "$v6" | awk '{ print $2 }'; } | sort -u`;

const LOAD_RULES_IN_NAMESPACE =
  `{ "\${IN_NS[@]}" "$IP" link set lo up && "\${IN_NS[@]}" "$NFT" -f "$NODE_DIR/guest-net.nft"; }`;

/** True once the namespace has a default route of either family. */
const HAS_DEFAULT_ROUTE =
  `"\${IN_NS[@]}" "$IP" route show default | grep -q . || "\${IN_NS[@]}" "$IP" -6 route show default | grep -q .`;

/**
 * The node-side network namespace (bash): made and connected before QEMU, with
 * the guest rules and the node's own addresses loaded; \`start_namespaced\`
 * then starts QEMU in it and serves its VNC socket on a port. Nothing when not isolated.
 */
function networkPart(input: JobScriptInput): string {
  const net = input.guestNetwork;
  if (!net) return '';
  const { tools } = net;
  const wildcard = input.vncBind === '0.0.0.0' || input.vncBind === '::';
  const bind = wildcard
    ? (input.vncBind === '::' ? ',ipv6only=0' : '')
    : `,bind=${input.vncBind.includes(':') ? `[${input.vncBind}]` : input.vncBind}`;
  return `
# ---- Guest network: a namespace of its own on this node ----
UNSHARE=${shellQuote(tools.unshare)}
NSENTER=${shellQuote(tools.nsenter)}
IP=${shellQuote(tools.ip)}
NFT=${shellQuote(tools.nft)}
PASTA=${shellQuote(tools.pasta)}
SOCAT=${shellQuote(tools.socat)}
GUEST_RULES=${shellQuote(net.rulesFile)}
FWD_LISTEN=${shellQuote(input.vncBind.includes(':') ? 'TCP6-LISTEN' : 'TCP4-LISTEN')}
FWD_BIND=${shellQuote(bind)}
need() { command -v "$1" >/dev/null 2>&1 || fail "${FAILURE.noTool}"; }
${NEED_NETWORK_TOOLS}
# The namespace is held by a sleep in a user namespace of the job's own, which
# owns it: the job needs no root. Root joins only its network namespace (QEMU
# keeps its privileges, e.g. for VFIO); another account joins both.
"$UNSHARE" --user --map-root-user --net -- sleep infinity > "$NODE_DIR/unshare.log" 2>&1 &
NS_PID=$!
OWN_NET=$(readlink /proc/$$/ns/net)
for wait_ns in $(seq 1 200); do
  ${NAMESPACE_HELD} && break
  kill -0 "$NS_PID" 2>/dev/null || fail "${FAILURE.noNamespace}"
  [ "$wait_ns" = 200 ] && fail "the guest's network namespace on $(hostname) was not ready within 10 s"
  sleep 0.05
done
if [ "$(id -u)" = 0 ]; then
  IN_NS=("$NSENTER" "--target=$NS_PID" --net --)
  QEMU_IN_NS=("\${IN_NS[@]}")
  PASTA_AS=(--runas 0)
else
  IN_NS=("$NSENTER" "--target=$NS_PID" --user --net --preserve-credentials --)
  # In its user namespace the job's account holds every capability, CAP_NET_ADMIN over the
  # rules included: QEMU gets none of them (and can gain none), so the guest's rules stay.
  QEMU_IN_NS=("\${IN_NS[@]}" setpriv --bounding-set=-all --inh-caps=-all --ambient-caps=-all --no-new-privs --)
  PASTA_AS=()
fi
# Every address of this node (interfaces up or down, and local routes): the guest must reach none.
node_addresses() {
  local addrs v4 v6
  addrs=$("$IP" -o address show) || return 1
  v4=$("$IP" -4 route show table local) || return 1
  v6=$("$IP" -6 route show table local) || return 1
  ${NODE_ADDRESS_LIST} | awk '
    $0 ~ "^[0-9]+[.][0-9]+[.][0-9]+[.][0-9]+(/[0-9]+)?$" { four = four (four ? ", " : "") $0; next }
    $0 ~ ":" && $0 ~ "^[0-9a-fA-F:]+(/[0-9]+)?$" { six = six (six ? ", " : "") $0 }
    END {
      if (four) print "add element inet qwd_guest host4 { " four " }"
      if (six) print "add element inet qwd_guest host6 { " six " }"
    }'
}
NODE_RULES=$(node_addresses) || fail "cannot read the addresses of node $(hostname) with $IP"
{ cat "$GUEST_RULES" && printf '%s\\n' "$NODE_RULES"; } > "$NODE_DIR/guest-net.nft" || fail "${FAILURE.rulesUnreadable}"
${LOAD_RULES_IN_NAMESPACE} > "$NODE_DIR/net.log" 2>&1 \\
  || fail "cannot load the guest network rules on $(hostname): $(tail -c 300 "$NODE_DIR/net.log")"
# Read back: a QEMU without them would reach the node, so trust no exit status alone.
"\${IN_NS[@]}" "$NFT" list chain inet qwd_guest output 2>/dev/null | grep -q '@host4' || fail "${FAILURE.rulesAbsent}"
# Connected to the node's network (outbound only: no port forwarded, no gateway mapped to the node).
"$PASTA" --foreground --quiet --stderr "\${PASTA_AS[@]}" --config-net --no-map-gw --tcp-ports none \\
  --udp-ports none --tcp-ns none --udp-ns none "$NS_PID" > "$JOB_DIR/pasta.log" 2>&1 &
PASTA_PID=$!
for wait_pasta in $(seq 1 200); do
  kill -0 "$PASTA_PID" 2>/dev/null || fail "${FAILURE.pastaEnded}"
  # Connected once the namespace has a default route of either family (an IPv6-only node gives no IPv4 one).
  if ${HAS_DEFAULT_ROUTE}; then break; fi
  [ "$wait_pasta" = 200 ] && fail "pasta did not connect the guest's network on $(hostname) within 10 s"
  sleep 0.05
done
# QEMU in the namespace, its VNC on a Unix socket; then socat serves that socket on
# a free port of the range, in the node's network (a port another program holds is skipped).
start_namespaced() {
  local args try wait_fwd
  args=("\${ARGV[@]//${NODE_DIR_PLACEHOLDER}/"$NODE_DIR"}")
  if [ -n "$STOP_REQUESTED" ]; then report '{"state":"exited","code":0}'; exit 0; fi
  "\${QEMU_IN_NS[@]}" "$QEMU" "\${args[@]}" > "$JOB_DIR/qemu.log" 2>&1 &
  QEMU_PID=$!
  until [ -S "$NODE_DIR/vnc.sock" ]; do
    kill -0 "$QEMU_PID" 2>/dev/null || fail "${FAILURE.qemuStart}"
    sleep 0.05
  done
  for attempt in $(seq 1 16); do
    try=$((PORT_MIN + (RANDOM * 32768 + RANDOM) % SPAN))
    # One child per connection, bounded (QEMU itself takes at most 32 VNC clients).
    "$SOCAT" "$FWD_LISTEN:$try$FWD_BIND,reuseaddr,fork,max-children=64" "UNIX-CONNECT:$NODE_DIR/vnc.sock" \\
      > "$JOB_DIR/socat.log" 2>&1 &
    FWD_PID=$!
    while kill -0 "$FWD_PID" 2>/dev/null; do
      if listens "$FWD_PID" "$try"; then PORT=$try; return 0; fi
      sleep 0.05
    done
    wait "$FWD_PID"
    FWD_PID=
    grep -q 'Address already in use' "$JOB_DIR/socat.log" || fail "${FAILURE.socat}"
  done
  fail "no free VNC port in $PORT_MIN-$PORT_MAX on $(hostname) after 16 tries"
}
`;
}

const DEFINE_PCI_DRIVER = `pci_driver() { local d; d=$(readlink "$SYSFS/sys/bus/pci/devices/$1/driver" 2>/dev/null) ` +
  `|| return 0; printf '%s' "\${d##*/}"; }`;

const PCI_ADDRESS = /^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$/;

/** The node-side GPU pick (bash), or an empty GPU_PICKED when the job has no GPU. */
function gpuPart(input: JobScriptInput): string {
  const gpus = input.gpus;
  if (!gpus || gpus.count < 1) return 'GPU_PICKED=()\n';
  if (!Number.isInteger(gpus.count) || gpus.count > 16) throw new Error(`bad GPU count ${gpus.count}`);
  for (const address of gpus.exclude) {
    if (!PCI_ADDRESS.test(address)) throw new Error(`bad PCI address in gpu.exclude: ${address}`);
  }
  return `
# ---- GPUs: ${gpus.count}, picked here on the node ----
GPU_COUNT=${gpus.count}
SYSFS=${shellQuote(gpus.sysfsRoot.replace(/\/+$/, ''))}
LOCK_DIR=${shellQuote(gpus.lockDir)}
GPU_EXCLUDE=${array(gpus.exclude)}
GPU_BUS=${shellQuote(input.guestArch === 'aarch64' ? 'pcie.0' : 'pci.0')}
command -v flock >/dev/null 2>&1 || fail "flock (util-linux) is not installed on node $(hostname)"
mkdir -p "$LOCK_DIR" 2>/dev/null && [ -w "$LOCK_DIR" ] || fail "${FAILURE.lockDir}"
pci_class() { cat "$SYSFS/sys/bus/pci/devices/$1/class" 2>/dev/null; }
${DEFINE_PCI_DRIVER}
GPU_ARGS=()
GPU_PICKED=()
GPU_SLOTS=0
GPU_WHY=
SEEN_GROUPS=' '
for dev in "$SYSFS"/sys/bus/pci/devices/*; do
  [ \${#GPU_PICKED[@]} -ge "$GPU_COUNT" ] && break
  addr=\${dev##*/}
  case "$(pci_class "$addr")" in 0x03*) ;; *) continue ;; esac
  for x in "\${GPU_EXCLUDE[@]}"; do [ "$x" = "$addr" ] && continue 2; done
  group=$(readlink "$dev/iommu_group" 2>/dev/null) || { GPU_WHY="$GPU_WHY; $addr has no IOMMU group"; continue; }
  group=\${group##*/}
  case "$SEEN_GROUPS" in *" $group "*) continue ;; esac
  SEEN_GROUPS="$SEEN_GROUPS$group "
  funcs=("$addr")
  usable=1
  [ "$(pci_driver "$addr")" = vfio-pci ] || usable=0
  for member in "$SYSFS/sys/kernel/iommu_groups/$group/devices"/*; do
    m=\${member##*/}
    [ -e "$member" ] && [ "$m" != "$addr" ] || continue
    case "$(pci_class "$m")" in 0x0604*) continue ;; esac
    [ "$(pci_driver "$m")" = vfio-pci ] || usable=0
    funcs+=("$m")
  done
  [ "$usable" = 1 ] || { GPU_WHY="$GPU_WHY; IOMMU group $group of $addr is not all bound to vfio-pci"; continue; }
  # Held (fd open) until this script and QEMU, which inherits it, have exited.
  exec {lock_fd}>"$LOCK_DIR/iommu-group-$group.lock" || continue
  if ! flock -n "$lock_fd"; then exec {lock_fd}>&-; GPU_WHY="$GPU_WHY; $addr is used by another job"; continue; fi
  # One guest slot per card (PCI device) of the group, its functions together in
  # it (function 0 multifunction=on), slots from 0x10 on: as src/qemu/argv.ts lays them out.
  cards=()
  for f in "\${funcs[@]}"; do case " \${cards[*]} " in *" \${f%.*} "*) ;; *) cards+=("\${f%.*}") ;; esac; done
  for card in "\${cards[@]}"; do
    mine=()
    for f in "\${funcs[@]}"; do [ "\${f%.*}" = "$card" ] && mine+=("$f"); done
    slot=$(printf '0x%x' $((16 + GPU_SLOTS)))
    GPU_SLOTS=$((GPU_SLOTS + 1))
    fn=0
    for f in "\${mine[@]}"; do
      opt="vfio-pci,host=$f,bus=$GPU_BUS,addr=$slot.$fn"
      [ "$fn" = 0 ] && [ \${#mine[@]} -gt 1 ] && opt="$opt,multifunction=on"
      GPU_ARGS+=(-device "$opt")
      fn=$((fn + 1))
    done
  done
  GPU_PICKED+=("$addr")
done
[ \${#GPU_PICKED[@]} -ge "$GPU_COUNT" ] || fail "${FAILURE.tooFewGpus}"
ARGV+=("\${GPU_ARGS[@]}")
`;
}
