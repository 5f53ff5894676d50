package admin

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/chatrelay/chatrelay/relay"
)

// Ops are the admin API's reads and actions for the other front end on the
// admin listener, the web console: the same sink status, the same dead
// letter filters, and replay and purge with the same metrics and log lines,
// so that the console and the API (and with it the CLI) never disagree.
type Ops struct{ a *api }

// NewOps returns the operations of the API cfg configures.
func NewOps(cfg Config) *Ops {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Ops{a: &api{cfg: cfg}}
}

// Sinks returns every configured sink's status, in config order.
func (o *Ops) Sinks(ctx context.Context) ([]SinkView, error) { return o.a.sinkViews(ctx) }

// SinkNames are the configured sinks, in config order.
func (o *Ops) SinkNames() []string { return slices.Clone(o.a.cfg.Sinks) }

// FindDead returns a page of the dead letters f matches.
func (o *Ops) FindDead(ctx context.Context, f relay.DeadFilter, offset, limit int) (relay.DeadPage, error) {
	return o.a.cfg.Store.FindDead(ctx, f, offset, limit)
}

// ReplayMatching requeues every dead letter f matches (not only a page of
// them) and answers how many.
func (o *Ops) ReplayMatching(ctx context.Context, f relay.DeadFilter) (int, error) {
	ids, err := o.matchingIDs(ctx, f)
	if err != nil {
		return 0, err
	}
	return o.ReplayIDs(ctx, ids)
}

// PurgeMatching deletes every dead letter f matches and answers how many.
func (o *Ops) PurgeMatching(ctx context.Context, f relay.DeadFilter) (int, error) {
	ids, err := o.matchingIDs(ctx, f)
	if err != nil {
		return 0, err
	}
	return o.PurgeIDs(ctx, ids)
}

func (o *Ops) matchingIDs(ctx context.Context, f relay.DeadFilter) ([]string, error) {
	page, err := o.a.cfg.Store.FindDead(ctx, f, 0, 0)
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(page.DeadLetters))
	for i, dl := range page.DeadLetters {
		ids[i] = dl.ID
	}
	return ids, nil
}

// ReplayIDs requeues the dead letters with these ids, sink by sink, counting
// chatrelay_deliveries_total{result="replayed"}; ids that are no dead
// letter (any more) are skipped.
func (o *Ops) ReplayIDs(ctx context.Context, ids []string) (int, error) {
	bySink := map[string][]string{}
	var sinks []string
	for _, id := range ids {
		_, sink, _ := strings.Cut(id, ".")
		if _, seen := bySink[sink]; !seen {
			sinks = append(sinks, sink)
		}
		bySink[sink] = append(bySink[sink], id)
	}
	total := 0
	for _, sink := range sinks {
		n, err := o.a.cfg.Store.Requeue(ctx, bySink[sink])
		total += n
		if n > 0 && o.a.cfg.Metrics != nil && slices.Contains(o.a.cfg.Sinks, sink) {
			o.a.cfg.Metrics.Deliveries.WithLabelValues(sink, relay.ResultReplayed).Add(float64(n))
		}
		if err != nil {
			return total, fmt.Errorf("replay: %w", err)
		}
	}
	o.a.cfg.Logger.Info("dead letters replayed", "count", total)
	return total, nil
}

// PurgeIDs deletes the dead letters with these ids for good.
func (o *Ops) PurgeIDs(ctx context.Context, ids []string) (int, error) {
	n, err := o.a.cfg.Store.Purge(ctx, ids)
	if err != nil {
		return n, fmt.Errorf("purge: %w", err)
	}
	o.a.cfg.Logger.Info("dead letters purged", "count", n)
	return n, nil
}
