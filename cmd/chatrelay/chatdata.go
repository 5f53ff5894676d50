package main

import (
	"fmt"

	"github.com/chatrelay/chatrelay/relay"
	"github.com/chatrelay/chatrelay/sinks/chatdata"
)

// TypeChatData is the kind of the chatdata destination, in logs and in
// check-config's list. It is not a sink type: the destination is
// configured by the top-level chatdata section, not under sinks.
const TypeChatData = "chatdata"

// chatDataSet reports whether the chatdata section is set: then agent
// replies are delivered to Chat Data.
func chatDataSet(c chatdata.Config) bool {
	return !c.APIKey.IsZero() || c.APIURL != "" || c.Timeout != 0
}

// validateChatData checks the chatdata section and the name it reserves.
func (c *Config) validateChatData() []error {
	var errs []error
	for i, s := range c.Sinks {
		if s.Name == chatdata.Name {
			errs = append(errs, problem{key: fmt.Sprintf("sinks[%d].name", i),
				msg: fmt.Sprintf("%q is the name of the Chat Data destination of agent replies (the chatdata section); give this sink another name", chatdata.Name)})
		}
	}
	for i, r := range c.Routes {
		for j, s := range r.Sinks {
			if s == chatdata.Name {
				errs = append(errs, problem{key: fmt.Sprintf("routes[%d].sinks[%d]", i, j),
					msg: "chatdata takes agent replies, and every one goes to it without a route; remove it from the route"})
			}
		}
	}
	if !chatDataSet(c.ChatData) {
		// Agents' replies have nowhere to go: say so on each sink that
		// takes them.
		for i, s := range c.Sinks {
			if tw, ok := s.Spec.(relay.TwoWay); ok {
				if _, on := tw.Replies(); on {
					errs = append(errs, problem{key: fmt.Sprintf("sinks[%d].reply", i),
						msg: "two-way live chat needs the chatdata section: agents' replies reach the visitor through Chat Data's " +
							"live-chat API; add chatdata: {api_key: ${CHAT_DATA_API_KEY}}, or remove reply to only mirror"})
				}
			}
		}
		return errs
	}
	return append(errs, under("chatdata.", c.ChatData.Validate())...)
}

// buildChatData builds the chatdata destination when the section is set
// (nil when it is not).
func buildChatData(cfg *Config, env sinkEnv) (*builtSink, error) {
	if !chatDataSet(cfg.ChatData) {
		return nil, nil
	}
	logger := env.logger.With("sink", chatdata.Name, "kind", TypeChatData)
	const concurrency = 4
	deps := relay.SinkDeps{Logger: logger, KV: env.store.KV(chatdata.Name), Clock: env.clock,
		UserAgent: userAgent(), Transport: newTransport(concurrency)}
	s, err := chatdata.New(cfg.ChatData, deps)
	if err != nil {
		return nil, joinProblems(under("chatdata.", err))
	}
	return &builtSink{sink: s, conf: SinkConfig{Name: chatdata.Name, Type: TypeChatData},
		concurrency: concurrency, logger: logger}, nil
}

// replyDestinations are the router's destinations of agent replies.
func replyDestinations(cfg *Config) []relay.RouterOption {
	if !chatDataSet(cfg.ChatData) {
		return nil
	}
	return []relay.RouterOption{relay.ReplyDestinations(chatdata.Name)}
}
