package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/chatrelay/chatrelay/sinks/slack"
)

func (a *app) slackManifestCmd() *cobra.Command {
	var (
		o      slack.ManifestOptions
		format string
	)
	cmd := &cobra.Command{
		Use:   "slack-manifest --url https://relay.example.com | --socket-mode",
		Short: "Print a Slack app manifest for two-way live chat, ready to paste at api.slack.com/apps",
		Long: `Prints the manifest of a Slack app that chatrelay can post with and that lets agents answer
visitors from the conversation's thread: the bot scopes (` + strings.Join(slack.ReplyScopes, ", ") + `),
the bot events (` + strings.Join(slack.ReplyBotEvents, ", ") + `), and the Events API and interactivity
request URL {url}` + slack.EventsPath + ` on the relay's public listener. With --socket-mode, events and
button clicks come over a WebSocket the relay opens instead: no public URL is needed.

Paste it at https://api.slack.com/apps → Create New App → From a manifest.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := slack.NewManifest(o)
			if err != nil {
				return usageError(cmd, fmt.Errorf("--%w", err))
			}
			var out []byte
			switch format {
			case "yaml":
				var b bytes.Buffer
				enc := yaml.NewEncoder(&b)
				enc.SetIndent(2)
				if err := enc.Encode(m); err != nil {
					return err
				}
				if err := enc.Close(); err != nil { // flushes the document's last line
					return err
				}
				out = b.Bytes()
			case "json":
				b, err := json.MarshalIndent(m, "", "  ")
				if err != nil {
					return err
				}
				out = append(b, '\n')
			default:
				return usageError(cmd, fmt.Errorf("--format %q: use yaml or json", format))
			}
			if _, err := a.stdout.Write(out); err != nil {
				return err
			}
			a.manifestNextSteps(o.SocketMode)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.URL, "url", "", "the relay's public https base URL; Slack posts to {url}"+slack.EventsPath)
	cmd.Flags().BoolVar(&o.SocketMode, "socket-mode", false, "events and clicks over Socket Mode (an app-level token, no public URL)")
	cmd.Flags().StringVar(&o.Name, "name", "chatrelay", "the app's and its bot's name in Slack")
	cmd.Flags().StringVar(&format, "format", "yaml", "yaml or json (Slack takes either)")
	return cmd
}

// manifestNextSteps tells, on stderr (stdout is the manifest alone, to
// pipe or paste), what to do with the app once it is created.
func (a *app) manifestNextSteps(socketMode bool) {
	fmt.Fprintln(a.stderr, `Next: at https://api.slack.com/apps → Create New App → From a manifest, paste the manifest, then
  1. Install to Workspace, and put the Bot User OAuth Token (xoxb-…) in the sink's token;
  2. invite the bot to the sink's channel (/invite @<bot name>);`)
	if socketMode {
		fmt.Fprintln(a.stderr, `  3. under Basic Information → App-Level Tokens, generate a token with the scope connections:write
     and put it (xapp-…) in the sink's reply.app_token.`)
		return
	}
	fmt.Fprintln(a.stderr, `  3. put Basic Information → Signing Secret in the sink's reply.signing_secret; Slack checks the request
     URL (a url_verification request) once the relay runs with it.`)
}
