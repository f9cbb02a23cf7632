#!/usr/bin/env bash
# Entrypoint of the redis stand-in. Same behaviour as the official image's docker-entrypoint.sh
# (docker-library/redis), written for Debian's redis-server package.
#
# The official image compiles redis with protected mode off by default; Debian's binary has it on.
# To keep the official behaviour this script passes `--protected-mode no` to redis-server unless
# protected-mode is given on the command line or set in the config file given as the first
# argument (only that file is looked at, not files it includes). Without a config file redis 7
# binds to all interfaces (`* -::*`) already.
set -Eeo pipefail

# first arg is `-f` or `--some-option`, or `something.conf`: run redis-server with it
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
	set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ]; then
	protected_mode_given=
	for arg in "${@:2}"; do
		case "$arg" in
			--protected-mode|--protected-mode=*) protected_mode_given=1 ;;
		esac
	done
	if [ -z "$protected_mode_given" ] && [ "${2%.conf}" != "${2:-}" ] && [ -r "$2" ] \
		&& grep -qiE '^[[:space:]]*protected-mode[[:space:]]' "$2"; then
		protected_mode_given=1
	fi
	if [ -z "$protected_mode_given" ]; then
		set -- "$@" --protected-mode no
	fi

	# allow the container to be started with `--user`
	if [ "$(id -u)" = '0' ]; then
		find . \! -user redis -exec chown redis '{}' +
		export HOME=/data
		exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
	fi
fi

# an appropriate umask, unless one was set already
um="$(umask)"
if [ "$um" = '0022' ]; then
	umask 0077
fi

exec "$@"
