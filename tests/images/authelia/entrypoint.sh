#!/bin/sh
# As the official image's /app/entrypoint.sh (4.38): a first argument other than --config runs that command;
# otherwise authelia runs with the given arguments (X_AUTHELIA_CONFIG, /config/configuration.yml, when none): at once
# when the container was started as another user than root, else as PUID:PGID after /config was handed to them -
# through su-exec there (setpriv here, which Debian ships), even for the default PUID/PGID 0, so the switch needs
# CAP_SETGID for setgroups() as upstream's does.
[ -n "$UMASK" ] && umask "$UMASK"

if [ -n "$1" ] && [ "$1" != "--config" ]; then
  exec "$@"
elif [ "$(id -u)" != 0 ] || [ "$(id -g)" != 0 ]; then
  exec authelia "$@"
else
  chown -R "$PUID:$PGID" /config
  exec setpriv --reuid="$PUID" --regid="$PGID" --clear-groups authelia "$@"
fi
