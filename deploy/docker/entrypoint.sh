#!/bin/sh
# Container entry point: CAESAR_REST_<NAME>_FILE=/run/secrets/x sets CAESAR_REST_<NAME> to the
# content of that file (compose/Kubernetes secrets), so that passwords never sit in the
# environment of the container definition; then runs the command (caesar-rest ...).
set -eu
for var in $(env | sed -n 's/^\(CAESAR_REST_[A-Z0-9_]*\)_FILE=.*/\1/p'); do
    file=$(printenv "${var}_FILE")
    if [ ! -r "$file" ]; then
        echo "caesar-entrypoint: ${var}_FILE: cannot read $file" >&2
        exit 1
    fi
    value=$(cat "$file")
    export "$var=$value"
    unset "${var}_FILE"
done
exec "$@"
