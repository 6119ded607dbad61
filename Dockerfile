# syntax=docker/dockerfile:1
# The same image as `make image` (tools/mkimage), for hosts with Docker:
#   docker build -t berth .
#   docker run -p 5000:5000 -v "$PWD/htpasswd:/etc/berth/htpasswd:ro" -v berth-data:/var/lib/berth \
#     berth serve --addr 0.0.0.0:5000 --htpasswd /etc/berth/htpasswd
# (plain `serve` listens on 127.0.0.1 only, which a container port cannot reach).
# A static binary on distroless/static: CA roots, /etc/passwd with the
# nonroot user 65532, /tmp; no shell, no libc.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w" -o /out/berth ./cmd/berth
# The working directory must be writable by uid 65532: `berth serve` without a
# config keeps its data in ./berth-data.
RUN install -d -o 65532 -g 65532 /out/var/lib/berth

FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.title="berth" \
      org.opencontainers.image.description="berth: a self-maintaining private container registry" \
      org.opencontainers.image.source="https://github.com/berth-registry/berth"
COPY --from=build /out/berth /berth
COPY --from=build --chown=65532:65532 /out/var/lib/berth /var/lib/berth
USER 65532:65532
WORKDIR /var/lib/berth
EXPOSE 5000 5001
ENTRYPOINT ["/berth"]
CMD ["serve"]
