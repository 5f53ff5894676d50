// Command bare is the baseline for ingest benchmarks: chatrelay's own
// receiver (verify the signature, parse the JSON, answer 200) with a store
// that keeps nothing, so the numbers show what durability costs.
//
//	go run ./bench/bare -listen 127.0.0.1:8090 -secret S
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/chatrelay/chatrelay/relay"
)

// nothing accepts every event and keeps none.
type nothing struct{}

func (nothing) Append(_ context.Context, ev *relay.Event, _ []string) (relay.Accepted, error) {
	return relay.Accepted{ID: ev.ID}, nil
}
func (nothing) Ready(context.Context) error { return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:8090", "address")
	secret := flag.String("secret", "", "signing secret")
	flag.Parse()
	r, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: []relay.Secret{relay.Secret(*secret)}, Store: nothing{},
		Router: relay.NewRouter([]string{"none"}, nil), Metrics: relay.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(2)
	}
	srv := &http.Server{Addr: *listen, Handler: r, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	fmt.Fprintln(os.Stderr, "bare receiver on", *listen)
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "bare:", err)
		os.Exit(1)
	}
}
