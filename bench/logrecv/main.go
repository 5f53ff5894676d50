// Command logrecv is the second baseline for ingest benchmarks: the limit
// of durable ingest on this disk. It is chatrelay's own receiver (verify
// the signature, parse the JSON) whose store appends each body as a framed
// record (length, CRC-32C, bytes) to one log file and answers once the
// record is synced: one writer goroutine writes whatever requests are
// waiting as one group and syncs it with one fdatasync, while the next
// group gathers. Nothing is indexed, delivered or ever read back.
//
//	go run ./bench/logrecv -listen 127.0.0.1:8093 -secret S -dir /tmp/logrecv
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/chatrelay/chatrelay/relay"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// write is one record on its way to the log; done gets the outcome.
type write struct {
	rec  []byte
	done chan error
}

// logStore is a relay.Appender on an append-only file with group commit.
type logStore struct {
	f      *os.File
	writes chan write
}

func (l *logStore) Append(ctx context.Context, ev *relay.Event, _ []string) (relay.Accepted, error) {
	rec := make([]byte, 8, 8+len(ev.Body))
	binary.LittleEndian.PutUint32(rec, uint32(len(ev.Body)))
	binary.LittleEndian.PutUint32(rec[4:], crc32.Checksum(ev.Body, castagnoli))
	rec = append(rec, ev.Body...)
	w := write{rec: rec, done: make(chan error, 1)}
	select {
	case l.writes <- w:
	case <-ctx.Done():
		return relay.Accepted{}, ctx.Err()
	}
	select {
	case err := <-w.done:
		if err != nil {
			return relay.Accepted{}, fmt.Errorf("%w: %w", relay.ErrUnavailable, err)
		}
		return relay.Accepted{ID: ev.ID}, nil
	case <-ctx.Done():
		return relay.Accepted{}, ctx.Err()
	}
}

func (l *logStore) Ready(context.Context) error { return nil }

// run is the one writer: it takes the waiting writes as a group, writes
// them with one write and one fdatasync, answers them, and starts over.
func (l *logStore) run(ctx context.Context) error {
	var buf []byte
	group := make([]write, 0, 1024)
	for {
		select {
		case w := <-l.writes:
			group = append(group[:0], w)
		case <-ctx.Done():
			for {
				select {
				case w := <-l.writes:
					w.done <- relay.ErrClosed
				default:
					return nil
				}
			}
		}
	gather:
		for len(group) < cap(group) {
			select {
			case w := <-l.writes:
				group = append(group, w)
			default:
				break gather
			}
		}
		buf = buf[:0]
		for _, w := range group {
			buf = append(buf, w.rec...)
		}
		_, err := l.f.Write(buf)
		if err == nil {
			err = syscall.Fdatasync(int(l.f.Fd()))
		}
		for _, w := range group {
			w.done <- err
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8093", "address")
	secret := flag.String("secret", "", "signing secret")
	dir := flag.String("dir", "", "directory of the log file (required)")
	flag.Parse()
	if err := serve(*listen, *secret, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "logrecv:", err)
		os.Exit(1)
	}
}

func serve(listen, secret, dir string) error {
	if dir == "" {
		return errors.New("-dir is required")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(filepath.Join(dir, "intake.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	store := &logStore{f: f, writes: make(chan write, 4096)}
	r, err := relay.NewReceiver(relay.ReceiverConfig{
		Secrets: []relay.Secret{relay.Secret(secret)}, Store: store,
		Router: relay.NewRouter([]string{"none"}, nil), Metrics: relay.NewMetrics(prometheus.NewRegistry()),
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	srv := &http.Server{Addr: listen, Handler: r, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 2 * time.Minute}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return store.run(ctx) })
	g.Go(func() error {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	})
	g.Go(func() error {
		fmt.Fprintln(os.Stderr, "log receiver on", listen)
		if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return g.Wait()
}
