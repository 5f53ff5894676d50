package main

import (
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
func adminHandler(cfg admin.Config, store relay.Store, clock clockwork.Clock, logger *slog.Logger) (http.Handler, *console.Console, error) {
	con, err := console.New(console.Config{
		Store: store, Ops: admin.NewOps(cfg), Token: cfg.Token, Gatherer: cfg.Gatherer,
		Scrub: cfg.Scrub.Scrub, Version: readBuildInfo().Version,
		Logger: logger.With("component", "console"), Clock: clock,
	})
	if err != nil {
		return nil, nil, err
	}
	cfg.Console = con.Handler()
	return admin.Handler(cfg), con, nil
}
