# syntax=docker/dockerfile:1
# The secctx image: three static binaries (secctx, secctx-agent and
# secctx-fetch) on distroless, as user 65532, no shell.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/root/go/pkg/mod go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
ARG VERSION=dev
ARG COMMIT=
ARG DATE=
RUN --mount=type=cache,target=/root/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/secctx/secctx/pkg/version.Version=${VERSION} -X github.com/secctx/secctx/pkg/version.Commit=${COMMIT} -X github.com/secctx/secctx/pkg/version.Date=${DATE}" \
      -o /out/secctx ./cmd/webhook && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/secctx-agent ./cmd/agent && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/secctx-fetch ./cmd/fetch

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/secctx /secctx
# The in-pod agent (token sidecar, exec wrapper, installer): small, so that
# task pods run and copy about 12 MB, not the webhook's 35 MB.
COPY --from=build /out/secctx-agent /secctx-agent
# The fetch init container's binary: the agent's fetch with every store,
# Google Secret Manager's gRPC client included, which the agent leaves out
# so that token sidecars stay small.
COPY --from=build /out/secctx-fetch /secctx-fetch
USER 65532:65532
ENTRYPOINT ["/secctx"]
CMD ["serve"]
