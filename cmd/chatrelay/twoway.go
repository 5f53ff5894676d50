package main

import (
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/chatrelay/chatrelay/relay"
)

// twoWay returns the reply: section of each built sink that has one.
func twoWay(sinks []builtSink) map[string]relay.ReplyConfig {
	out := map[string]relay.ReplyConfig{}
	for _, s := range sinks {
		if tw, ok := s.sink.(relay.TwoWay); ok {
			if rc, on := tw.Replies(); on {
				out[s.sink.Name()] = rc
			}
		}
	}
	return out
}

// replyRules are the Inbox's rules: one per two-way sink.
func replyRules(tw map[string]relay.ReplyConfig) map[string]relay.ReplyRule {
	out := make(map[string]relay.ReplyRule, len(tw))
	for name, rc := range tw {
		out[name] = rc.Rule()
	}
	return out
}

// buildSources builds the sources of each sink type that has some, from
// its built sinks, in the order the types first appear in the config.
func buildSources(sinks []builtSink, deps relay.SourceDeps) ([]relay.Source, error) {
	types := sinkTypes()
	var order []string
	byType := map[string][]relay.Sink{}
	for _, s := range sinks {
		if _, ok := types[s.conf.Type]; !ok {
			continue // the chatdata destination
		}
		if !slices.Contains(order, s.conf.Type) {
			order = append(order, s.conf.Type)
		}
		byType[s.conf.Type] = append(byType[s.conf.Type], s.sink)
	}
	var out []relay.Source
	var errs []error
	for _, typ := range order {
		build := types[typ].sources
		if build == nil {
			continue
		}
		d := deps
		d.Logger = deps.Logger.With("component", typ+"-source")
		srcs, err := build(byType[typ], d)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", typ, err))
			continue
		}
		out = append(out, srcs...)
	}
	return out, errors.Join(errs...)
}

// publicHandler is the public listener's handler: the receiver, and what
// the sources serve beside it (POST /slack/events).
func publicHandler(receiver http.Handler, sources []relay.Source) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("/", receiver)
	seen := map[string]bool{}
	for _, src := range sources {
		for pattern, h := range src.Handlers() {
			if seen[pattern] {
				return nil, fmt.Errorf("two sources serve %s", pattern)
			}
			seen[pattern] = true
			mux.Handle(pattern, h)
		}
	}
	if len(seen) == 0 {
		return receiver, nil
	}
	return mux, nil
}
