package slack

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// What the sink keeps in its key/value store (relay.KV, namespaced to the
// sink):
//
//	thread:<conversation id>       {"channel":"C…","ts":"…"}  the conversation's thread (bot mode)
//	part:<destination>:<event id>  {"posted":2,"root":"…"}    how many messages of a multi-message turn are posted
//
// <destination> is the channel ID in bot mode, and in webhook mode
// "webhook-" and a hash of the webhook URL (never the URL: it is the
// credential), so that a turn resumed after the sink was pointed
// elsewhere starts from its first part there.
const (
	threadPrefix = "thread:"
	partPrefix   = "part:"
)

// threadRef is where a conversation's thread is.
type threadRef struct {
	Channel string `json:"channel"`
	TS      string `json:"ts"`
}

// progress is how far a turn that needs several messages got.
type progress struct {
	Posted int    `json:"posted"`         // messages posted, in order
	Root   string `json:"root,omitempty"` // ts of the turn's first message (bot mode)
}

// thread returns the ts of conv's thread in the sink's channel, or "". A
// thread in another channel (the config changed) does not count.
func (s *Sink) thread(ctx context.Context, conv string) (string, error) {
	v, ok, err := s.kv.Get(ctx, threadPrefix+conv)
	if err != nil || !ok {
		return "", err
	}
	var ref threadRef
	if err := json.Unmarshal([]byte(v), &ref); err != nil || ref.Channel != s.cfg.Channel {
		return "", nil
	}
	return ref.TS, nil
}

func (s *Sink) setThread(ctx context.Context, conv, ts string) error {
	v, _ := json.Marshal(threadRef{Channel: s.cfg.Channel, TS: ts})
	return s.record(ctx, threadPrefix+conv, string(v))
}

// progressKey is the key of an event's progress in this destination.
func (s *Sink) progressKey(eventID string) string {
	return partPrefix + s.dest + ":" + eventID
}

// destination names where the sink posts, for keys: the channel, or a
// hash of the webhook URL.
func destination(cfg Config) string {
	if cfg.WebhookURL.IsZero() {
		return cfg.Channel
	}
	sum := sha256.Sum256([]byte(cfg.WebhookURL.Reveal()))
	return "webhook-" + hex.EncodeToString(sum[:8])
}

func (s *Sink) progress(ctx context.Context, eventID string) (progress, error) {
	v, ok, err := s.kv.Get(ctx, s.progressKey(eventID))
	if err != nil || !ok {
		return progress{}, err
	}
	var p progress
	if err := json.Unmarshal([]byte(v), &p); err != nil || p.Posted < 0 {
		s.deps.Logger.Warn("unreadable progress record; posting the turn from its start", "event_id", eventID)
		return progress{}, nil
	}
	return p, nil
}

func (s *Sink) setProgress(ctx context.Context, eventID string, p progress) error {
	v, _ := json.Marshal(p)
	return s.record(ctx, s.progressKey(eventID), string(v))
}

// record writes what was just posted. It runs on a context that outlives
// the send's by recordTimeout: the message is out, so the record must be
// too, or a retry would post it again.
func (s *Sink) record(ctx context.Context, key, value string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if err := s.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("slack sink %q: posted, but could not record it (a retry may post it again): %w", s.cfg.Name, err)
	}
	return nil
}
