#!/usr/bin/env bash
# A real one-node Slurm cluster and an SSH server on 127.0.0.1, for AiiDA's core.ssh/core.ssh_async + core.slurm.
# Debian/Ubuntu, root or sudo. Idempotent: installs only what is missing, starts only what is not running,
# rewrites slurm.conf only when it changed (and then restarts the Slurm daemons). Safe to run twice.
# Nothing here needs systemd: every daemon is started by hand in the background (containers have no init).
# Usage: bash scripts/start_slurm_cluster.sh
# Afterwards: `ssh localhost true` works without a password, `sinfo` shows node `localhost` idle in partition `debug`.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
start=$(date +%s)
say() { echo "[slurm-cluster] $*"; }

# --- 1. packages -------------------------------------------------------------------------------------------------
packages=()
command -v slurmctld >/dev/null || packages+=(slurmctld)
command -v slurmd >/dev/null || packages+=(slurmd)
command -v sbatch >/dev/null || packages+=(slurm-client)
command -v munged >/dev/null || packages+=(munge)
[ -x /usr/sbin/sshd ] || packages+=(openssh-server)
command -v ssh-keyscan >/dev/null || packages+=(openssh-client)
# Slurm's pmix plugin (MpiDefault=pmix, so that `srun pw.x` works) loads the unversioned libpmix.so.
compgen -G "/usr/lib/*/libpmix.so" >/dev/null || compgen -G "/usr/lib/*/pmix2/lib/libpmix.so" >/dev/null \
    || packages+=(libpmix-dev)
if [ ${#packages[@]} -gt 0 ]; then
    say "apt-get install ${packages[*]}"
    t0=$(date +%s)
    install_packages() {
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
    }
    if ! install_packages; then
        say "apt-get update (the package lists were stale or missing)"
        $SUDO apt-get update -qq
        install_packages
    fi
    say "installed in $(($(date +%s) - t0)) s"
else
    say "packages: all present"
fi

# pid file holds a live process? A zombie (killed, never reaped: PID 1 of a container may not reap) is dead.
alive() {
    local pid state
    [ -s "$1" ] || return 1
    pid=$($SUDO cat "$1")
    $SUDO kill -0 "$pid" 2>/dev/null || return 1
    state=$(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != "Z" ]
}

# --- 2. munge ----------------------------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    $SUDO mungekey --create --keyfile=/etc/munge/munge.key
    say "created the munge key"
fi
$SUDO chown munge:munge /etc/munge/munge.key
$SUDO chmod 0400 /etc/munge/munge.key
$SUDO install -d -o munge -g munge -m 0755 /run/munge
$SUDO install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
if alive /run/munge/munged.pid; then
    say "munged: already running (pid $($SUDO cat /run/munge/munged.pid))"
else
    $SUDO runuser -u munge -- /usr/sbin/munged
    say "munged: started"
fi
for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null || { echo "munge does not work: see /var/log/munge/munged.log" >&2; exit 1; }

# --- 3. slurm.conf -----------------------------------------------------------------------------------------------
cpus=$(nproc)
# Slurm drains a node whose real memory is below the configured one: announce 90% of it.
memory_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf=$(
    cat <<EOF
# Written by aiida-pyacemaker's scripts/start_slurm_cluster.sh: one node, no accounting, no cgroups.
ClusterName=pyacemaker
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MailProg=/bin/true
# No accounting database: keep finished jobs in slurmctld for an hour, so that scontrol show job finds them.
MinJobAge=3600
MpiDefault=pmix
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
$SUDO install -d /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
conf_changed=0
if [ "$($SUDO cat /etc/slurm/slurm.conf 2>/dev/null || true)" != "$conf" ]; then
    printf '%s\n' "$conf" | $SUDO tee /etc/slurm/slurm.conf >/dev/null
    conf_changed=1
    say "wrote /etc/slurm/slurm.conf (node localhost: ${cpus} CPUs, ${memory_mb} MB)"
else
    say "/etc/slurm/slurm.conf: unchanged"
fi

# --- 4. slurmctld and slurmd -------------------------------------------------------------------------------------
stop_daemon() {  # the one process in this pid file, which this script started
    local pidfile=$1 pid
    alive "$pidfile" || return 0
    pid=$($SUDO cat "$pidfile")
    $SUDO kill "$pid"
    for _ in $(seq 20); do $SUDO kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
    $SUDO kill -9 "$pid" 2>/dev/null || true  # a failed step launch can hang slurmd: only SIGKILL ends it
}
if [ "$conf_changed" = 1 ]; then
    stop_daemon /run/slurmd.pid
    stop_daemon /run/slurmctld.pid
fi
if alive /run/slurmctld.pid; then
    say "slurmctld: already running (pid $($SUDO cat /run/slurmctld.pid))"
else
    $SUDO slurmctld
    say "slurmctld: started"
fi
if alive /run/slurmd.pid; then
    say "slurmd: already running (pid $($SUDO cat /run/slurmd.pid))"
else
    # The node is called `localhost` in slurm.conf; the machine's hostname is something else.
    $SUDO slurmd -N localhost
    say "slurmd: started"
fi

# --- 5. sshd on 127.0.0.1 ----------------------------------------------------------------------------------------
$SUDO install -d -m 0755 /run/sshd
compgen -G "/etc/ssh/ssh_host_*_key" >/dev/null || $SUDO ssh-keygen -A >/dev/null
if alive /run/sshd.pid; then
    say "sshd: already running (pid $($SUDO cat /run/sshd.pid))"
elif (exec 3<>/dev/tcp/127.0.0.1/22) 2>/dev/null; then
    say "sshd: an SSH server already listens on 127.0.0.1:22 (not started by this script); using it"
else
    $SUDO /usr/sbin/sshd -o ListenAddress=127.0.0.1 -o PidFile=/run/sshd.pid
    say "sshd: started on 127.0.0.1:22"
fi

# --- 6. passwordless ssh to localhost for this user -------------------------------------------------------------
ssh_dir="$HOME/.ssh"
install -d -m 0700 "$ssh_dir"
key="$ssh_dir/id_ed25519"
if [ ! -f "$key" ]; then
    ssh-keygen -q -t ed25519 -N "" -C "$(id -un)@localhost (aiida-pyacemaker slurm cluster)" -f "$key"
    say "created $key"
fi
touch "$ssh_dir/authorized_keys" "$ssh_dir/known_hosts" "$ssh_dir/config"
chmod 0600 "$ssh_dir/authorized_keys" "$ssh_dir/config"
if ! grep -qxF "$(cat "$key.pub")" "$ssh_dir/authorized_keys"; then
    cat "$key.pub" >>"$ssh_dir/authorized_keys"
    say "added the key to $ssh_dir/authorized_keys"
fi
if ! grep -qE '^Host[[:space:]]+localhost([[:space:]]|$)' "$ssh_dir/config"; then
    printf '\nHost localhost\n    User %s\n    IdentityFile %s\n    IdentitiesOnly yes\n' "$(id -un)" "$key" \
        >>"$ssh_dir/config"
    say "added a 'Host localhost' entry to $ssh_dir/config"
fi
for host in localhost 127.0.0.1; do
    if ! ssh-keygen -F "$host" -f "$ssh_dir/known_hosts" >/dev/null; then
        for _ in $(seq 20); do
            scanned=$(ssh-keyscan -T 2 "$host" 2>/dev/null || true)
            [ -n "$scanned" ] && break
            sleep 0.5
        done
        [ -n "$scanned" ] || { echo "ssh-keyscan $host found no key: is sshd listening?" >&2; exit 1; }
        printf '%s\n' "$scanned" >>"$ssh_dir/known_hosts"
        say "added $host's host keys to $ssh_dir/known_hosts"
    fi
done
ssh -o BatchMode=yes localhost true || { echo "ssh localhost does not work without a password" >&2; exit 1; }
say "ssh localhost: ok"

# --- 7. wait until the node is idle -----------------------------------------------------------------------------
state=""
for attempt in $(seq 60); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null | head -n1 || true)
    case "$state" in
        idle | mixed | allocated) break ;;
        down* | drain* | drained*)
            # ReturnToService=2 brings back a node that registers; a state left from an earlier run may need help.
            [ "$attempt" = 10 ] && $SUDO scontrol update NodeName=localhost State=RESUME 2>/dev/null || true ;;
    esac
    sleep 1
done
case "$state" in
    idle | mixed | allocated) ;;
    *)
        echo "Slurm node localhost is '${state:-unknown}' after 60 s: see /var/log/slurm/slurmctld.log, slurmd.log" >&2
        exit 1
        ;;
esac
say "sinfo: node localhost is ${state} in partition debug (${cpus} CPUs); ready after $(($(date +%s) - start)) s"
