# syntax=docker/dockerfile:1
# Build: docker build -t modelgate .
# Run:   docker run --rm -p 8080:8080 -v $PWD/modelgate.yaml:/etc/modelgate/config.yaml:ro \
#          -e FRAUD_KEY=... modelgate

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=devel
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/gateway ./cmd/gateway

# distroless/static has CA certificates and tzdata, no shell, and runs as
# an unprivileged user.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/gateway /usr/local/bin/gateway
USER nonroot:nonroot
EXPOSE 8080 9090
ENV MODELGATE_CONFIG=/etc/modelgate/config.yaml
ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
