#!/usr/bin/env bash
# A single-node SLURM on this machine, for the integration tests (tests/test_slurm*.py): Debian's
# packages (SLURM 22.05), no systemd needed. It installs what is missing (slurmctld, slurmd,
# slurm-client, slurmdbd, munge, mariadb-server), writes a config for this machine (its CPUs and
# memory as `slurmd -C` reports them, one fake GPU, accounting in a MariaDB of its own), starts munged,
# MariaDB, slurmdbd, slurmctld and slurmd as plain daemons, waits until the node is idle, and records
# each pid it started; `stop` stops those, and only those, by pid.
#
#   bash tests/cluster/slurm.sh start         start (state, logs and pids in $STATE, wiped first)
#   bash tests/cluster/slurm.sh stop          stop what start started
#   bash tests/cluster/slurm.sh status        is it up? (exit 0 when the node answers)
#   bash tests/cluster/slurm.sh run CMD...    start if it is not up, run CMD, stop what it started
#                                             (also when CMD fails or is interrupted); CMD's exit status
#
# Root only (apt-get, /etc/slurm, daemons). `run` as another user runs CMD without SLURM, and the SLURM
# tests skip, saying why; under CI (CI set) a failed start fails `run`. The config goes to /etc/slurm,
# where sbatch and the other clients look; a slurm.conf there that this script did not write (a real
# cluster's) is never touched. Ports: 6817-6819 (SLURM), $FTCOMPARE_SLURM_DB_PORT (MariaDB, 127.0.0.1).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE="${FTCOMPARE_SLURM_STATE:-/var/tmp/ftcompare-slurm}"
DB_PORT="${FTCOMPARE_SLURM_DB_PORT:-33069}"
ETC="${FTCOMPARE_SLURM_ETC:-/etc/slurm}"  # another folder only for tests of this script; the clients read /etc/slurm
MARK="Written by tests/cluster/slurm.sh"
PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
PIDS="$STATE/pids"  # one file per daemon this script started, holding its pid
HOST="$(hostname -s)"
# Stop order (the reverse of start).
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged)

say() { echo "slurm.sh: $*" >&2; }
die() {
    say "$*"
    exit 1
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages, writes $ETC and starts daemons)"
}

# --- install -----------------------------------------------------------------------------------------

install_packages() {
    local missing=() package
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the packages' maintainer scripts from starting their services (this script starts them).
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local status=0
    {
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
            { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
    } || status=$?
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    [ "$status" -eq 0 ] || die "apt-get install ${missing[*]} failed"
}

# --- configuration -----------------------------------------------------------------------------------

fill() {  # template -> stdout, @FIELDS@ replaced
    sed -e "s|@HOST@|$HOST|g" -e "s|@STATE@|$STATE|g" -e "s|@HARDWARE@|$HARDWARE|g" \
        -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" "$HERE/$1"
}

write_configs() {
    if [ -e "$ETC/slurm.conf" ] && ! grep -q "$MARK" "$ETC/slurm.conf"; then
        die "$ETC/slurm.conf was not written by this script (a real SLURM?); not touching it"
    fi
    # This machine as slurmd sees it: CPUs, sockets, cores, threads and RealMemory (MB).
    HARDWARE="$(slurmd -C 2>/dev/null | head -1 | tr ' ' '\n' | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' | paste -sd' ')"
    [ -n "$HARDWARE" ] || die "slurmd -C did not report this machine's CPUs and memory"
    DB_PASS="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    mkdir -p "$ETC"
    fill slurm.conf.in >"$ETC/slurm.conf"
    fill gres.conf.in >"$ETC/gres.conf"
    (umask 077 && fill slurmdbd.conf.in >"$ETC/slurmdbd.conf")
    chmod 644 "$ETC/slurm.conf" "$ETC/gres.conf"
    say "node $HOST: $HARDWARE, one GPU (fake), partition debug"
}

# --- daemons -----------------------------------------------------------------------------------------

alive() {  # alive NAME: the recorded pid runs a process of that name
    local pid
    pid="$(cat "$PIDS/$1" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

record() {  # record NAME PIDFILE LOG: wait for the daemon's pid file, keep its pid
    local i
    for i in $(seq 1 100); do
        if [ -s "$2" ] && kill -0 "$(cat "$2")" 2>/dev/null; then
            cat "$2" >"$PIDS/$1"
            return 0
        fi
        sleep 0.1
    done
    die "$1 did not start within 10 s; its log: $3"
}

wait_for() {  # wait_for SECONDS WHAT CMD...: until CMD succeeds
    local seconds=$1 what=$2 i
    shift 2
    for i in $(seq 1 $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    return 1
}

start_munged() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munged already runs; using it (not stopped by stop)"
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key >/dev/null
    fi
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge
    install -d -o munge -g munge -m 700 /var/lib/munge /var/log/munge
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    record munged /run/munge/munged.pid /var/log/munge/munged.log
    wait_for 10 munge sh -c 'munge -n | unmunge' || die "munged does not answer"
}

start_mariadbd() {
    # Everything of MariaDB's in a folder its user owns: data, socket, pid file, log.
    local dir="$STATE/mariadb" sock="$STATE/mariadb/mysqld.sock"
    install -d -o mysql -g mysql "$dir" "$dir/data"
    mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" --auth-root-authentication-method=socket \
        --skip-test-db >"$dir/install.log" 2>&1 || die "mariadb-install-db failed: $dir/install.log"
    # No fsync: slurmdbd's first schema creation takes seconds instead of about 30 s; a test database
    # does not need to survive a power cut.
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$dir/data" --socket="$sock" \
        --pid-file="$dir/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --log-error="$dir/mariadbd.log" --innodb-flush-log-at-trx-commit=0 --innodb-flush-method=nosync \
        --innodb-doublewrite=0 </dev/null >/dev/null 2>&1 &
    record mariadbd "$dir/mariadbd.pid" "$dir/mariadbd.log"
    wait_for 60 mariadb mariadb --no-defaults --socket="$sock" -u root -e "SELECT 1" ||
        die "MariaDB does not answer: $dir/mariadbd.log"
    mariadb --no-defaults --socket="$sock" -u root <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

start_slurm() {
    slurmdbd
    record slurmdbd "$STATE/slurmdbd.pid" "$STATE/slurmdbd.log"
    wait_for 90 slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer: $STATE/slurmdbd.log"
    sacctmgr -n list cluster format=cluster | grep -qw ftcompare || sacctmgr -i add cluster ftcompare >/dev/null
    slurmctld
    record slurmctld "$STATE/slurmctld.pid" "$STATE/slurmctld.log"
    wait_for 30 slurmctld scontrol ping || die "slurmctld does not answer: $STATE/slurmctld.log"
    slurmd
    record slurmd "$STATE/slurmd.pid" "$STATE/slurmd.log"
}

node_state() {
    sinfo -h -N -n "$HOST" -o %t 2>/dev/null | head -1
}

wait_idle() {
    local i state
    for i in $(seq 1 150); do
        state="$(node_state)"
        case "$state" in
            idle) return 0 ;;
            drain* | down* | drng*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    die "node $HOST is '$state', not idle, after 30 s: $STATE/slurmd.log, $STATE/slurmctld.log"
}

up() {  # our daemons run and the node answers
    alive slurmctld && alive slurmd && [ -n "$(node_state)" ]
}

start() {
    need_root
    if up; then
        say "already running (started earlier; state in $STATE)"
        return 0
    fi
    stop_recorded  # leftovers of a start that did not finish
    install_packages
    rm -rf "$STATE"
    mkdir -p "$PIDS" "$STATE/slurmctld" "$STATE/slurmd"
    write_configs
    start_munged
    start_mariadbd
    start_slurm
    wait_idle
    sacct -n >/dev/null || die "sacct does not answer: $STATE/slurmdbd.log"
    say "up: $(sinfo -h -N -o '%N %t CPUs=%c MemMB=%m %G' | head -1); logs in $STATE"
}

# --- stop --------------------------------------------------------------------------------------------

stop_recorded() {
    local name pid i
    [ -d "$PIDS" ] || return 0
    if alive slurmctld && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
        # No job outlives the cluster: what is still queued or running is cancelled first.
        scancel --quiet $(squeue -h -o %i) 2>/dev/null || true
        wait_for 30 "jobs to end" sh -c '[ -z "$(squeue -h -o %i)" ]' || say "jobs still in squeue after scancel"
    fi
    for name in "${DAEMONS[@]}"; do
        if alive "$name"; then
            pid="$(cat "$PIDS/$name")"
            kill -TERM "$pid" 2>/dev/null || true
            for i in $(seq 1 100); do
                alive "$name" || break
                sleep 0.1
            done
            if alive "$name"; then
                say "$name ($pid) still runs 10 s after SIGTERM; SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$PIDS/$name"
    done
}

# The configs write_configs wrote, and only those. Left behind, they point SLURM's clients at a controller
# that is gone: `scontrol show config`, which Snakemake's SLURM plugin runs on import, then waits 9 s for
# it on every `snakemake` command on this machine.
remove_configs() {
    local name
    for name in slurm.conf gres.conf slurmdbd.conf; do
        if [ -e "$ETC/$name" ] && grep -q "$MARK" "$ETC/$name"; then
            rm -f "$ETC/$name"
        fi
    done
}

stop() {
    need_root
    stop_recorded
    remove_configs
    say "stopped"
}

status() {
    if up; then
        sinfo -N -o '%N %t %c %m %G'
    else
        say "not running"
        return 1
    fi
}

run() {
    [ $# -gt 0 ] || die "usage: slurm.sh run CMD..."
    local started=0 code=0
    if [ "$(id -u)" -ne 0 ]; then
        say "not root: no local SLURM started, the SLURM tests skip (as root: bash tests/cluster/slurm.sh start)"
    elif up; then
        say "already running: using it, and leaving it running"
    elif (start); then
        started=1
    else
        stop_recorded  # what the failed start left running
        remove_configs
        [ -z "${CI:-}" ] || die "could not start the local SLURM (CI): see the lines above and $STATE/*.log"
        say "could not start the local SLURM; the SLURM tests skip"
    fi
    if [ "$started" -eq 1 ]; then
        trap 'stop_recorded; remove_configs; say "stopped"' EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
    fi
    "$@" || code=$?
    return "$code"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    run)
        shift
        run "$@"
        ;;
    *) die "usage: slurm.sh start | stop | status | run CMD..." ;;
esac
