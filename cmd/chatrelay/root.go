package main

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"

	"github.com/spf13/cobra"
)

// app holds what every command shares: the streams, the environment and
// the --config flag.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
	configPath     string
	// self is how a person runs this chatrelay again (see invocation);
	// empty: found out from the process.
	self string
}

// commandLine is the command line that runs this chatrelay with args and
// the same --config, for a person to paste.
func (a *app) commandLine(args ...string) string {
	self := a.self
	if self == "" {
		self = selfInvocation()
	}
	parts := []string{self}
	if a.configPath != "" {
		parts = append(parts, "--config", shellQuote(a.configPath))
	}
	return strings.Join(append(parts, args...), " ")
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "chatrelay",
		Short: "Mirror Chat Data chatbot conversations into Slack, Discord and webhooks",
		Long: `chatrelay receives Chat Data webhook events, verifies their signature, stores them
durably, and delivers each to every configured sink (Slack, Discord, generic
webhooks, console) in conversation order, with retries, rate limits and a
dead-letter list. With two-way live chat (the chatdata section and a bot-mode
sink's reply: section; README "Two-way live chat") agents answer visitors from
the conversation's Slack or Discord thread.

Run "chatrelay serve" with no config file to try it on embedded defaults.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Runnable, so that an unknown command is refused as a usage error
		// (strictUsage) instead of printing the help with exit 0.
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	root.PersistentFlags().StringVar(&a.configPath, "config", "",
		"config file (default ./"+strings.Join(DefaultConfigFiles, " or ./")+" if present, else embedded defaults)")
	root.AddCommand(a.serveCmd(), a.sendTestCmd(), a.checkConfigCmd(), a.dlqCmd(), a.statusCmd(), a.versionCmd(), a.healthcheckCmd(),
		a.slackManifestCmd())
	strictUsage(root)
	return root
}

// strictUsage makes every usage mistake an error with exit code 2: an
// unknown flag, a missing or extra argument, and an unknown subcommand
// (cobra would otherwise print the help of a command that only groups
// others, and exit 0).
func strictUsage(cmd *cobra.Command) {
	cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError(c, err) })
	args := cmd.Args
	if args == nil {
		args = cobra.NoArgs
	}
	cmd.Args = func(c *cobra.Command, a []string) error {
		if err := args(c, a); err != nil {
			return usageError(c, err)
		}
		return nil
	}
	if cmd.HasSubCommands() && cmd.Run == nil && cmd.RunE == nil {
		cmd.RunE = func(c *cobra.Command, _ []string) error {
			return usageError(c, errors.New("missing subcommand: one of "+strings.Join(subcommands(c), ", ")))
		}
	}
	for _, sub := range cmd.Commands() {
		strictUsage(sub)
	}
}

func subcommands(c *cobra.Command) []string {
	var out []string
	for _, sub := range c.Commands() {
		if sub.IsAvailableCommand() {
			out = append(out, sub.Name())
		}
	}
	return out
}

// loadConfig loads and validates the config named by --config: every
// problem at once, the sinks' own checks included.
func (a *app) loadConfig() (*Config, error) {
	cfg, err := a.loadConfigLenient()
	if err != nil {
		return nil, err
	}
	if err := cfg.Check(); err != nil {
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
