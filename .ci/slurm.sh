#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the tests that submit real jobs (tests/test_slurm.py) and for
# trying hydra/launcher=slurm by hand. Debian/Ubuntu, as root; no systemd or cgroups needed.
#
#   .ci/slurm.sh start    # installs slurm-wlm and munge if absent, starts munged, slurmctld and slurmd
#   .ci/slurm.sh status   # exit 0 while the controller answers
#   .ci/slurm.sh stop     # cancels the cluster's jobs, stops the three daemons it started (by PID), removes its folder
#   eval "$(.ci/slurm.sh start)"   # start and status print only `export SLURM_CONF=...` on stdout
#
# Everything lives in one folder ($MELANOMA_LIT_SLURM_DIR, default /tmp/melanoma_lit-slurm): slurm.conf, its own
# munge key and socket, state, spool, logs, PID files. Nothing under /etc is read or written, and the ports are not
# SLURM's defaults, so a machine that is already part of a cluster keeps it. Clients find this cluster through
# SLURM_CONF: `export SLURM_CONF=$MELANOMA_LIT_SLURM_DIR/slurm.conf` (start and status print the line; the tests
# look there by themselves). One partition, `debug`, holds the node with all of its CPUs and memory.
set -euo pipefail

DIR="${MELANOMA_LIT_SLURM_DIR:-/tmp/melanoma_lit-slurm}"
CONF="$DIR/slurm.conf"
CTLD_PORT="${MELANOMA_LIT_SLURM_PORT:-16817}"  # slurmd listens on the next port
WAIT_S=30

say() { echo "slurm.sh: $*" >&2; }
die() { say "$*"; exit 1; }

alive() {  # alive NAME: the daemon whose PID file is DIR/NAME.pid runs
    local pid
    pid="$(cat "$DIR/$1.pid" 2>/dev/null)" || return 1
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null
}

answers() {  # the controller answers and the node takes jobs
    [[ -f "$CONF" ]] || return 1
    SLURM_CONF="$CONF" timeout 5 scontrol ping 2>/dev/null | grep -q "is UP" || return 1
    SLURM_CONF="$CONF" timeout 5 sinfo -h -o %t 2>/dev/null | grep -qE "^(idle|mix|alloc)"
}

install() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || die "slurmctld, slurmd or munged is missing and this is not a Debian-like system: install SLURM and MUNGE, then run this again"
    say "installing slurm-wlm and munge (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_conf() {
    local host node
    host="$(hostname -s)"
    # this machine's CPUs, sockets, cores and memory, as slurmd sees them (its first line: NodeName=<host> ...)
    node="$(slurmd -C | head -n 1)"
    cat >"$CONF" <<EOF
# Written by .ci/slurm.sh: a single-node test cluster without cgroups or accounting.
ClusterName=melanoma-lit
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$((CTLD_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again after 10 s instead of 120 s (read when slurmctld starts)
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# a requeued job starts again as soon as it may: the scheduler passes every 2 s, not every 60 s
SchedulerParameters=bf_interval=1,sched_interval=2
MailProg=/bin/true
KillWait=30
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    alive munged && return
    mkdir -p -m 0755 "$DIR/munge"   # munged wants its socket folder executable by all, its key folder private
    mkdir -p -m 0700 "$DIR/munge/etc"
    if [[ ! -s "$DIR/munge/etc/munge.key" ]]; then
        head -c 1024 /dev/urandom >"$DIR/munge/etc/munge.key"
        chmod 0400 "$DIR/munge/etc/munge.key"
    fi
    munged --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/etc/munge.key" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/etc/munged.seed"
}

wait_for() {  # wait_for WHAT COMMAND...: poll COMMAND for up to WAIT_S seconds
    local what="$1" deadline=$((SECONDS + WAIT_S))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die "$what did not come up within ${WAIT_S} s; see $DIR/log/"
        sleep 0.5
    done
}

start() {
    [[ "$(id -u)" == 0 ]] || die "run as root (sudo $0 start): slurmd starts jobs as their users"
    if answers && alive slurmctld && alive slurmd && alive munged; then
        say "already running ($CONF)"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    install
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    write_conf
    start_munge
    wait_for munged test -S "$DIR/munge/munge.socket"
    alive slurmctld || SLURM_CONF="$CONF" slurmctld
    alive slurmd || SLURM_CONF="$CONF" slurmd
    wait_for "the SLURM controller and node" answers
    say "single-node SLURM up: partition debug, $(SLURM_CONF="$CONF" sinfo -h -o '%c CPUs, %m MB')"
    echo "export SLURM_CONF=$CONF"
}

stop_daemon() {  # stop_daemon NAME: TERM, then KILL after 10 s, the PID in DIR/NAME.pid
    local pid
    pid="$(cat "$DIR/$1.pid" 2>/dev/null)" || return 0
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$DIR/$1.pid"
}

stop() {
    [[ -d "$DIR" ]] || { say "not running ($DIR does not exist)"; return; }
    if answers; then  # jobs first: slurmd does not end the job steps it started when it stops
        SLURM_CONF="$CONF" scancel --full --quiet --partition=debug || true
        local deadline=$((SECONDS + 40))
        while [[ -n "$(SLURM_CONF="$CONF" squeue -h -t running,completing -o %A 2>/dev/null)" ]] && ((SECONDS < deadline)); do
            sleep 0.5
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    rm -rf "$DIR"
    say "stopped"
}

status() {
    if answers; then
        SLURM_CONF="$CONF" sinfo >&2
        echo "export SLURM_CONF=$CONF"
    else
        say "not running (no controller answers for $CONF)"
        return 1
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
*) die "usage: $0 start|stop|status" ;;
esac
