#!/usr/bin/env bash
# Start a one-node SLURM cluster on 127.0.0.1 for tests: munged, slurmctld and slurmd, with
# all state, spool, logs and pid files under DIR. Installs Debian's slurm-wlm and munge first
# when they are missing (needs root and apt). Stop it with stop.sh DIR.
#
#   sudo slurm/testbed/start.sh /tmp/slurm-test     # then: export SLURM_CONF=/tmp/slurm-test/slurm.conf
#
# Ports: SLURMCTLD_PORT (default 6817) and SLURMD_PORT (default 6818). TESTBED_CPUS: the CPUs
# the node offers (default: all the machine has), e.g. 2 to test a small node.
# /etc/slurm/slurm.conf becomes a symlink to DIR/slurm.conf while the cluster runs: the
# executor plugin's job step drops SLURM_CONF from the environment before it calls srun, so
# srun inside a job only finds the default path. An existing /etc/slurm/slurm.conf (a real
# cluster's) is never touched: the script stops instead.
# Exit codes: 2 usage, 3 not root, 4 packages cannot be installed, 5 a foreign
# /etc/slurm/slurm.conf exists, 1 anything else (the daemons' logs are in DIR).
set -euo pipefail

die() { echo "start.sh: $2" >&2; exit "$1"; }

[[ $# -eq 1 && $1 == /* ]] || die 2 "usage: $0 ABSOLUTE_DIR"
DIR=$1
HERE=$(cd "$(dirname "$0")" && pwd)
CTLD_PORT=${SLURMCTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
SYSTEM_CONF=/etc/slurm/slurm.conf
[[ $(id -u) -eq 0 ]] || die 3 "must run as root (starts daemons, may install packages)"

if ! command -v slurmctld slurmd munged mungekey sbatch >/dev/null; then
    echo "start.sh: installing slurm-wlm and munge with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
        >"${TMPDIR:-/tmp}/slurm-testbed-apt.log" 2>&1 \
        || die 4 "apt-get could not install slurm-wlm and munge (see ${TMPDIR:-/tmp}/slurm-testbed-apt.log)"
fi

if [[ -L $SYSTEM_CONF && ! -e $SYSTEM_CONF ]]; then
    rm "$SYSTEM_CONF"  # dangling link left by a test cluster that was not stopped
fi
if [[ -e $SYSTEM_CONF && $(readlink -f "$SYSTEM_CONF") != "$DIR/slurm.conf" ]]; then
    die 5 "$SYSTEM_CONF exists (a real SLURM installation?); not starting a test cluster"
fi

mkdir -p "$DIR"/{state,spool,munge}
chmod 755 "$DIR/munge"
HOST=$(hostname -s)
read -r CPUS MEMORY < <(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*RealMemory=\([0-9]*\).*/\1 \2/p')
CPUS=${TESTBED_CPUS:-$CPUS}
sed -e "s|@DIR@|$DIR|g" -e "s|@HOST@|$HOST|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEMORY@|$MEMORY|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    "$HERE/slurm.conf.in" >"$DIR/slurm.conf"
mkdir -p "$(dirname "$SYSTEM_CONF")"
ln -sfn "$DIR/slurm.conf" "$SYSTEM_CONF"
export SLURM_CONF=$DIR/slurm.conf

[[ -f $DIR/munge/munge.key ]] || mungekey --create --keyfile "$DIR/munge/munge.key"
munged --force --socket "$DIR/munge/munged.socket" --key-file "$DIR/munge/munge.key" \
    --pid-file "$DIR/munge/munged.pid" --log-file "$DIR/munge/munged.log" \
    --seed-file "$DIR/munge/munged.seed"
slurmctld -i
slurmd

# Ready when the node reports idle; the daemons' logs say why when it never does.
for _ in $(seq 120); do
    if [[ $(sinfo -h -N -p main -o %t 2>/dev/null) == idle ]]; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.5
done
die 1 "node $HOST not idle after 60 s; see $DIR/slurmctld.log and $DIR/slurmd.log"
