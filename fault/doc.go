// Package fault holds chatrelay's fault suite: tests that build the real
// chatrelay binary, run it against httptest fakes of Slack and webhook
// destinations, and try to break it (SIGKILL under load, sink outages,
// slow and broken sinks, a full store, hostile clients; on NATS, a real
// nats-server built from the module cache, killed, restarted and filled,
// and replicas killed and frozen). It has no code of its own outside its
// tests; run it with go test -run Fault ./fault/.
package fault
