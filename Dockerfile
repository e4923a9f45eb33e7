# Container image of the KPI service: a release build on the official Rust
# image, copied into a slim Debian runtime that runs as an unprivileged user.
#
#   docker build -t kpi-service .
#   docker run -p 8000:8000 -v kpi-data:/data kpi-service

# The toolchain CI builds with. Any release from the crate's rust-version
# (1.85) on should work; the bookworm builder matches the runtime's glibc.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# Compile the dependencies against placeholder sources, so that this layer is
# rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin kpi-service \
    && rm -rf src

# sqlx::migrate! embeds migrations/ and askama embeds templates/ into the
# binary at compile time, so the runtime image needs neither. examples/ is
# copied so that the crate's layout matches the repository, though only the
# binary is built.
COPY src ./src
COPY migrations ./migrations
COPY templates ./templates
COPY examples ./examples
# COPY keeps the files' modification times, which can be older than the
# placeholder build. Cargo would then take the placeholder crate as up to
# date, so the crate roots are touched to force a rebuild.
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin kpi-service

FROM debian:bookworm-slim AS runtime

# curl runs the HEALTHCHECK, because the slim image has neither curl nor
# wget. Versions are not pinned, because a pinned Debian version stops
# installing once the archive replaces it.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid, so that a bind-mounted data directory can be
# prepared on the host with chown 10001:10001.
RUN groupadd --system --gid 10001 kpi \
    && useradd --system --uid 10001 --gid kpi --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin kpi \
    && install -d -o kpi -g kpi -m 0750 /data

COPY --from=builder /build/target/release/kpi-service /usr/local/bin/kpi-service

# Without DATABASE_URL the service keeps its SQLite file, kpi-service.db, in
# the working directory. Mount a volume on /data to keep it across containers.
WORKDIR /data
USER 10001:10001

# The service reads HOST and PORT itself. Platforms such as Railway set PORT.
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000

# The check calls /health, which does not touch the database, so a database
# outage does not mark the container unhealthy; /health/ready is the probe
# for that. The shell expands PORT when the check runs, and `exit 1` turns
# any curl failure into the status Docker reads as unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/bin/sh", "-c", "curl --fail --silent --show-error --max-time 4 --output /dev/null \"http://127.0.0.1:${PORT}/health\" || exit 1"]

ENTRYPOINT ["/usr/local/bin/kpi-service"]
CMD ["serve"]
