# nginx in front of the API for a machine without a registry (`make stack-up`): Debian's nginx
# on the same base image as the application images, unprivileged (uid 1000), read-only root
# file system (its pid, temporary files and logs in /tmp). Sites with a registry can use
# nginxinc/nginx-unprivileged as deploy/compose.yaml does. The server configuration is mounted
# as /etc/nginx/conf.d/default.conf (scripts/docker.sh writes it from
# deploy/nginx/caesar-rest-host.conf), the locations snippet is built in.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /etc/nginx/sites-enabled/* \
    && groupadd --gid 1000 caesar \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin caesar \
    && printf '%s\n' 'pid /tmp/nginx.pid;' 'worker_processes 2;' 'error_log stderr warn;' \
        'events { worker_connections 1024; }' \
        'http {' '    include /etc/nginx/mime.types;' '    client_body_temp_path /tmp/body;' \
        '    proxy_temp_path /tmp/proxy;' '    fastcgi_temp_path /tmp/fastcgi;' \
        '    uwsgi_temp_path /tmp/uwsgi;' '    scgi_temp_path /tmp/scgi;' \
        '    include /etc/nginx/conf.d/*.conf;' '}' > /etc/nginx/nginx.conf
COPY deploy/nginx/caesar-rest-locations.conf /etc/nginx/snippets/caesar-rest-locations.conf
USER 1000:1000
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
