#!/bin/bash
# A real single-node SLURM for the `slurm`-marked tests, without systemd (Debian 12, as root).
# Origin: the project leads' recipe in ../shared/slurm/ (proven on the build machines), adapted:
# installs its packages when missing. Starts munged, slurmctld, slurmd (WITH_DBD=1: also MariaDB +
# slurmdbd so that sacct works) for one node = this host, partitions "debug" (default), "second".
# Stop with scripts/stop-local-slurm.sh (by PID files). Fresh state each time.
set -euo pipefail
PACKAGES=""
command -v slurmctld >/dev/null && command -v munged >/dev/null || PACKAGES="slurm-wlm munge"
if [ "${WITH_DBD:-0}" = 1 ]; then
  command -v slurmdbd >/dev/null || PACKAGES="$PACKAGES slurmdbd"
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || PACKAGES="$PACKAGES mariadb-server"
fi
if [ -n "$PACKAGES" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $PACKAGES >/dev/null
fi
F=${SLURM_SANDBOX:-/tmp/local-slurm}
WITH_DBD=${WITH_DBD:-0}
H=$(hostname -s)
# A cluster of ours already running: stop it first, its state is about to be wiped.
if pgrep -x slurmctld >/dev/null || pgrep -x slurmd >/dev/null || pgrep -x munged >/dev/null; then
  bash "$(dirname "$0")/stop-local-slurm.sh" >/dev/null 2>&1 || true
  for daemon in slurmd slurmctld slurmdbd munged; do pkill -x "$daemon" 2>/dev/null || true; done
  for i in $(seq 50); do pgrep -x slurmctld >/dev/null || pgrep -x munged >/dev/null || break; sleep 0.1; done
fi
rm -rf $F/state $F/spool $F/log; mkdir -p $F/state $F/spool $F/log

# --- munge ---
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
su -s /bin/sh munge -c /usr/sbin/munged
munge -n | unmunge >/dev/null

# --- slurm.conf ---
if [ "$WITH_DBD" = 1 ]; then ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost"; else ACCT="AccountingStorageType=accounting_storage/none"; fi
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$H
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$F/state
SlurmdSpoolDir=$F/spool/slurmd-%n
SlurmctldPidFile=$F/state/slurmctld.pid
SlurmdPidFile=$F/spool/slurmd-%n.pid
SlurmctldLogFile=$F/log/slurmctld.log
SlurmdLogFile=$F/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$ACCT
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=300
$(slurmd -C | head -1) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=second Nodes=ALL Default=NO MaxTime=01:00:00 State=UP
PartitionName=shared Nodes=ALL Default=NO MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF

# --- optional accounting: MariaDB + slurmdbd ---
if [ "$WITH_DBD" = 1 ]; then
  rm -rf $F/mysql; install -d -o mysql -g mysql $F/mysql /run/mysqld
  mariadb-install-db --user=mysql --datadir=$F/mysql --skip-test-db > $F/log/mariadb-install.log 2>&1
  /usr/sbin/mariadbd --user=mysql --datadir=$F/mysql --socket=/run/mysqld/mysqld.sock \
     --pid-file=$F/mysql/mariadbd.pid --bind-address=127.0.0.1 --log-error=$F/log/mariadb.err >/dev/null 2>&1 &
  for i in $(seq 100); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.1; done
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$F/log/slurmdbd.log
PidFile=$F/state/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
  chmod 600 /etc/slurm/slurmdbd.conf
  slurmdbd
  for i in $(seq 100); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.1; done
  sacctmgr -i add cluster local >/dev/null
fi

# --- slurm daemons ---
slurmctld
slurmd
for i in $(seq 100); do sinfo -h -o %T 2>/dev/null | grep -qx idle && break; sleep 0.1; done
sinfo
