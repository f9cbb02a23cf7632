#!/bin/sh
# As the official image's /app/entrypoint.sh (4.38): a first argument other than --config runs that command;
# otherwise authelia runs with the given arguments (X_AUTHELIA_CONFIG, /config/configuration.yml, when none), as
# PUID:PGID after /config was handed to them (setpriv instead of su-exec, which Debian does not ship).
[ -n "$UMASK" ] && umask "$UMASK"

if [ -n "$1" ] && [ "$1" != "--config" ]; then
  exec "$@"
elif [ "$(id -u)" != 0 ] || [ "$(id -g)" != 0 ]; then
  exec authelia "$@"
elif [ "$PUID" = 0 ] && [ "$PGID" = 0 ]; then
  chown -R "$PUID:$PGID" /config
  exec authelia "$@"
else
  chown -R "$PUID:$PGID" /config
  exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups authelia "$@"
fi
