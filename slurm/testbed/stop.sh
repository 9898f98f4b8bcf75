#!/usr/bin/env bash
# Stop the test cluster that start.sh DIR started: cancel its jobs, then end slurmd, slurmctld
# and munged by the pids in their pid files (checking each pid still runs that daemon), and
# remove the /etc/slurm/slurm.conf link if it points into DIR. Safe to run twice.
set -uo pipefail

[[ $# -eq 1 && $1 == /* ]] || { echo "usage: $0 ABSOLUTE_DIR" >&2; exit 2; }
DIR=$1
SYSTEM_CONF=/etc/slurm/slurm.conf
export SLURM_CONF=$DIR/slurm.conf

running() {  # running PID NAME: PID is alive and runs NAME (Debian's binary: NAME-wlm)
    local exe
    exe=$(basename "$(readlink "/proc/$1/exe" 2>/dev/null)")
    [[ -n $1 && ($exe == "$2" || $exe == "$2-wlm") ]]
}

stop_daemon() {  # stop_daemon NAME PIDFILE
    local pid
    pid=$(cat "$2" 2>/dev/null) || return 0
    if running "$pid" "$1"; then
        kill -TERM "$pid"
        for _ in $(seq 50); do running "$pid" "$1" || break; sleep 0.2; done
        running "$pid" "$1" && kill -KILL "$pid"
    fi
    rm -f "$2"
}

if [[ -f $DIR/slurmctld.pid ]] && running "$(cat "$DIR/slurmctld.pid")" slurmctld; then
    jobs=$(squeue -h -o %A 2>/dev/null)
    if [[ -n $jobs ]]; then
        # shellcheck disable=SC2086
        scancel $jobs
        for _ in $(seq 50); do
            [[ -z $(squeue -h -t running,completing -o %A 2>/dev/null) ]] && break
            sleep 0.2
        done
    fi
fi
stop_daemon slurmd "$DIR/slurmd.pid"
stop_daemon slurmctld "$DIR/slurmctld.pid"
stop_daemon munged "$DIR/munge/munged.pid"
if [[ -L $SYSTEM_CONF && $(readlink "$SYSTEM_CONF") == "$DIR/slurm.conf" ]]; then
    rm "$SYSTEM_CONF"
fi
