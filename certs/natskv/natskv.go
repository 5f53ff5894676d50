// Package natskv keeps certmagic's certificates, keys, ACME account and
// locks in a NATS JetStream key/value bucket, so that chatrelay replicas
// sharing a NATS store also share their TLS certificates: one replica
// obtains or renews a certificate while the others wait on its lock, then
// load it; a challenge started by one replica is answered by whichever the
// CA reaches.
//
// Keys are certmagic paths ("certificates/<ca>/<domain>/<domain>.crt"),
// stored as "data." followed by the path's components, each escaped to
// the characters a key may hold ('.' separates components); locks are
// "lock.<escaped name>". A lock holds its owner and is refreshed every
// LockRefresh while held; a lock whose revision has not moved for
// LockStale (its holder died) is taken over. Staleness is measured on the
// waiter's own clock against revisions, so clock skew between replicas
// does not matter.
package natskv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure a Storage.
type Options struct {
	// Bucket is the key/value bucket (created if missing; default
	// CHATRELAY_CERTS).
	Bucket string
	// Replicas of the bucket (default 1; 3 on a NATS cluster).
	Replicas int
	// LockRefresh is how often a held lock is refreshed (default 5s);
	// LockStale how long a lock may go without a refresh before another
	// replica takes it over (default 6 × LockRefresh).
	LockRefresh, LockStale time.Duration
	Logger                 *slog.Logger
}

// Storage implements certmagic.Storage on a JetStream key/value bucket.
// Close releases its locks' refreshers.
type Storage struct {
	kv    jetstream.KeyValue
	opts  Options
	log   *slog.Logger
	owner string

	mu     sync.Mutex
	held   map[string]*heldLock // by lock key
	closed bool
	wg     sync.WaitGroup
}

var (
	_ certmagic.Storage = (*Storage)(nil)
	_ certmagic.Locker  = (*Storage)(nil)
)

type heldLock struct {
	stop  chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	value []byte
	rev   uint64 // the lock's current revision, ours
	lost  bool   // another replica took it over
}

// lockValue is what a lock holds: who holds it, for operators reading the
// bucket.
type lockValue struct {
	Owner string    `json:"owner"`
	Host  string    `json:"host,omitempty"`
	Since time.Time `json:"since"`
}

// New opens (creating if needed) the bucket.
func New(ctx context.Context, js jetstream.JetStream, opts Options) (*Storage, error) {
	if opts.Bucket == "" {
		opts.Bucket = "CHATRELAY_CERTS"
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.LockRefresh <= 0 {
		opts.LockRefresh = 5 * time.Second
	}
	if opts.LockStale <= 0 {
		opts.LockStale = 6 * opts.LockRefresh
	}
	if opts.LockStale <= opts.LockRefresh {
		return nil, fmt.Errorf("lock stale time %s must exceed the refresh %s", opts.LockStale, opts.LockRefresh)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      opts.Bucket,
		Description: "chatrelay TLS certificates, keys, ACME account and locks (certmagic)",
		History:     1,
		Replicas:    opts.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("certificate bucket %s: %w", opts.Bucket, err)
	}
	host, _ := os.Hostname()
	return &Storage{kv: kv, opts: opts, log: opts.Logger, held: map[string]*heldLock{},
		owner: host + "/" + uuid.NewString()}, nil
}

// String names the storage in certmagic's logs and keys.
func (s *Storage) String() string { return "nats-kv:" + s.opts.Bucket }

// dataKey turns a certmagic path into a bucket key.
func dataKey(path string) string {
	path = strings.Trim(path, "/")
	if path == "" {
		return "data"
	}
	parts := strings.Split(path, "/")
	for i, p := range parts {
		parts[i] = escape(p)
	}
	return "data." + strings.Join(parts, ".")
}

// pathOf is dataKey's inverse.
func pathOf(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, "data.")
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, ".")
	for i, p := range parts {
		d, ok := unescape(p)
		if !ok {
			return "", false
		}
		parts[i] = d
	}
	return strings.Join(parts, "/"), true
}

const hexDigits = "0123456789ABCDEF"

// escape keeps letters, digits, '-' and '_' and writes every other byte as
// =XX; an empty component is "=".
func escape(s string) string {
	if s == "" {
		return "="
	}
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('=')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func unescape(s string) (string, bool) {
	if s == "=" {
		return "", true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		hi, lo := strings.IndexByte(hexDigits, s[i+1]), strings.IndexByte(hexDigits, s[i+2])
		if hi < 0 || lo < 0 {
			return "", false
		}
		b.WriteByte(byte(hi<<4 | lo))
		i += 2
	}
	return b.String(), true
}

func lockKey(name string) string { return "lock." + escape(name) }

// Store implements certmagic.Storage.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	if _, err := s.kv.Put(ctx, dataKey(key), value); err != nil {
		return fmt.Errorf("%s: store %s: %w", s, key, err)
	}
	return nil
}

// Load implements certmagic.Storage.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	e, err := s.kv.Get(ctx, dataKey(key))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("%s: %s: %w", s, key, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: load %s: %w", s, key, err)
	}
	return e.Value(), nil
}

// Delete implements certmagic.Storage: the key, and every key under it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	keys, err := s.keysUnder(ctx, key)
	if err != nil {
		return err
	}
	if err := s.kv.Purge(ctx, dataKey(key)); err != nil {
		return fmt.Errorf("%s: delete %s: %w", s, key, err)
	}
	for _, k := range keys {
		if err := s.kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("%s: delete %s: %w", s, key, err)
		}
	}
	return nil
}

// keysUnder lists the bucket keys below path (not path itself).
func (s *Storage) keysUnder(ctx context.Context, path string) ([]string, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, dataKey(path)+".>")
	if err != nil {
		return nil, fmt.Errorf("%s: list %s: %w", s, path, err)
	}
	defer lister.Stop()
	var out []string
	for k := range lister.Keys() {
		out = append(out, k)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// Exists implements certmagic.Storage: a file, or a directory (a prefix
// of files).
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List implements certmagic.Storage. Without recursive it lists the
// entries directly under path (files and directories); with it, every
// file and directory below.
func (s *Storage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	keys, err := s.keysUnder(ctx, path)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: %s: %w", s, path, fs.ErrNotExist)
	}
	base := strings.Trim(path, "/")
	seen := map[string]bool{}
	var out []string
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, k := range keys {
		p, ok := pathOf(k)
		if !ok {
			continue
		}
		rel := strings.TrimPrefix(p, base+"/")
		if base == "" {
			rel = p
		}
		parts := strings.Split(rel, "/")
		if !recursive {
			add(join(base, parts[0]))
			continue
		}
		for i := range parts {
			add(join(base, strings.Join(parts[:i+1], "/")))
		}
	}
	return out, nil
}

func join(base, rel string) string {
	if base == "" {
		return rel
	}
	return base + "/" + rel
}

// Stat implements certmagic.Storage.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	e, err := s.kv.Get(ctx, dataKey(key))
	switch {
	case err == nil:
		return certmagic.KeyInfo{Key: key, Modified: e.Created(), Size: int64(len(e.Value())), IsTerminal: true}, nil
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return certmagic.KeyInfo{}, fmt.Errorf("%s: stat %s: %w", s, key, err)
	}
	keys, err := s.keysUnder(ctx, key)
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(keys) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("%s: %s: %w", s, key, fs.ErrNotExist)
	}
	return certmagic.KeyInfo{Key: key, IsTerminal: false}, nil
}

// Lock implements certmagic.Locker: it waits until the lock is free, or
// stale, or ctx ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	key := lockKey(name)
	value, err := json.Marshal(lockValue{Owner: s.owner, Host: strings.SplitN(s.owner, "/", 2)[0], Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	for {
		rev, err := s.kv.Create(ctx, key, value)
		if err == nil {
			return s.hold(key, value, rev)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%s: lock %s: %w", s, name, err)
		}
		rev, stale, err := s.waitForLock(ctx, key)
		if err != nil {
			return fmt.Errorf("%s: lock %s: %w", s, name, err)
		}
		if !stale {
			continue // released: try again
		}
		newRev, err := s.kv.Update(ctx, key, value, rev)
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue // refreshed or taken at the last moment
		}
		if err != nil {
			return fmt.Errorf("%s: lock %s: %w", s, name, err)
		}
		s.log.Warn("took over a TLS certificate lock whose holder stopped refreshing it", "lock", name)
		return s.hold(key, value, newRev)
	}
}

// waitForLock waits until the lock at key is released (stale false) or has
// not changed for LockStale (stale true, with the revision to take over).
func (s *Storage) waitForLock(ctx context.Context, key string) (rev uint64, stale bool, err error) {
	w, err := s.kv.Watch(ctx, key)
	if err != nil {
		return 0, false, err
	}
	defer func() { _ = w.Stop() }()
	timer := time.NewTimer(s.opts.LockStale)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return 0, false, ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return 0, false, errors.New("watch ended")
			}
			if e == nil {
				if rev == 0 {
					return 0, false, nil // released before the watch began
				}
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				return 0, false, nil // released
			}
			if e.Revision() != rev {
				rev = e.Revision()
				timer.Reset(s.opts.LockStale)
			}
		case <-timer.C:
			return rev, true, nil
		}
	}
}

// hold starts refreshing a lock just taken.
func (s *Storage) hold(key string, value []byte, rev uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("storage closed")
	}
	h := &heldLock{stop: make(chan struct{}), done: make(chan struct{}), value: value, rev: rev}
	s.held[key] = h
	s.wg.Add(1)
	go s.refresh(key, h)
	return nil
}

// refresh rewrites a held lock every LockRefresh (a new revision shows the
// waiters it is alive) until it is released.
func (s *Storage) refresh(key string, h *heldLock) {
	defer s.wg.Done()
	defer close(h.done)
	t := time.NewTicker(s.opts.LockRefresh)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.mu.Lock()
		rev := h.rev
		h.mu.Unlock()
		// A slow answer is still worth waiting for, up to half the time
		// before waiters would call the lock stale.
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.LockStale/2)
		newRev, err := s.kv.Update(ctx, key, h.value, rev)
		cancel()
		switch {
		case err == nil:
			h.mu.Lock()
			h.rev = newRev
			h.mu.Unlock()
		case errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists):
			s.log.Warn("a TLS certificate lock held here was taken over by another replica (this one stalled); "+
				"the work it guarded may be done twice", "lock", key)
			h.mu.Lock()
			h.lost = true
			h.mu.Unlock()
			return
		default:
			// NATS away for a moment: try again at the next tick.
			s.log.Debug("refreshing a TLS certificate lock", "lock", key, "err", err)
		}
	}
}

// Unlock implements certmagic.Locker.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	key := lockKey(name)
	s.mu.Lock()
	h, ok := s.held[key]
	delete(s.held, key)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%s: unlock %s: not held here", s, name)
	}
	close(h.stop)
	<-h.done
	h.mu.Lock()
	rev, lost := h.rev, h.lost
	h.mu.Unlock()
	if lost {
		return nil // another replica holds it now
	}
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev))
	if err != nil && !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("%s: unlock %s: %w", s, name, err)
	}
	return nil
}

// Close stops refreshing every held lock and releases them.
func (s *Storage) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	names := make([]string, 0, len(s.held))
	for k := range s.held {
		names = append(names, k)
	}
	s.mu.Unlock()
	var errs []error
	for _, k := range names {
		name, _ := unescape(strings.TrimPrefix(k, "lock."))
		errs = append(errs, s.Unlock(ctx, name))
	}
	s.wg.Wait()
	return errors.Join(errs...)
}
