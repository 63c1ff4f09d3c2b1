# syntax=docker/dockerfile:1
# Build: docker build -t modelgate .     (the version comes from git: the
#        build context includes .git; or pass --build-arg VERSION=v1.2.3)
# Run:   docker run --rm -p 8080:8080 -v $PWD/modelgate.yaml:/etc/modelgate/config.yaml:ro \
#          -e FRAUD_KEY=... modelgate
#
# Base images are pinned: an exact Go release, and distroless by digest
# (refresh both in a reviewed commit, never implicitly at build time).

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Empty: the binary reports "devel+<commit>" from the git metadata that
# -buildvcs embeds (gateway version).
ARG VERSION=
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=true \
      -ldflags "-s -w -X main.version=${VERSION}" -o /out/gateway ./cmd/gateway

# distroless/static has CA certificates and tzdata and no shell. Its nonroot
# user is 65532; USER is numeric so Kubernetes can verify runAsNonRoot.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639
COPY --from=build /out/gateway /usr/local/bin/gateway
USER 65532:65532
EXPOSE 8080 9090
ENV MODELGATE_CONFIG=/etc/modelgate/config.yaml
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
