package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/spf13/cobra"

	"github.com/chatrelay/chatrelay/relay"
)

func (a *app) checkConfigCmd() *cobra.Command {
	var probe bool
	cmd := &cobra.Command{
		Use:   "check-config",
		Short: "Validate the config; with --probe, check each sink's credentials without posting",
		Long: `Validates the config and prints what it would run; a config with problems exits 2
with one line per problem, each naming the key and the fix.

With --probe it also checks, without posting a message, each sink's credentials and,
for two-way live chat, what replies need: the chatdata section's API key (GET
/api/v2/current-plan), a Slack bot token's scopes (auth.test) and app-level token,
a Discord bot's permissions in the channel and its Message Content intent. Exit 1
if any of them fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := a.loadConfig()
			if err != nil {
				return err
			}
			sinks, err := buildSinks(cfg, sinkEnv{stdout: a.stdout, logger: slog.New(slog.DiscardHandler),
				clock: clockwork.NewRealClock(), store: probeKV{}})
			if err != nil {
				return configError(fmt.Errorf("%s is not valid:\n%w", cfg.sourceName(), err))
			}
			names := make([]string, len(sinks))
			for i, s := range sinks {
				names[i] = s.conf.Name + " (" + s.conf.Type + ")"
			}
			fmt.Fprintf(a.stdout, "%s: OK\n  listen %s, admin %s, store %s\n  sinks: %s\n  routes: %d\n",
				cfg.sourceName(), cfg.Listen, cfg.Admin.Listen, storeDescription(cfg), strings.Join(names, ", "), len(cfg.Routes))
			fmt.Fprintf(a.stdout, "  listener: %s\n", cfg.TLS.summary(time.Now(), cfg.Listen))
			if !probe {
				return nil
			}
			failed := 0
			for i, s := range sinks {
				// Named by its key in the file: the chatdata destination is
				// the chatdata section, not one of sinks.
				label := fmt.Sprintf("sinks[%d] %s", i, s.conf.Name)
				if s.conf.Type == TypeChatData {
					label = "chatdata"
				}
				p, ok := s.sink.(relay.Prober)
				if !ok {
					fmt.Fprintf(a.stdout, "  %s: nothing to probe without posting\n", label)
					continue
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
				err := p.Probe(ctx)
				cancel()
				if err != nil {
					failed++
					fmt.Fprintf(a.stdout, "  %s: FAILED: %v\n", label, err)
					continue
				}
				fmt.Fprintf(a.stdout, "  %s: credentials OK\n", label)
			}
			if failed > 0 {
				return &exitError{code: 1, err: fmt.Errorf("%d sink(s) failed the probe", failed)}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&probe, "probe", false, "check each sink's credentials (and the chatdata API key) against the platform without posting a message")
	return cmd
}
