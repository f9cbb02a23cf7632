#!/usr/bin/env bash
# With NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE set, sets worker_processes in nginx.conf to the
# CPUs this container may use (its cgroup CPU quota, else the CPUs it may run on), like the
# official image's script (which also reads cpusets; this one relies on nproc for those).
set -Eeo pipefail

ME=$(basename "$0")

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

[ -n "${NGINX_ENTRYPOINT_WORKER_PROCESSES_AUTOTUNE:-}" ] || exit 0

touch /etc/nginx/nginx.conf 2>/dev/null || { entrypoint_log "$ME: error: can not modify /etc/nginx/nginx.conf (read-only file system?)"; exit 0; }

ncpu=$(nproc)
quota=
if [ -r /sys/fs/cgroup/cpu.max ]; then
	read -r q p < /sys/fs/cgroup/cpu.max
	[ "$q" = max ] || quota=$(( (q + p - 1) / p ))
elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ -r /sys/fs/cgroup/cpu/cpu.cfs_period_us ]; then
	q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
	p=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
	[ "$q" -le 0 ] || quota=$(( (q + p - 1) / p ))
fi
if [ -n "$quota" ] && [ "$quota" -lt "$ncpu" ]; then
	ncpu=$quota
fi

sed -i.bak -r 's/^(worker_processes)(.*)$/# Commented out by '"$ME"' on '"$(date)"'\n#\1\2\n\1 '"$ncpu"';/' /etc/nginx/nginx.conf
entrypoint_log "$ME: info: worker_processes set to $ncpu"
