#!/bin/sh
# Makes the secret files of deploy/compose.yaml in deploy/secrets/ (random passwords, and a
# self-signed TLS certificate for HOST unless tls.crt/tls.key are there already). Run once from
# the repository root: sh deploy/docker/make-secrets.sh [HOST]. Never commit deploy/secrets/.
set -eu
host=${1:-localhost}
dir=$(dirname "$0")/../secrets
mkdir -p "$dir"
umask 077
pw() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }
if [ ! -f "$dir/postgres_password" ]; then
    db=$(pw)
    printf '%s' "$db" > "$dir/postgres_password"
    printf 'postgresql+psycopg://caesar:%s@postgres:5432/caesar' "$db" > "$dir/caesar_db_url"
fi
if [ ! -f "$dir/rabbitmq.conf" ]; then
    mq=$(pw)
    printf 'default_user = caesar\ndefault_pass = %s\ndefault_vhost = caesar\n' "$mq" \
        > "$dir/rabbitmq.conf"
    printf 'amqp://caesar:%s@rabbitmq:5672/caesar' "$mq" > "$dir/caesar_broker_url"
fi
if [ ! -f "$dir/tls.crt" ]; then
    openssl req -x509 -newkey rsa:3072 -nodes -days 365 -subj "/CN=$host" \
        -addext "subjectAltName=DNS:$host" -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
fi
# The containers read them as their own users (uid 1000, postgres, rabbitmq, nginx); the
# folder itself stays private to its owner (0700).
chmod 0644 "$dir"/*
# Never committed: a .gitignore of "*" in the folder ignores all of it.
printf '*\n' > "$dir/.gitignore"
echo "secrets in $dir"
