package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/chatrelay/chatrelay/relay"
)

// healthcheckCmd asks the relay on this machine whether it is ready: a
// container image has no curl, so its HEALTHCHECK runs the binary itself.
func (a *app) healthcheckCmd() *cobra.Command {
	var url, cacert string
	var insecure bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Exit 0 if the relay on this machine answers GET /readyz with 200 (for a container HEALTHCHECK)",
		Long: `healthcheck GETs /readyz on the listen address of the config (https when tls is set)
and exits 0 when the relay answers 200, 1 otherwise, printing why.

On its default URL (this machine's own relay) the certificate is not checked:
the question is whether the process is ready, not whether the certificate is
valid for 127.0.0.1. With --url it is checked (--cacert, --insecure as for send-test).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _ := a.loadConfigLenient() // flags and defaults still work without a valid config
			local := url == ""
			if local {
				url, _ = localURL(cfg, "/readyz")
			}
			tlsConf, err := clientTLS(cacert, insecure || local)
			if err != nil {
				return configError(err)
			}
			transport := http.DefaultTransport.(*http.Transport).Clone()
			transport.TLSClientConfig = tlsConf
			transport.DisableKeepAlives = true
			client := &http.Client{Timeout: timeout, Transport: transport}
			resp, err := client.Get(url)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("not ready: GET %s: %w", url, err)}
			}
			defer relay.Drain(resp)
			body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
			answer := strings.TrimSpace(string(body))
			if err != nil {
				answer += " (the answer was cut short)"
			}
			if resp.StatusCode != http.StatusOK {
				return &exitError{code: 1, err: fmt.Errorf("not ready: %s answered %s %s", url, resp.Status, answer)}
			}
			fmt.Fprintf(a.stdout, "ready: %s %s\n", url, answer)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "URL to ask (default http(s)://<listen>/readyz from the config)")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Second, "give up after this long")
	cmd.Flags().StringVar(&cacert, "cacert", "", "PEM file of the certificate(s) to trust for an https --url")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "do not check the certificate of an https --url")
	return cmd
}
