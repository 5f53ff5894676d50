package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
)

// app holds what every command shares: the streams, the environment and
// the --config flag.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	configPath     string
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "chatrelay",
		Short: "Mirror Chat Data chatbot conversations into Slack, Discord and webhooks",
		Long: `chatrelay receives Chat Data webhook events, verifies their signature, stores them
durably, and delivers each to every configured sink (Slack, Discord, generic
webhooks, console) in conversation order, with retries, rate limits and a
dead-letter list.

Run "chatrelay serve" with no config file to try it on embedded defaults.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", "",
		"config file (default ./"+DefaultConfigFile+" if present, else embedded defaults)")
	root.AddCommand(a.serveCmd(), a.sendTestCmd(), a.checkConfigCmd(), a.dlqCmd(), a.versionCmd(), a.healthcheckCmd())
	return root
}

// loadConfig loads and validates the config named by --config.
func (a *app) loadConfig() (*Config, error) {
	cfg, err := a.loadConfigLenient()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, configError(fmt.Errorf("%s is not valid:\n%w", cfg.sourceName(), err))
	}
	return cfg, nil
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			bi := readBuildInfo()
			fmt.Fprintf(a.stdout, "chatrelay %s (commit %s, %s, %s/%s)\n", bi.Version, bi.Commit, bi.GoVersion, runtime.GOOS, runtime.GOARCH)
			return nil
		},
	}
}

// userAgent is what chatrelay sends to platforms.
func userAgent() string {
	return "chatrelay/" + readBuildInfo().Version + " (+https://github.com/chatrelay/chatrelay)"
}
