package discord_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatrelay/chatrelay/relay"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// receivedAt is when every test event was accepted.
var receivedAt = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// eventFile decodes testdata/name as an event of topic.
func eventFile(t testing.TB, name, topic string) *relay.Event {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return eventBody(t, body, topic)
}

// eventBody decodes body as an event of topic, with a fixed id and time.
func eventBody(t testing.TB, body []byte, topic string) *relay.Event {
	t.Helper()
	ev, err := relay.DecodeEvent(body)
	if err != nil {
		t.Fatal(err)
	}
	ev.ID, ev.Topic, ev.ReceivedAt = "01936f3a-0000-7000-8000-000000000001", topic, receivedAt
	return ev
}

// withID gives ev the n-th test event id.
func withID(ev *relay.Event, n int) *relay.Event {
	ev.ID = fmt.Sprintf("01936f3a-0000-7000-8000-%012d", n)
	return ev
}
