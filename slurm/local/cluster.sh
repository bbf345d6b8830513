#!/usr/bin/env bash
# A private SLURM cluster on this machine: munged, slurmctld and two slurmd
# "nodes" (n1, n2), with their own ports, socket, state and spool under one
# directory, nothing under /etc.  Used by `make test-slurm`.
#
#   slurm/local/cluster.sh start DIR    install slurm-wlm and munge if missing (root, Debian),
#                                       start everything, wait for both nodes; prints SLURM_CONF
#   slurm/local/cluster.sh stop DIR     stop every daemon started from DIR and remove DIR
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}; STATE=${2:-}
[ -n "$cmd" ] && [ -n "$STATE" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
say() { echo "slurm-local: $*" >&2; }

stop() {
    [ -d "$STATE" ] || return 0
    for pidfile in "$STATE"/*.pid "$STATE"/munge/munged.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done
    # jobs left by a failed test: every process whose environment names this cluster's config
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [ "$pid" = $$ ] || [ "$pid" = "$PPID" ] && continue
        if grep -qa "SLURM_CONF=$STATE/slurm.conf" "$p/environ" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    sleep 1
    for pidfile in "$STATE"/*.pid "$STATE"/munge/munged.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile" 2>/dev/null || true)
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
    done
    for _ in $(seq 1 50); do              # until every daemon is gone
        alive=0
        for pidfile in "$STATE"/*.pid "$STATE"/munge/munged.pid; do
            [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    rm -rf "$STATE"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || { say "slurm-wlm and munge are missing; install them"; exit 1; }
        say "installing slurm-wlm and munge"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || true
        apt-get install -y -qq slurm-wlm munge >/dev/null
    fi
    mkdir -p "$STATE"/{munge,ctld,spool/n1,spool/n2,tmp/n1,tmp/n2,keys}
    chmod 0700 "$STATE/keys"
    chmod 0755 "$STATE/munge"
    dd if=/dev/urandom of="$STATE/keys/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$STATE/keys/munge.key"
    munged --force --socket="$STATE/munge/munge.socket.2" --key-file="$STATE/keys/munge.key" \
        --pid-file="$STATE/munge/munged.pid" --seed-file="$STATE/keys/munged.seed" \
        --log-file="$STATE/munged.log"
    local host; host=$(hostname)
    sed -e "s|@HOST@|$host|g" -e "s|@STATE@|$STATE|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@CTLD_PORT@|$(free_port)|" -e "s|@SLURMD_PORT@|$(free_port)|" \
        -e "s|@N1_PORT@|$(free_port)|" -e "s|@N2_PORT@|$(free_port)|" -e "s|@CPUS@|${SLURM_LOCAL_CPUS:-2}|g" \
        "$HERE/slurm.conf.in" > "$STATE/slurm.conf"
    export SLURM_CONF=$STATE/slurm.conf
    setsid slurmctld -D -f "$SLURM_CONF" > "$STATE/slurmctld.out" 2>&1 < /dev/null &
    echo $! > "$STATE/slurmctld-main.pid"
    for node in n1 n2; do
        setsid slurmd -D -N "$node" -f "$SLURM_CONF" > "$STATE/slurmd-$node.out" 2>&1 < /dev/null &
        echo $! > "$STATE/slurmd-main-$node.pid"
    done
    for _ in $(seq 1 100); do
        if [ "$(sinfo -h -N -o '%T' 2>/dev/null | grep -c idle)" = 2 ]; then
            say "two nodes idle (SLURM_CONF=$SLURM_CONF)"
            echo "$SLURM_CONF"
            return 0
        fi
        sleep 0.2
    done
    say "the nodes did not come up; logs in $STATE"
    tail -n 20 "$STATE"/*.log "$STATE"/*.out >&2 || true
    exit 1
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
