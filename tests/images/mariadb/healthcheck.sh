#!/usr/bin/env bash
# healthcheck.sh of the mariadb stand-in: the command-line interface of the official image's
# /usr/local/bin/healthcheck.sh (MariaDB/mariadb-docker), reimplemented for this image.
#
#   healthcheck.sh [OPTION|--TEST]...      e.g.  healthcheck.sh --connect --innodb_initialized
#
# Tests (each must pass; they run in the order given):
#   --connect                    the server accepts connections over TCP (authentication errors count
#                                as "connected", as in the official script)
#   --innodb_initialized         InnoDB finished starting (crash recovery included)
#   --innodb_buffer_pool_loaded  the buffer pool dump was loaded
#   --galera_online, --galera_ready
#   --replication                with --replication_io, --replication_sql,
#                                --replication_seconds_behind_master=N, --replication_sql_remaining_delay=N,
#                                --replication_name=NAME, --replication_all
#   --mariadbupgrade             no mariadb-upgrade running on the datadir
# Options: --su=USER / --su USER / --su-mysql (re-run as that unix user), --datadir=DIR,
#   --defaults-file=F, --defaults-extra-file=F, --defaults-group-suffix=S, --no-defaults,
#   --no-connect (skip the implicit final connect test).
# The SQL user is the one of $datadir/.my-healthcheck.cnf (written by the entrypoint at
# initialisation: user "healthcheck", USAGE only) unless other defaults are given.
# If no test passes a connect check, a connect test is run at the end, as the official does.
set -Eeo pipefail

declare -A def=()
declare -A repl=()
nodefaults=
connect_s=
datadir=/var/lib/mysql

_client_defaults() {
	if [ -n "$nodefaults" ]; then
		printf '%s\n' --no-defaults
		return
	fi
	[ -z "${def[file]:-}" ] || printf '%s\n' "--defaults-file=${def[file]}"
	[ -z "${def[extra_file]:-}" ] || printf '%s\n' "--defaults-extra-file=${def[extra_file]}"
	[ -z "${def[group_suffix]:-}" ] || printf '%s\n' "--defaults-group-suffix=${def[group_suffix]}"
}

_process_sql() {
	local defaults=()
	mapfile -t defaults < <(_client_defaults)
	mariadb "${defaults[@]}" --protocol socket -B "$@"
}

connect() {
	local s defaults=()
	# through the socket first: works with --require-secure-transport too
	s=$(_process_sql --skip-column-names -e 'select @@skip_networking' 2>/dev/null) || :
	case "$s" in
		0|1)
			connect_s=$s
			return "$s"
			;;
	esac
	mapfile -t defaults < <(_client_defaults)
	s=$(mariadb "${defaults[@]}" -h localhost --protocol tcp --skip-column-names --batch \
		--skip-print-query-on-error -e 'select @@skip_networking' 2>&1) || :
	case "$s" in
		1|ERROR\ 2002\ \(HY000\):*|ERROR\ 2003\ \(HY000\):*)
			connect_s=1
			;;
		0|ERROR\ 1820\ \(HY000\)*|ERROR\ 4151\ \(HY000\):*|ERROR\ 1226\ \(42000\)*|ERROR\ 1[0-9][0-9][0-9]\ \(28000\):*)
			# reached the server (maybe refused the user): it is up and listening
			connect_s=0
			;;
		*)
			echo "Unknown error $s" >&2
			connect_s=1
			;;
	esac
	return "$connect_s"
}

innodb_initialized() {
	local s
	s=$(_process_sql --skip-column-names -e "select 1 from information_schema.ENGINES WHERE engine='innodb' AND support in ('YES', 'DEFAULT', 'ENABLED')")
	[ "$s" == 1 ]
}

innodb_buffer_pool_loaded() {
	local s
	s=$(_process_sql --skip-column-names -e "select VARIABLE_VALUE from information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='Innodb_buffer_pool_load_status'")
	[[ $s =~ 'load completed' ]]
}

galera_online() {
	local s
	s=$(_process_sql --skip-column-names -e "select VARIABLE_VALUE from information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_LOCAL_STATE'")
	[ "$s" = 4 ]
}

galera_ready() {
	local s
	s=$(_process_sql --skip-column-names -e "select VARIABLE_VALUE from information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='WSREP_READY'")
	[ "$s" = ON ]
}

replication() {
	# the single quotes are SQL quotes around the connection name
	# shellcheck disable=SC2016
	local query="SHOW ${repl[all]:+ALL} REPLICA${repl[all]:+S} ${repl[name]:+'${repl[name]}'} STATUS\\G"
	local out n v
	out=$(_process_sql -e "$query") || return 1
	[ -n "$out" ] || return 1
	while IFS=':' read -r n v; do
		n="${n#"${n%%[![:space:]]*}"}"
		v="${v# }"
		case "$n" in
			Slave_IO_Running)
				[ -z "${repl[io]:-}" ] || [ "$v" != No ] || return 1 ;;
			Slave_SQL_Running)
				[ -z "${repl[sql]:-}" ] || [ "$v" != No ] || return 1 ;;
			Seconds_Behind_Master)
				if [ -n "${repl[seconds_behind_master]:-}" ] \
					&& { [ "$v" = NULL ] || (( repl[seconds_behind_master] < v )); }; then
					return 1
				fi ;;
			SQL_Remaining_Delay)
				if [ -n "${repl[sql_remaining_delay]:-}" ] && [ "$v" != NULL ] \
					&& (( repl[sql_remaining_delay] < v )); then
					return 1
				fi ;;
		esac
	done <<< "$out"
	return 0
}

mariadbupgrade() {
	local f="$datadir/mysql_upgrade_info"
	if [ -r "$f" ]; then
		flock --exclusive --nonblock -n 9 9<"$f"
		return $?
	fi
	return 0
}

_run_test() {
	local test="$1"
	case "$test" in
		connect|innodb_initialized|innodb_buffer_pool_loaded|galera_online|galera_ready|replication|mariadbupgrade) ;;
		*)
			echo "healthcheck unknown option or test '$test'" >&2
			exit 1
			;;
	esac
	if ! "$test"; then
		echo "healthcheck $test failed" >&2
		exit 1
	fi
}

_su() {
	exec setpriv --reuid="$1" --regid="$1" --init-groups "${BASH_SOURCE[0]}" "${@:2}"
}

if [ $# -eq 0 ]; then
	echo "At least one argument required" >&2
	exit 1
fi

# --datadir may come later on the command line; the default healthcheck file follows it
for arg; do
	case "$arg" in
		--datadir=*) datadir=${arg#*=} ;;
	esac
done
if [ -f "$datadir/.my-healthcheck.cnf" ]; then
	def[extra_file]="$datadir/.my-healthcheck.cnf"
fi

while [ $# -gt 0 ]; do
	case "$1" in
		--su=*) u="${1#*=}"; shift; _su "$u" "$@" ;;
		--su) shift; u="$1"; shift; _su "$u" "$@" ;;
		--su-mysql) shift; _su mysql "$@" ;;
		--replication_*=*)
			n=${1#--replication_}; n=${n%%=*}; n=${n,,}
			repl[$n]=${1#*=}
			;;
		--replication_*)
			n=${1#--replication_}; n=${n,,}
			if [ -z "${2:-}" ] || [ "${2:0:2}" == '--' ]; then
				repl[$n]=1
			else
				repl[$n]=$2
				shift
			fi
			;;
		--datadir=*) ;;
		--datadir) shift; datadir="$1" ;;
		--no-defaults) def=(); nodefaults=1 ;;
		--defaults-file=*|--defaults-extra-file=*|--defaults-group-suffix=*)
			n=${1#--defaults-}; n=${n%%=*}; n=${n//-/_}
			def[$n]=${1#*=}
			nodefaults=
			;;
		--defaults-file|--defaults-extra-file|--defaults-group-suffix)
			n=${1#--defaults-}; n=${n//-/_}
			def[$n]=$2
			shift
			nodefaults=
			;;
		--no-connect) connect_s=0 ;;
		--*) _run_test "${1#--}" ;;
		*)
			echo "Unknown healthcheck option $1" >&2
			exit 1
			;;
	esac
	shift
done

if [ "$connect_s" != "0" ]; then
	# no connect test passed yet: the result is only as good as a connect test
	connect
	exit $?
fi
