package main

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/chatrelay/chatrelay/relay"
)

//go:embed samples/*.json
var samples embed.FS

func (a *app) sendTestCmd() *cobra.Command {
	var url, secret, topic, file, cacert string
	var insecure bool
	cmd := &cobra.Command{
		Use:   "send-test",
		Short: "Sign a sample Chat Data event (or a JSON file) as Chat Data does and POST it",
		Long: `send-test signs a sample event exactly as Chat Data does (base64 HMAC-SHA256 of the
raw body in x-chat-data-hmac-sha256, topic in x-chat-data-topic) and POSTs it.
It prints the HTTP status and the answer, and exits 0 on 2xx.

The sample gets a fresh conversation id each time, so it is never a duplicate;
a --file is sent byte for byte.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, cfgErr := a.loadConfigLenient()
			var serverName string
			if url == "" {
				url, serverName = localURL(cfg, "/webhook")
			}
			if secret == "" {
				s, err := defaultSecret(cfg)
				if err != nil {
					if cfgErr != nil {
						return configError(fmt.Errorf("%w\n(and no --secret given: %v)", cfgErr, err))
					}
					return configError(err)
				}
				secret = s
			}
			body, err := sampleBody(topic, file)
			if err != nil {
				return configError(err)
			}
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				return configError(fmt.Errorf("--url: %w", err))
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set(relay.HeaderTopic, topic)
			req.Header.Set(relay.HeaderSignature, relay.Sign(body, relay.Secret(secret)))
			req.Header.Set("User-Agent", userAgent())
			tlsConf, err := clientTLS(cacert, insecure)
			if err != nil {
				return configError(err)
			}
			tlsConf.ServerName = serverName
			if insecure {
				fmt.Fprintln(a.stderr, "send-test: --insecure: the server's certificate is not checked")
			}
			transport := http.DefaultTransport.(*http.Transport).Clone()
			transport.TLSClientConfig = tlsConf
			client := &http.Client{Timeout: 15 * time.Second, Transport: transport}
			defer client.CloseIdleConnections()
			resp, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("POST %s: %w %s", url, err, tlsHint(err))
			}
			defer relay.Drain(resp)
			answer, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			if err != nil {
				answer = fmt.Appendf(answer, " (the answer was cut short: %v)", err)
			}
			fmt.Fprintf(a.stdout, "HTTP %s\n%s\n", resp.Status, strings.TrimSpace(string(answer)))
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return &exitError{code: 1, err: fmt.Errorf("the relay answered %s", resp.Status)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "full endpoint (default http://<listen>/webhook from the config, else http://127.0.0.1:8080/webhook)")
	cmd.Flags().StringVar(&secret, "secret", "", "signing secret (default: the config's first signing secret, else the embedded-default secret in ./chatrelay-data)")
	cmd.Flags().StringVar(&topic, "topic", relay.TopicChat, "topic: chat, lead-submission, live-chat-escalation or any other")
	cmd.Flags().StringVar(&file, "file", "", "JSON file to send instead of the sample")
	cmd.Flags().StringVar(&cacert, "cacert", "", "PEM file of the certificate(s) to trust for an https --url (a self-signed certificate, a private CA) instead of the system's")
	cmd.Flags().BoolVar(&insecure, "insecure", false, "do not check the server's certificate (a quick local try only)")
	return cmd
}

// loadConfigLenient loads the config for client commands, which still work
// (with flags) when the config is missing or partly invalid.
func (a *app) loadConfigLenient() (*Config, error) {
	path, explicit := a.configPath, a.configPath != ""
	if !explicit {
		path = defaultConfigPath()
	}
	cfg, err := LoadConfig(path, explicit, a.getenv)
	if err != nil {
		return nil, configError(err)
	}
	return cfg, nil
}

// defaultSecret is the config's first signing secret, else the embedded
// default mode's generated one.
func defaultSecret(cfg *Config) (string, error) {
	dir := "./chatrelay-data"
	if cfg != nil {
		if len(cfg.SigningSecrets) > 0 {
			return cfg.SigningSecrets[0].Reveal(), nil
		}
		dir = cfg.Store.Bolt.Path
	}
	b, err := os.ReadFile(filepath.Join(dir, secretFileName))
	if err != nil {
		return "", fmt.Errorf("no signing secret: none in the config and none in %s (start chatrelay serve once, or pass --secret)",
			filepath.Join(dir, secretFileName))
	}
	return strings.TrimSpace(string(b)), nil
}

// sampleBody returns the body to send: the file's bytes, or a sample of
// the topic with a fresh conversation id.
func sampleBody(topic, file string) ([]byte, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("--file: %w", err)
		}
		return b, nil
	}
	name := "samples/chat.json"
	switch topic {
	case relay.TopicLead:
		name = "samples/lead-submission.json"
	case relay.TopicEscalation:
		name = "samples/live-chat-escalation.json"
	}
	raw, err := samples.ReadFile(name)
	if err != nil {
		return nil, err
	}
	// Keep the sample's bytes and key order; only the conversation id is new.
	out := conversationID.ReplaceAll(raw, []byte(`"conversation_id":"`+uuid.NewString()+`"`))
	if !json.Valid(out) {
		return nil, errors.New("embedded sample is not JSON")
	}
	return out, nil
}

var conversationID = regexp.MustCompile(`"conversation_id"\s*:\s*"[^"]*"`)
