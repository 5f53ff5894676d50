package slack

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/socketmode"

	"github.com/chatrelay/chatrelay/relay"
)

// socketSource takes one two-way sink's events and clicks over Socket
// Mode (reply.app_token): slack-go's client opens the WebSocket with
// apps.connections.open and reconnects when Slack asks it to; this source
// owns the loop around it, and acknowledges each envelope only once the
// inbox has stored what it carries (unacknowledged, Slack sends it again).
type socketSource struct {
	sink *Sink
	in   *inbound
	deps relay.SourceDeps
}

func newSocketSource(s *Sink, deps relay.SourceDeps) *socketSource {
	return &socketSource{sink: s, deps: deps,
		in: &inbound{sinks: []*Sink{s}, inbox: deps.Inbox, log: deps.Logger.With("sink", s.Name())}}
}

func (*socketSource) Handlers() map[string]http.Handler { return nil }

// Reconnection backoff, after slack-go's client gave up a connection.
const (
	socketBackoffMin = time.Second
	socketBackoffMax = 5 * time.Minute
	// socketWarnEvery spaces the warnings while Socket Mode cannot connect
	// (slack-go retrying by itself): the first failure, then one each
	// socketWarnEvery while it lasts.
	socketWarnEvery = 5 * time.Minute
)

// Run connects, takes envelopes until ctx ends, and connects again when
// the client gives up (backing off). A token Slack refuses stops it with
// an error log: the sink still mirrors, and takes no replies until the
// config is fixed.
func (s *socketSource) Run(ctx context.Context) error {
	log := s.deps.Logger.With("sink", s.sink.Name())
	backoff := socketBackoffMin
	for {
		err := s.runOnce(ctx, log)
		if ctx.Err() != nil {
			return nil
		}
		if refused(err) {
			log.Error("Slack refuses reply.app_token for Socket Mode; agents' replies are not taken until it is fixed "+
				"(an app-level token with connections:write, Socket Mode switched on)", "err", s.sink.scrub.Error(err))
			<-ctx.Done()
			return nil
		}
		log.Warn("Socket Mode connection ended; connecting again", "err", s.sink.scrub.Error(err), "delay", backoff)
		t := s.deps.Clock.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.Chan():
		}
		backoff = min(2*backoff, socketBackoffMax)
	}
}

// refused reports whether err is Slack refusing the app-level token.
func refused(err error) bool {
	if err == nil {
		return false
	}
	switch err.Error() {
	case "invalid_auth", "account_inactive", "not_authed", "token_revoked", "not_allowed_token_type":
		return true
	}
	var sc slackapi.StatusCodeError
	return errors.As(err, &sc) && sc.Code == http.StatusNotFound
}

// runOnce runs one slack-go client until it returns, with the consumer of
// its events; both have stopped when it returns.
func (s *socketSource) runOnce(ctx context.Context, log *slog.Logger) error {
	api := slackapi.New(s.sink.cfg.Token.Reveal(),
		slackapi.OptionAppLevelToken(s.sink.cfg.Reply.AppToken.Reveal()),
		slackapi.OptionAPIURL(s.sink.apiURL),
		slackapi.OptionHTTPClient(s.sink.client))
	client := socketmode.New(api,
		socketmode.OptionDialer(&websocket.Dialer{HandshakeTimeout: 10 * time.Second, Proxy: http.ProxyFromEnvironment}),
		socketmode.OptionLog(slog.NewLogLogger(log.Handler(), slog.LevelDebug)))
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() { s.consume(runCtx, client, log, cancel) })
	err := client.RunContext(runCtx)
	cancel(nil)
	wg.Wait()
	if cause := context.Cause(runCtx); refused(cause) {
		return cause
	}
	return err
}

// connectFailed tells the operator that slack-go could not connect (it
// retries by itself, with its own backoff up to 5 minutes, and says so only
// in events): at the first failure, then once each socketWarnEvery while
// it lasts. A failure that is Slack refusing the token ends the run
// (stop), as a refusal when connected would.
func (s *socketSource) connectFailed(e *slackapi.ConnectionErrorEvent, log *slog.Logger, warned *time.Time, stop context.CancelCauseFunc) {
	if e == nil || e.ErrorObj == nil {
		return
	}
	if refused(e.ErrorObj) {
		stop(e.ErrorObj)
		return
	}
	now := s.deps.Clock.Now()
	if !warned.IsZero() && now.Sub(*warned) < socketWarnEvery {
		return
	}
	*warned = now
	log.Warn("Socket Mode cannot connect to Slack; retrying, and agents' replies wait until it does "+
		"(can the relay reach slack.com and wss-primary.slack.com?)",
		"err", s.sink.scrub.Error(e.ErrorObj), "attempt", e.Attempt, "next_in", e.Backoff)
}

// consume takes the client's events one at a time, in the order Slack
// sent them (two quick replies reach the visitor in order), and
// acknowledges each envelope once what it carries is stored.
func (s *socketSource) consume(ctx context.Context, client *socketmode.Client, log *slog.Logger, stop context.CancelCauseFunc) {
	var warned time.Time // the last warning that it cannot connect
	for {
		var evt socketmode.Event
		select {
		case <-ctx.Done():
			return
		case evt = <-client.Events:
		}
		switch evt.Type {
		case socketmode.EventTypeConnected:
			if !warned.IsZero() {
				log.Info("Socket Mode connected after all; taking agents' replies")
			} else {
				log.Info("Socket Mode connected; taking agents' replies")
			}
			warned = time.Time{}
		case socketmode.EventTypeConnectionError:
			e, _ := evt.Data.(*slackapi.ConnectionErrorEvent)
			s.connectFailed(e, log, &warned, stop)
		case socketmode.EventTypeEventsAPI, socketmode.EventTypeInteractive:
			if evt.Request == nil {
				continue
			}
			hctx, hcancel := context.WithTimeout(ctx, handleTimeout)
			var err error
			if evt.Type == socketmode.EventTypeEventsAPI {
				err = s.in.event(hctx, evt.Request.Payload)
			} else {
				err = s.in.interaction(hctx, evt.Request.Payload)
			}
			hcancel()
			if err != nil {
				// Not stored: no ack, so Slack sends it again.
				log.Warn("Slack envelope not stored; not acknowledged, so that Slack sends it again", "err", err,
					"retry_attempt", evt.Request.RetryAttempt)
				continue
			}
			if err := client.AckCtx(ctx, evt.Request.EnvelopeID, nil); err != nil && ctx.Err() == nil {
				log.Warn("could not acknowledge a Slack envelope; Slack sends it again and the relay takes it once", "err", err)
			}
		default:
			if evt.Request != nil && evt.Request.EnvelopeID != "" {
				// Slash commands and the like: nothing of the relay's.
				_ = client.AckCtx(ctx, evt.Request.EnvelopeID, nil)
			}
		}
	}
}
