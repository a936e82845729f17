# Caddy with caddy-apikey, pinned: Go 1.26, xcaddy v0.4.5, Caddy v2.11.9,
# the plugin v0.1.0. See docs/deployment.md ("Docker").
# Build: docker compose build   (or: docker build -t caddy-apikey:0.1.0 .)

FROM golang:1.26.0-alpine3.23 AS builder
RUN go install github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5
WORKDIR /build
RUN xcaddy build v2.11.9 --with github.com/moodmnky/caddy-apikey@v0.1.0

FROM caddy:2.11.9-alpine
COPY --from=builder /build/caddy /usr/bin/caddy
# A user of its own, and the folders it writes: Caddy's data (/data:
# certificates, counters, usage) and config (/config: autosave), the logs
# (/var/log/caddy: access and audit logs) and the key file's folder
# (/etc/caddy/keys: the admin API and the portal replace the file there).
RUN apk add --no-cache libcap \
	&& setcap cap_net_bind_service=+ep /usr/bin/caddy \
	&& addgroup -S -g 1000 caddy \
	&& adduser -S -D -H -u 1000 -G caddy -h /data caddy \
	&& mkdir -p /data /config /var/log/caddy /etc/caddy/keys \
	&& chown caddy:caddy /data /config /var/log/caddy /etc/caddy/keys \
	&& chmod 0750 /etc/caddy/keys /var/log/caddy
ENV XDG_DATA_HOME=/data XDG_CONFIG_HOME=/config
USER caddy
VOLUME ["/data", "/config", "/var/log/caddy", "/etc/caddy/keys"]
EXPOSE 80 443 443/udp
CMD ["caddy", "run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]
