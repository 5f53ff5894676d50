package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/certs/certstest"
	"github.com/chatrelay/chatrelay/relay/relaytest"
)

// TestServeHTTPSWithACME runs serve with tls.acme against pebble, which
// validates TLS-ALPN-01 on serve's own listener: the certificate is
// obtained, kept in the data directory (bolt) or in a NATS bucket (nats),
// and healthcheck and send-test work against it.
func TestServeHTTPSWithACME(t *testing.T) {
	t.Parallel()
	// One after the other: certmagic keeps the challenges it is solving
	// in process-wide memory, by domain name, and both use localhost (the
	// one name pebble's validation resolves to this machine).
	for _, driver := range []string{"bolt", "nats"} {
		t.Run(driver, func(t *testing.T) {
			dir := t.TempDir()
			listen := freeAddr(t)
			port := listen[strings.LastIndexByte(listen, ':')+1:]
			var portN int
			fmt.Sscan(port, &portN)
			p := certstest.StartPebble(t, certstest.PebbleOptions{TLSPort: portN, HTTPPort: certstest.FreePort(t)})
			caRoot := filepath.Join(dir, "pebble-https.pem")
			if err := os.WriteFile(caRoot, p.RootPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			store := fmt.Sprintf("{path: %s}", filepath.Join(dir, "data"))
			var natsURL string
			if driver == "nats" {
				ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true,
					StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
				if err != nil {
					t.Fatal(err)
				}
				ns.Start()
				t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
				if !ns.ReadyForConnections(10 * time.Second) {
					t.Fatal("nats not ready")
				}
				natsURL = ns.ClientURL()
				store = fmt.Sprintf("{driver: nats, nats: {url: %q, partitions: 2}}", natsURL)
			}
			hook := newHookReceiver(t, 0)
			cfgPath := writeConfig(t, fmt.Sprintf(`
listen: %s
admin: {listen: %s}
signing_secrets: [acme-signing-secret]
log: {level: info, format: json}
store: %s
tls:
  acme:
    domains: [localhost]
    email: ops@chatrelay.test
    ca: %s
    ca_root: %s
sinks:
  - {name: crm, type: webhook, url: %s/in}
`, listen, freeAddr(t), store, p.DirURL, caRoot, hook.srv.URL))

			var out, errOut bytes.Buffer
			if code := run(t.Context(), []string{"check-config", "--config", cfgPath}, nil, &out, &errOut, os.Getenv); code != 0 ||
				!strings.Contains(out.String(), "listener: HTTPS with ACME: localhost from "+p.DirURL) {
				t.Fatalf("check-config: exit %d\n%s%s", code, out.String(), errOut.String())
			}

			ctx, cancel := context.WithCancel(t.Context())
			var stdout, stderr relaytest.LogBuffer
			done := make(chan int, 1)
			go func() { done <- run(ctx, []string{"serve", "--config", cfgPath}, nil, &stdout, &stderr, os.Getenv) }()
			defer func() {
				cancel()
				if code := <-done; code != 0 {
					t.Errorf("serve exit %d:\n%s", code, stderr.String())
				}
			}()

			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: p.Issuers}, DisableKeepAlives: true}}
			relaytest.Eventually(t, 45*time.Second, "a certificate from the ACME server", func() bool {
				resp, err := client.Get("https://localhost:" + port + "/healthz")
				if err != nil {
					return false
				}
				resp.Body.Close()
				return resp.StatusCode == 200
			})

			issuerFile := filepath.Join(dir, "pebble-issuer.pem")
			if err := os.WriteFile(issuerFile, p.IssuerPEM, 0o600); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"send-test", "--url", "https://localhost:" + port + "/webhook", "--cacert", issuerFile},
				{"send-test", "--cacert", issuerFile}, // https://127.0.0.1:port, checked as localhost
				{"healthcheck"},
			} {
				out.Reset()
				errOut.Reset()
				if code := run(t.Context(), append(args, "--config", cfgPath), nil, &out, &errOut, os.Getenv); code != 0 {
					t.Errorf("%v: exit %d\n%s%s", args, code, out.String(), errOut.String())
				}
			}
			if !strings.Contains(out.String(), "ready: https://127.0.0.1:"+port+"/readyz") {
				t.Errorf("healthcheck printed %q", out.String())
			}
			<-hook.got
			<-hook.got

			switch driver {
			case "bolt":
				matches, _ := filepath.Glob(filepath.Join(dir, "data", "acme", "certificates", "*", "localhost", "localhost.crt"))
				if len(matches) != 1 {
					t.Errorf("no certificate in the data directory's acme/")
				}
			case "nats":
				nc, err := natsgo.Connect(natsURL)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				js, _ := jetstream.New(nc)
				kv, err := js.KeyValue(t.Context(), "CHATRELAY_CERTS")
				if err != nil {
					t.Fatal(err)
				}
				keys, _ := kv.Keys(t.Context())
				found := false
				for _, k := range keys {
					found = found || strings.HasSuffix(k, ".localhost.localhost=2Ecrt")
				}
				if !found {
					t.Errorf("no certificate in the NATS bucket: %v", keys)
				}
			}
			logs := stderr.String()
			for _, want := range []string{`"msg":"HTTPS with ACME"`, `"msg":"TLS certificate obtained"`} {
				if !strings.Contains(logs, want) {
					t.Errorf("log lacks %s:\n%s", want, logs)
				}
			}
		})
	}
}
