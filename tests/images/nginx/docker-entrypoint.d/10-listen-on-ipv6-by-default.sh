#!/usr/bin/env bash
# Adds `listen [::]:80;` to the shipped default.conf when the container has IPv6, as the official
# image's script does; leaves a changed or mounted default.conf alone.
set -Eeo pipefail

ME=$(basename "$0")
DEFAULT_CONF_FILE="etc/nginx/conf.d/default.conf"

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

if [ ! -f "/proc/net/if_inet6" ]; then
	entrypoint_log "$ME: info: ipv6 not available"
	exit 0
fi

if [ ! -f "/$DEFAULT_CONF_FILE" ]; then
	entrypoint_log "$ME: info: /$DEFAULT_CONF_FILE is not a file or does not exist"
	exit 0
fi

touch /$DEFAULT_CONF_FILE 2>/dev/null || { entrypoint_log "$ME: info: can not modify /$DEFAULT_CONF_FILE (read-only file system?)"; exit 0; }

entrypoint_log "$ME: info: Getting the checksum of /$DEFAULT_CONF_FILE"
if ! (cd / && sha256sum --status -c /etc/nginx/.default.conf.sha256) 2>/dev/null; then
	entrypoint_log "$ME: info: /$DEFAULT_CONF_FILE differs from the packaged version"
	exit 0
fi

sed -i -E 's,listen       80;,listen       80;\n    listen  [::]:80;,' /$DEFAULT_CONF_FILE
entrypoint_log "$ME: info: Enabled listen on IPv6 in /$DEFAULT_CONF_FILE"
