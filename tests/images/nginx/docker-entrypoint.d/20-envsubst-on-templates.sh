#!/usr/bin/env bash
# Renders templates with envsubst, as the official image's script does:
#   $NGINX_ENVSUBST_TEMPLATE_DIR (/etc/nginx/templates)/**/*$NGINX_ENVSUBST_TEMPLATE_SUFFIX (.template)
#     → $NGINX_ENVSUBST_OUTPUT_DIR (/etc/nginx/conf.d)/**/* (suffix dropped)
#   *$NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX (.stream-template)
#     → $NGINX_ENVSUBST_STREAM_OUTPUT_DIR (/etc/nginx/stream-conf.d), included from a stream {} block
#       that is appended to nginx.conf when missing.
# Only variables that are set (and whose name matches the regex NGINX_ENVSUBST_FILTER, if given) are
# replaced, so nginx's own $host, $remote_addr... stay as they are.
set -Eeo pipefail

ME=$(basename "$0")

entrypoint_log() {
	if [ -z "${NGINX_ENTRYPOINT_QUIET_LOGS:-}" ]; then
		echo "$@"
	fi
}

add_stream_block() {
	local conffile="/etc/nginx/nginx.conf"

	if grep -q -E "\s*stream\s*\{" "$conffile"; then
		entrypoint_log "$ME: $conffile contains a stream block; include $stream_output_dir/*.conf to enable stream templates"
	else
		if [ -w "$conffile" ]; then
			entrypoint_log "$ME: Appending stream block to $conffile to include $stream_output_dir/*.conf"
			cat << END >> "$conffile"
# added by "$ME" on "$(date)"
stream {
  include $stream_output_dir/*.conf;
}
END
		else
			entrypoint_log "$ME: ERROR: $conffile is not writable, can not add a stream block"
			stream_output_dir=""
		fi
	fi
}

auto_envsubst() {
	local template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
	local suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
	local output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
	local stream_suffix="${NGINX_ENVSUBST_STREAM_TEMPLATE_SUFFIX:-.stream-template}"
	local stream_output_dir="${NGINX_ENVSUBST_STREAM_OUTPUT_DIR:-/etc/nginx/stream-conf.d}"
	local filter="${NGINX_ENVSUBST_FILTER:-}"

	local template defined_envs relative_path output_path subdir name
	defined_envs=""
	while IFS= read -r name; do
		if [ -n "$name" ] && { [ -z "$filter" ] || [[ "$name" =~ $filter ]]; }; then
			defined_envs+="\${$name} "
		fi
	done < <(compgen -e)

	[ -d "$template_dir" ] || return 0
	if [ ! -w "$output_dir" ]; then
		entrypoint_log "$ME: ERROR: $template_dir exists, but $output_dir is not writable"
		return 0
	fi
	while read -r template; do
		relative_path="${template#"$template_dir/"}"
		output_path="$output_dir/${relative_path%"$suffix"}"
		subdir=$(dirname "$relative_path")
		mkdir -p "$output_dir/$subdir"
		entrypoint_log "$ME: Running envsubst on $template to $output_path"
		envsubst "$defined_envs" < "$template" > "$output_path"
	done < <(find "$template_dir" -follow -type f -name "*$suffix" -print)

	# stream templates: only when there are some, and the output dir can be made
	if [ -n "$(find "$template_dir" -follow -type f -name "*$stream_suffix" -print -quit)" ]; then
		mkdir -p "$stream_output_dir" 2>/dev/null || :
		if [ ! -w "$stream_output_dir" ]; then
			entrypoint_log "$ME: ERROR: $template_dir exists, but $stream_output_dir is not writable"
			return 0
		fi
		add_stream_block
		[ -n "$stream_output_dir" ] || return 0
		while read -r template; do
			relative_path="${template#"$template_dir/"}"
			output_path="$stream_output_dir/${relative_path%"$stream_suffix"}"
			subdir=$(dirname "$relative_path")
			mkdir -p "$stream_output_dir/$subdir"
			entrypoint_log "$ME: Running envsubst on $template to $output_path"
			envsubst "$defined_envs" < "$template" > "$output_path"
		done < <(find "$template_dir" -follow -type f -name "*$stream_suffix" -print)
	fi
}

auto_envsubst

exit 0
