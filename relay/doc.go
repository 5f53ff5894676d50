// Package relay is the platform-neutral heart of chatrelay: the Chat Data
// event model, the verifying receiver, the store contract (ack, nak with
// delay, term) and the per-sink dispatcher with its retry, pacing and
// dead-letter rules.
//
// relay knows no platform: Slack, Discord and generic webhooks live in
// sinks/..., which import relay and implement [Sink]. Stores live in
// relay/bolt (embedded) and relay/nats (JetStream) and implement [Store].
package relay
