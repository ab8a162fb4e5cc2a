#!/bin/bash
# Entrypoint of vsfleet-dind-test (run under tini, which reaps orphans such as
# containerd shims and forwards SIGTERM here). Starts the inner dockerd with
# its data in /var/lib/docker (a bind mount of a host directory), waits until
# `docker info` answers, then stays until dockerd exits. On SIGTERM/SIGINT it
# stops dockerd (inner containers get DIND_STOP_SECS to stop, then are killed)
# and exits 0. Extra arguments go to dockerd.
#
# Environment:
#   DIND_IPTABLES   nft | legacy | off   (default: nft if it works, else legacy)
#   DIND_WAIT_SECS  how long to wait for the inner daemon (default 60)
#   DIND_STOP_SECS  grace for inner containers on SIGTERM (default 3)
set -euo pipefail

log() { echo "dind: $*" >&2; }
started=$EPOCHREALTIME
args=()

# Needs CAP_SYS_ADMIN and CAP_NET_ADMIN at least: overlay mounts, cgroups,
# iptables, /proc/sys: --privileged, or the capability set in the README.
capeff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
if (( (0x$capeff >> 21 & 1) == 0 || (0x$capeff >> 12 & 1) == 0 )); then
    log "missing CAP_SYS_ADMIN/CAP_NET_ADMIN: run with --privileged or --cap-add ALL (see README)"
    exit 1
fi

# /run is part of the container's writable layer, so a restarted container
# would find the previous docker.pid, containerd sockets and state there.
if ! mountpoint -q /run; then
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
fi
mountpoint -q /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp

# Without --privileged (see README: the capability-based stand-in), Docker
# mounts /sys and the cgroup hierarchies read-only; inner containers need to
# create cgroups. CAP_SYS_ADMIN lets us remount them writable.
awk '$5 == "/sys" || $5 ~ "^/sys/fs/cgroup/" { if ($6 ~ /(^|,)ro(,|$)/) print $5 }' /proc/self/mountinfo |
    while read -r target; do
        # sysfs is read-only in its superblock too; the cgroup hierarchies are
        # read-only bind mounts of this container's own cgroups.
        if [ "$target" = /sys ]; then opts=remount,rw; else opts=remount,bind,rw; fi
        mount -o "$opts" "$target" || log "warning: cannot remount $target writable"
    done

# overlay2 cannot stack on the outer overlay/fuse-overlayfs root file system.
fstype=$(stat -f -c %T /var/lib/docker)
case $fstype in
    overlayfs|fuseblk|fuse) log "warning: /var/lib/docker is on $fstype; bind-mount a host directory there" ;;
esac

# cgroups. v2: move ourselves out of the root cgroup so that dockerd can
# enable controllers for its children (as docker:dind does). v1: Docker mounts
# this container's own cgroup at /sys/fs/cgroup/<controller>, so the inner
# default parent (/docker) already nests inside it and the outer memory/CPU
# limits cover the inner containers. Only when the host's whole tree is
# visible (-v /sys/fs/cgroup:/sys/fs/cgroup) is the parent set explicitly;
# otherwise the inner containers would land in the host's /docker.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    xargs -rn1 </sys/fs/cgroup/cgroup.procs >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
    sed -e 's/ / +/g' -e 's/^/+/' </sys/fs/cgroup/cgroup.controllers \
        >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null || true
else
    own=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3 }' /proc/self/cgroup)
    if [ -n "$own" ] && [ "$own" != / ] && [ -d "/sys/fs/cgroup/memory$own" ]; then
        args+=("--cgroup-parent=$own/dind")
    fi
fi

# iptables: both backends work in the container's own network namespace when
# the kernel has them; pick one that answers (the host uses nft here).
mode=${DIND_IPTABLES:-}
if [ -z "$mode" ]; then
    if iptables-nft -w -nL >/dev/null 2>&1; then mode=nft
    elif iptables-legacy -w -nL >/dev/null 2>&1; then mode=legacy
    else mode=off
    fi
fi
case $mode in
    nft|legacy)
        update-alternatives --set iptables "/usr/sbin/iptables-$mode" >/dev/null
        update-alternatives --set ip6tables "/usr/sbin/ip6tables-$mode" >/dev/null ;;
    off)
        log "warning: no working iptables; inner containers get no NAT or published ports"
        args+=(--iptables=false --ip-masq=false) ;;
    *) log "DIND_IPTABLES must be nft, legacy or off"; exit 1 ;;
esac

# Inner bridges must not exceed the outer interface's MTU.
dev=$(ip route show default 2>/dev/null | awk '{ for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit } }')
if [ -n "$dev" ] && mtu=$(cat "/sys/class/net/$dev/mtu" 2>/dev/null) && [ "$mtu" -lt 1500 ]; then
    args+=("--mtu=$mtu")
fi

log "starting dockerd (iptables: $mode) ${args[*]} $*"
dockerd "${args[@]}" "$@" &
dockerd_pid=$!

# dockerd stops each inner container with that container's own stop timeout
# (10 s by default, and daemon.json cannot lower it), longer than an outer
# `docker stop` waits. So after DIND_STOP_SECS the inner containers' processes
# (the children of their containerd shims) are killed, and dockerd finishes
# its shutdown: it does not count that as a manual stop, so restart policies
# (unless-stopped) still apply when the daemon starts again.
stopping=
timer=
stop() {
    [ -z "$stopping" ] || return 0
    stopping=1
    log "stopping dockerd"
    kill -TERM "$dockerd_pid" 2>/dev/null || true
    (
        sleep "${DIND_STOP_SECS:-3}"
        shims=$(pgrep -d, -x containerd-shim || true)
        if [ -n "$shims" ] && pgrep -P "$shims" >/dev/null; then
            log "killing inner containers still running after ${DIND_STOP_SECS:-3}s"
            pkill -KILL -P "$shims" || true
        fi
    ) &
    timer=$!
}
trap stop TERM INT

deadline=$(( ${EPOCHSECONDS} + ${DIND_WAIT_SECS:-60} ))
until docker info >/dev/null 2>&1; do
    if [ -n "$stopping" ] || ! kill -0 "$dockerd_pid" 2>/dev/null; then
        break
    fi
    if [ "$EPOCHSECONDS" -ge "$deadline" ]; then
        log "dockerd did not answer within ${DIND_WAIT_SECS:-60}s"
        stop
        break
    fi
    sleep 0.1
done
if [ -z "$stopping" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    touch /run/dind-ready
    log "docker ready after $(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')s"
fi

# `wait` returns early when a trapped signal arrives; wait again for the exit.
status=0
while kill -0 "$dockerd_pid" 2>/dev/null; do
    wait "$dockerd_pid" && status=0 || status=$?
done
# If the child ended between the trap and kill -0, its real status is kept.
wait "$dockerd_pid" 2>/dev/null && status=0 || { s=$?; [ "$s" -eq 127 ] || status=$s; }
rm -f /run/dind-ready
[ -z "$timer" ] || kill "$timer" 2>/dev/null || true
if [ -n "$stopping" ]; then
    log "dockerd stopped (status $status)"
    exit 0
fi
log "dockerd exited with status $status"
exit "$status"
