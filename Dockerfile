# syntax=docker/dockerfile:1
#
# Switchboard in a container: one binary, configured through SWITCHBOARD_* variables.
#
#   docker build -t switchboard .
#   docker run --rm \
#     -p 7880:7880/tcp -p 7882:7882/udp -p 7881:7881/tcp \
#     -e SWITCHBOARD_NODE_IPS=203.0.113.10 \
#     -e SWITCHBOARD_KEYS="prod:$(openssl rand -hex 32)" \
#     -v switchboard-data:/data \
#     switchboard
#
# SWITCHBOARD_NODE_IPS is the address browsers send media to (this host's IP). It is required
# because the container listens on 0.0.0.0. Publish UDP ports under the same numbers on the
# host: clients are told the container's port. Worker i listens on 7882 + i, so if you raise
# SWITCHBOARD_RTC_WORKERS, publish 7882 to 7882+workers-1 (or use --network host). TCP 7881
# is ICE-TCP, for clients whose network drops UDP. docs/deployment.md has the checklist.
# See docs/configuration.md for every setting.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# aws-lc-sys (the crypto backend) compiles C with the image's gcc. SQLite is bundled, and
# there is no OpenSSL.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchboard \
    && install -m 0755 target/release/switchboard /usr/local/bin/switchboard

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 switchboard \
    && useradd --system --uid 10001 --gid switchboard --home-dir /data --shell /usr/sbin/nologin switchboard \
    && mkdir -p /data \
    && chown switchboard:switchboard /data
COPY --from=build /usr/local/bin/switchboard /usr/local/bin/switchboard

# Listen on every interface inside the container. rtc.ip follows http_addr, so media binds
# 0.0.0.0 too and SWITCHBOARD_NODE_IPS must be set at run time. One media worker means one
# UDP port (7882), matching EXPOSE. Records go to /data/switchboard.db unless
# SWITCHBOARD_DATABASE_URL points at PostgreSQL. API keys come from SWITCHBOARD_KEYS or
# SWITCHBOARD_API_KEY/SWITCHBOARD_API_SECRET; without them the server refuses to start.
ENV SWITCHBOARD_HTTP_ADDR=0.0.0.0:7880 \
    SWITCHBOARD_RTC_PORT=7882 \
    SWITCHBOARD_RTC_WORKERS=1 \
    SWITCHBOARD_DATA_DIR=/data

USER switchboard
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7880/tcp 7881/tcp 7882/udp
# SIGTERM (docker stop) is handled: participants are told to leave, then the server exits.
ENTRYPOINT ["/usr/local/bin/switchboard"]
CMD ["serve"]
