package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/jonboulle/clockwork"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/relay/admin"
	"github.com/chatrelay/chatrelay/relay/console"
)

// adminHandler is the admin listener's handler: the API, metrics and the
// web console (SPEC §11), which acts through the API's own operations.
// The console's Run keeps its live figures.
func adminHandler(cfg admin.Config, store relay.Store, states *relay.Conversations, clock clockwork.Clock,
	logger *slog.Logger) (http.Handler, *console.Console, error) {
	con, err := console.New(console.Config{
		Store: store, Ops: admin.NewOps(cfg), Token: cfg.Token, Gatherer: cfg.Gatherer, States: consoleStates{states},
		Scrub: cfg.Scrub.Scrub, Version: readBuildInfo().Version,
		Logger: logger.With("component", "console"), Clock: clock,
	})
	if err != nil {
		return nil, nil, err
	}
	cfg.Console = con.Handler()
	return admin.Handler(cfg), con, nil
}

// consoleStates shows the conversations' claim and resolve state (two-way
// live chat) in the console.
type consoleStates struct{ c *relay.Conversations }

func (s consoleStates) ConversationState(ctx context.Context, id string) (console.ConversationState, bool, error) {
	st, ok, err := s.c.State(ctx, id)
	if err != nil || !ok {
		return console.ConversationState{}, false, err
	}
	return console.ConversationState{
		ClaimedBy: st.ClaimedBy, ClaimedAt: st.ClaimedAt, ResolvedBy: st.ResolvedBy, ResolvedAt: st.ResolvedAt,
		EscalatedAt: st.EscalatedAt, RepagedAt: st.RepagedAt,
	}, true, nil
}
