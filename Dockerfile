# syntax=docker/dockerfile:1
# impersonator's image: a static binary (no cgo, no libc) on distroless/static,
# run as a non-root user, `serve` as the entry point. Build:
#   docker build --build-arg VERSION=$(git describe --tags --always) --build-arg COMMIT=$(git rev-parse HEAD) -t impersonator .
# Mount the shared keys folder read-only at /keys and configure with the
# environment (README, "Configuration"). internal/deploytest builds and runs
# this file's stages without a container engine.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/impersonator/impersonator/internal/buildinfo.version=${VERSION} -X github.com/impersonator/impersonator/internal/buildinfo.commit=${COMMIT}" -o /out/usr/local/bin/impersonator ./cmd/impersonator && mkdir -p /out/keys && chmod 0700 /out/keys

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr/local/bin/impersonator /usr/local/bin/impersonator
COPY --from=build --chown=65532:65532 /out/keys /keys
USER 65532:65532
ENV IMPERSONATOR_LISTEN=0.0.0.0:8080 \
    IMPERSONATOR_KEYS_DIR=/keys \
    IMPERSONATOR_LOG_FORMAT=json
EXPOSE 8080
# Liveness only (/healthz): a Redis outage makes /readyz 503, and must not
# get the container restarted. No shell, no curl: the binary asks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/usr/local/bin/impersonator", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/impersonator", "serve"]
