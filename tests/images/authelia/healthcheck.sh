#!/bin/sh
# The official image's /app/healthcheck.sh (4.38) with curl instead of busybox wget: authelia writes
# /app/.healthcheck.env when it listens; until then (or with server.disable_healthcheck) the check passes, exactly
# as upstream's does.
. /app/.healthcheck.env

if [ -z "${X_AUTHELIA_HEALTHCHECK}" ]; then
  exit 0
fi

if [ -z "${X_AUTHELIA_HEALTHCHECK_SCHEME}" ]; then
  X_AUTHELIA_HEALTHCHECK_SCHEME=http
fi

if [ -z "${X_AUTHELIA_HEALTHCHECK_HOST}" ]; then
  X_AUTHELIA_HEALTHCHECK_HOST=localhost
fi

if [ -z "${X_AUTHELIA_HEALTHCHECK_PORT}" ]; then
  X_AUTHELIA_HEALTHCHECK_PORT=9091
fi

curl --silent --fail --insecure --max-time 3 --output /dev/null \
  "${X_AUTHELIA_HEALTHCHECK_SCHEME}://${X_AUTHELIA_HEALTHCHECK_HOST}:${X_AUTHELIA_HEALTHCHECK_PORT}${X_AUTHELIA_HEALTHCHECK_PATH}/api/health" || exit 1
