# chatrelay container image: a static binary on an empty base, run as a
# non-root user, data in the /data volume.
#
#   docker build -t chatrelay --build-arg VERSION=1.2.3 --build-arg COMMIT=$(git rev-parse --short HEAD) .
#   docker run -p 8080:8080 -v chatrelay-data:/data \
#     -v $PWD/chatrelay.yaml:/etc/chatrelay/chatrelay.yaml:ro chatrelay
#
# Without a mounted config it runs on the embedded defaults (console sink,
# a generated signing secret), listening on 0.0.0.0:8080.

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
# Static: no cgo, so the image needs no C library.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT}" -o /out/chatrelay ./cmd/chatrelay \
 && mkdir -p /out/data /out/etc/chatrelay

FROM scratch
# Root certificates, for HTTPS to Slack, Discord, webhooks and the ACME CA.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/chatrelay /chatrelay
COPY --from=build --chown=65532:65532 /out/data /data
COPY --from=build /out/etc/chatrelay /etc/chatrelay
USER 65532:65532
# The config is read from /etc/chatrelay/chatrelay.yaml when mounted there;
# CHATRELAY_* variables override any key (see the README, "Running on a PaaS").
WORKDIR /etc/chatrelay
ENV CHATRELAY_LISTEN=0.0.0.0:8080 \
    CHATRELAY_STORE_PATH=/data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 CMD ["/chatrelay", "healthcheck"]
ENTRYPOINT ["/chatrelay"]
CMD ["serve"]
