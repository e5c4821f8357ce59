# syntax=docker/dockerfile:1
# The gateway image: `lqo serve` by default; the same image runs `lqo mock-upstream`, `lqo migrate`
# and the other subcommands. Build: docker build -t lqo:local .

# ---- build -------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# sqlx: never reach for a database at compile time; use the checked-in .sqlx data if there is any.
ENV SQLX_OFFLINE=true \
    CARGO_TERM_COLOR=never
COPY . .
# Cache mounts keep the registry and target dir between builds (BuildKit); the binary is copied out
# of the cached target dir because cache mounts are not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin lqo \
 && install -m 0755 target/release/lqo /usr/local/bin/lqo

# ---- runtime -----------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 lqo \
 && useradd --system --uid 10001 --gid lqo --home-dir /var/lib/lqo --create-home --shell /usr/sbin/nologin lqo
COPY --from=builder /usr/local/bin/lqo /usr/local/bin/lqo

# SQLite file (default database), spool and other state live under the working directory.
WORKDIR /var/lib/lqo
USER lqo:lqo
ENV APP_ENV=production \
    PORT=18000
EXPOSE 18000
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT:-18000}/health" >/dev/null || exit 1
ENTRYPOINT ["lqo"]
CMD ["serve"]
