package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chatrelay/chatrelay/relay"
)

// Options configure a Store. Only URL is required. Config gives those that
// chatrelay's config sets.
type Options struct {
	// URL is the NATS server, or several separated by commas
	// (store.nats.url). Credentials in it are never logged.
	URL string
	// CredsFile is a NATS .creds file (store.nats.creds_file).
	CredsFile string
	// Token is a NATS auth token (store.nats.token).
	Token relay.Secret
	// TLS (store.nats.tls). Zero: plain, or whatever the URL's scheme says.
	TLS TLS
	// Name prefixes every stream, consumer, bucket and subject, so several
	// chatrelay deployments can share one NATS account (default CHATRELAY:
	// streams CHATRELAY_EVENTS, …, subjects chatrelay.>).
	Name string
	// Replicas of every stream and bucket (store.nats.replicas; default 1,
	// 3 on a NATS cluster).
	Replicas int
	// Partitions per sink (store.nats.partitions; default 16). Conversations
	// that hash to one partition share its order. It is fixed when the
	// streams are created; Open refuses a different value later.
	Partitions int
	// DedupeWindow (store.dedupe_window; default 24h) is the events stream's
	// duplicate window. It may not exceed Retention.
	DedupeWindow time.Duration
	// Retention (store.retention; default 168h) is how long events are
	// kept, delivered or not: the events stream's MaxAge. Pending
	// deliveries and dead letters carry their own copy of the body and do
	// not expire.
	Retention time.Duration
	// AckWait (default 30s) is how long a delivery handed to a replica
	// stays its own without news. A live replica renews it every AckWait/3
	// for as long as it holds the delivery (a long send, a rate-limit
	// wait), so AckWait only bounds how long a crashed replica's deliveries
	// wait before another replica takes them.
	AckWait time.Duration
	// MaxBytes bounds the events stream (store.max_size; 0, the default:
	// no bound of its own, only the server's and the account's limits).
	// Past it the oldest events make room: they leave Lookup, Recent and
	// the dedupe window early, but no pending delivery or dead letter goes
	// with them (each carries its own copy of the body). Appends are
	// refused (relay.ErrFull, 503) only when the server or the account
	// refuses to store more.
	MaxBytes int64
	// Backoff is how the store waits after its own failures: a pull that
	// failed, a delivery it could not park in the dead letters (handed back
	// for later rather than at once: on a full server it would otherwise be
	// sent again and again). Zero: 100ms doubling to 5s, with jitter.
	Backoff relay.RetryPolicy
	// Timeout bounds each request to NATS that has no deadline of its own,
	// such as an Append from a request without one (default 5s).
	Timeout time.Duration
	// ReconnectWait is the first pause between reconnect attempts; it
	// doubles up to 16 times as much, capped at 10s, with jitter
	// (default 250ms). Reconnecting never gives up.
	ReconnectWait time.Duration
	// Exclusive reports whether a sink is sent to by one replica at a time
	// (nil: none is). Give it the sinks whose platform pace is per
	// destination, such as a Slack or Discord channel: each replica paces
	// its own sends, so N replicas sharing such a sink would send up to N
	// times its pace. The replica that holds an exclusive sink's ownership
	// lease sends all of it; another takes over when that one closes or
	// stops renewing (see the package doc, "Exclusive sinks").
	Exclusive func(sink string) bool
	Logger    *slog.Logger
}

const (
	defaultName    = "CHATRELAY"
	maxPullWait    = 30 * time.Second // one pull request's life, at most (Store.pullWait)
	pullHeartbeat  = 5 * time.Second  // a lost pull request shows within 2 heartbeats
	minPull        = 20 * time.Millisecond
	metaPartitions = "chatrelay_partitions"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

func (o *Options) defaults() error {
	if o.Name == "" {
		o.Name = defaultName
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.Partitions == 0 {
		o.Partitions = DefaultPartitions
	}
	if o.DedupeWindow <= 0 {
		o.DedupeWindow = DefaultDedupeWindow
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = 100 * time.Millisecond
	}
	if o.Backoff.Max < o.Backoff.Initial {
		o.Backoff.Max = max(5*time.Second, o.Backoff.Initial)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if !nameRE.MatchString(o.Name) {
		errs = append(errs, fmt.Errorf("name %q: use 1-32 letters, digits, '-' or '_'", o.Name))
	}
	// The same rules as check-config's, named by their keys.
	cfg := Config{MaxSize: relay.ByteSize(o.MaxBytes), Retention: o.Retention, DedupeWindow: o.DedupeWindow,
		Server: Server{URL: o.URL, CredsFile: o.CredsFile, Token: o.Token, TLS: o.TLS,
			Replicas: o.Replicas, Partitions: o.Partitions, AckWait: o.AckWait}}
	if err := cfg.Validate(); err != nil {
		for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
			errs = append(errs, fmt.Errorf("store.%w", e))
		}
	}
	return errors.Join(errs...)
}

// Store implements relay.Store on NATS JetStream. Several chatrelay
// replicas may open stores on the same server and share the work.
type Store struct {
	opts Options
	log  *slog.Logger
	l    layout

	nc       *natsgo.Conn
	js       jetstream.JetStream
	events   jetstream.Stream
	queue    jetstream.Stream
	dead     jetstream.Stream
	kv       jetstream.KeyValue
	state    jetstream.KeyValue
	replicas jetstream.KeyValue // leases: see lease.go
	instance string             // this replica's lease key
	hostname string
	// ownerValue is what this replica writes into the ownership leases of
	// the exclusive sinks it owns (own.go).
	ownerValue []byte

	// disconnectedAt is when the connection was lost, on the store's
	// monotonic clock (mono, +1 so that 0 means connected).
	disconnectedAt atomic.Int64
	opened         time.Time     // the origin of mono
	connectedAt    atomic.Int64  // unix nanoseconds of the last (re)connect
	renewNow       chan struct{} // wakes the keepalive loop: renew everything held now

	// ctx ends when Close begins; every goroutine the store starts stops
	// with it and is counted in wg.
	ctx        context.Context
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	closeOnce  sync.Once
	connClosed chan struct{}

	creating chan struct{} // a one-slot lock, held while creating a sink's consumers
	usage    usageRollup   // the usage figures read so far (console.go)
	claimNow chan struct{} // wakes the owners loop: an exclusive queue was opened

	// The last write's outcome, for Ready: when (mono; 0: none yet) and
	// nil or a relay.ErrFull.
	writeMu  sync.Mutex
	writeAt  int64
	writeErr error

	mu         sync.Mutex
	closing    bool
	queues     map[string]*queue
	consumers  map[string][]jetstream.Consumer // per encoded sink, once created
	configured map[string]bool                 // set by Reconcile; nil until then
	epoch      context.Context                 // canceled at every reconnect
	endEpoch   context.CancelFunc
}

var _ relay.Store = (*Store)(nil)

// Open connects to NATS, creates or updates the streams, consumers and
// buckets the store needs (idempotently: replicas may start at once) and
// starts routing. It waits for the first connection until ctx ends; after
// that it reconnects forever.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s := &Store{
		opts:       opts,
		log:        opts.Logger,
		l:          newLayout(opts.Name, opts.Partitions),
		connClosed: make(chan struct{}),
		queues:     make(map[string]*queue),
		consumers:  make(map[string][]jetstream.Consumer),
		creating:   make(chan struct{}, 1),
		usage:      newUsageRollup(),
		claimNow:   make(chan struct{}, 1),
		renewNow:   make(chan struct{}, 1),
	}
	s.instance = uuid.NewString()
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
		s.log.Debug("no host name for this replica's records", "err", err)
	}
	s.hostname = host
	if s.ownerValue, err = json.Marshal(ownerRecord{Replica: s.instance, Host: s.hostname}); err != nil {
		return nil, fmt.Errorf("store.nats: %w", err)
	}
	s.opened = time.Now()
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.epoch, s.endEpoch = context.WithCancel(s.ctx)

	if err := s.connect(ctx); err != nil {
		s.cancel()
		return nil, err
	}
	if err := s.setup(ctx); err != nil {
		s.cancel()
		s.nc.Close()
		<-s.connClosed
		return nil, fmt.Errorf("store.nats: set up streams on %s: %w", s.server(), err)
	}
	if err := s.renewLease(ctx); err != nil {
		s.cancel()
		s.nc.Close()
		<-s.connClosed
		return nil, fmt.Errorf("store.nats: register this replica: %w", err)
	}
	s.wg.Add(2)
	go s.leases()
	go s.keepalive()
	if opts.Exclusive != nil {
		s.wg.Add(1)
		go s.owners()
	}
	s.log.Info("store ready", "driver", "nats", "server", s.server(), "partitions", opts.Partitions, "replicas", opts.Replicas)
	return s, nil
}

// server is the server for logs: no credentials. A URL's user info is
// blanked whole, since NATS takes a bare token there too.
func (s *Store) server() string {
	var out []string
	for _, raw := range strings.Split(s.opts.URL, ",") {
		raw = strings.TrimSpace(raw)
		scheme, rest, ok := strings.Cut(raw, "://")
		if !ok {
			scheme, rest = "", raw
		}
		if at := strings.LastIndexByte(rest, '@'); at >= 0 {
			rest = "xxxxx@" + rest[at+1:]
		}
		if scheme != "" {
			rest = scheme + "://" + rest
		}
		out = append(out, rest)
	}
	return strings.Join(out, ",")
}

// redact returns err, or when its text shows a credential (a URL parse
// error quotes the URL), an error with that text blanked that still
// answers errors.Is as err does.
func (s *Store) redact(err error) error {
	msg := err.Error()
	secrets := []string{s.opts.Token.Reveal()}
	for _, raw := range strings.Split(s.opts.URL, ",") {
		if i := strings.Index(raw, "://"); i >= 0 {
			raw = raw[i+3:]
		}
		if at := strings.LastIndexByte(raw, '@'); at >= 0 {
			userinfo := raw[:at]
			secrets = append(secrets, userinfo)
			if _, pass, ok := strings.Cut(userinfo, ":"); ok {
				secrets = append(secrets, pass)
			}
		}
	}
	redacted := msg
	for _, sec := range secrets {
		if sec != "" {
			redacted = strings.ReplaceAll(redacted, sec, "xxxxx")
		}
	}
	if redacted == msg {
		return err
	}
	return &redactedError{msg: redacted, err: err}
}

// redactedError is an error whose text had a credential blanked. It
// answers errors.Is through the original (context.DeadlineExceeded,
// nats.ErrNoServers…) but does not unwrap to it: errors.As would hand out
// the original, whose text shows the credential.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string        { return e.msg }
func (e *redactedError) Is(target error) bool { return errors.Is(e.err, target) }

func (s *Store) connect(ctx context.Context) error {
	o := s.opts
	wait := o.ReconnectWait
	options := []natsgo.Option{
		natsgo.Name("chatrelay"),
		natsgo.MaxReconnects(-1),
		natsgo.RetryOnFailedConnect(true),
		// Without a buffer, a publish while reconnecting fails at once and
		// the receiver answers 503 instead of waiting.
		natsgo.ReconnectBufSize(-1),
		natsgo.CustomReconnectDelay(func(attempts int) time.Duration {
			d := wait << min(attempts, 4)
			d = min(d, 10*time.Second)
			return d/2 + rand.N(d/2+1)
		}),
		natsgo.Timeout(o.Timeout),
		natsgo.PingInterval(20 * time.Second),
		natsgo.MaxPingsOutstanding(3),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			s.disconnectedAt.CompareAndSwap(0, s.mono()+1)
			if s.ctx.Err() == nil {
				s.log.Warn("lost the connection to NATS; appends answer 503 until it is back", "err", err)
			}
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			var away time.Duration
			if at := s.disconnectedAt.Swap(0); at != 0 {
				away = time.Duration(s.mono() - (at - 1))
			}
			s.log.Info("reconnected to NATS", "server", nc.ConnectedAddr(), "away", away.Round(time.Millisecond))
			s.connectedAt.Store(time.Now().UnixNano())
			// What is still held (away less than holdFor) is renewed at
			// once; the rest was given up (hold.go).
			select {
			case s.renewNow <- struct{}{}:
			default:
			}
			s.newEpoch()
		}),
		natsgo.ConnectHandler(func(*natsgo.Conn) {
			s.connectedAt.Store(time.Now().UnixNano())
			s.newEpoch()
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) { close(s.connClosed) }),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			s.log.Warn("NATS reported an error", "subject", subj, "err", err)
		}),
	}
	if o.CredsFile != "" {
		options = append(options, natsgo.UserCredentials(o.CredsFile))
	}
	if !o.Token.IsZero() {
		options = append(options, natsgo.Token(o.Token.Reveal()))
	}
	if o.TLS.CAFile != "" {
		options = append(options, natsgo.RootCAs(o.TLS.CAFile))
	}
	if o.TLS.CertFile != "" {
		options = append(options, natsgo.ClientCert(o.TLS.CertFile, o.TLS.KeyFile))
	}
	nc, err := natsgo.Connect(o.URL, options...)
	if err != nil {
		return fmt.Errorf("store.nats: connect to %s: %w", s.server(), s.redact(err))
	}
	s.nc = nc
	// RetryOnFailedConnect returns at once; wait for the first connection.
	if err := s.awaitConnected(ctx); err != nil {
		nc.Close()
		<-s.connClosed
		return fmt.Errorf("store.nats: no connection to %s: %w; check store.nats.url, "+
			"the credentials and that the server runs with JetStream", s.server(), s.redact(err))
	}
	js, err := jetstream.New(nc, jetstream.WithDefaultTimeout(o.Timeout))
	if err != nil {
		nc.Close()
		<-s.connClosed
		return fmt.Errorf("store.nats: %w", err)
	}
	s.js = js
	return nil
}

func (s *Store) awaitConnected(ctx context.Context) error {
	ch := s.nc.StatusChanged(natsgo.CONNECTED, natsgo.CLOSED)
	defer s.nc.RemoveStatusListener(ch)
	for {
		switch s.nc.Status() {
		case natsgo.CONNECTED:
			return nil
		case natsgo.CLOSED:
			if err := s.nc.LastError(); err != nil {
				return err
			}
			return natsgo.ErrConnectionClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if err := s.nc.LastError(); err != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
			}
			return ctx.Err()
		}
	}
}

// newEpoch cancels every pull request in flight: after a reconnect they
// may be gone with the old server, so pullers ask again at once.
func (s *Store) newEpoch() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.endEpoch()
	s.epoch, s.endEpoch = context.WithCancel(s.ctx)
}

func (s *Store) currentEpoch() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// setup creates or updates everything the store needs on the server.
func (s *Store) setup(ctx context.Context) error {
	o, l := s.opts, s.l
	if st, err := s.js.Stream(ctx, l.events); err == nil {
		if err := s.checkPartitions(st.CachedInfo().Config.Metadata); err != nil {
			return err
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return err
	}
	var err error
	s.events, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:        l.events,
		Description: "chatrelay: accepted events, kept for store.retention",
		Subjects:    []string{l.eventsAll()},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		MaxAge:      o.Retention,
		MaxBytes:    maxBytes(o.MaxBytes),
		// Past MaxBytes the oldest events go: they are history (lookups,
		// dedupe), and what is pending is in the queue stream.
		Discard:     jetstream.DiscardOld,
		Duplicates:  o.DedupeWindow,
		AllowDirect: true,
		Metadata:    map[string]string{metaPartitions: strconv.Itoa(o.Partitions)},
	})
	if err != nil {
		return s.sizeRefused(err)
	}
	if err := s.checkPartitions(s.events.CachedInfo().Config.Metadata); err != nil {
		return err
	}
	s.queue, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:        l.queue,
		Description: "chatrelay: pending deliveries, one subject per sink and partition",
		Subjects:    []string{l.queueAll()},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		Duplicates:  queueDupWindow,
		AllowDirect: true,
	})
	if err != nil {
		return err
	}
	s.dead, err = s.ensureStream(ctx, jetstream.StreamConfig{
		Name:              l.dead,
		Description:       "chatrelay: dead letters, kept until purged",
		Subjects:          []string{l.deadAll()},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          o.Replicas,
		MaxMsgsPerSubject: 1, // parking a delivery again replaces its dead letter
		AllowDirect:       true,
	})
	if err != nil {
		return err
	}
	if s.kv, err = s.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      l.kv,
		Description: "chatrelay: sinks' key/value (conversation threads)",
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
	}); err != nil {
		return err
	}
	if s.state, err = s.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      l.state,
		Description: "chatrelay: delivery attempts, last errors and outcomes",
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		TTL:         o.Retention,
	}); err != nil {
		return err
	}
	s.replicas, err = s.ensureBucket(ctx, jetstream.KeyValueConfig{
		Bucket:      l.replicas,
		Description: "chatrelay: one lease per running replica, one per exclusive sink's owner",
		Storage:     jetstream.FileStorage,
		Replicas:    o.Replicas,
		TTL:         o.Retention,
	})
	return err
}

// sizeRefused names store.max_size in an error of setting up the events
// stream when the server refused its size.
func (s *Store) sizeRefused(err error) error {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return err
	}
	switch apiErr.ErrorCode {
	case errStorageResources, errInsufficientResources, errMaxStreamBytes:
		if s.opts.MaxBytes > 0 {
			return fmt.Errorf("store.max_size: %s is more than the NATS server or account lets a stream reserve (%w); "+
				"lower it, or leave it unset so that only the server's and the account's own limits apply", sizeText(s.opts.MaxBytes), err)
		}
	case errMaxBytesRequired:
		return fmt.Errorf("store.max_size: the NATS account requires a size limit on every stream (%w); "+
			"run chatrelay under an account without max_bytes_required", err)
	}
	return err
}

// sizeText writes n in the largest binary unit that divides it.
func sizeText(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

func (s *Store) checkPartitions(meta map[string]string) error {
	v, ok := meta[metaPartitions]
	if !ok {
		return nil
	}
	if n, err := strconv.Atoi(v); err == nil && n != s.opts.Partitions {
		return fmt.Errorf("store.nats.partitions is %d but stream %s was created with %d; "+
			"set it back to %d (changing it needs empty queues and new streams)", s.opts.Partitions, s.l.events, n, n)
	}
	return nil
}

// ensureStream creates or updates a stream, updating only when a setting
// the store chooses differs: a replica starting next to running ones reads
// and leaves the stream alone. (An update is a write, replicated on a
// cluster, and nats-server 2.15.2 races an update against creating a
// consumer on the same stream.) Two replicas starting at once may race to
// create it; the loser updates instead.
func (s *Store) ensureStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if st, err := s.js.Stream(ctx, cfg.Name); err == nil && sameStream(st.CachedInfo().Config, cfg) {
		return st, nil
	}
	st, err := s.js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		st, err = s.js.CreateOrUpdateStream(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// sameStream compares the settings the store chooses; one it leaves at
// zero is the server's to default.
func sameStream(have, want jetstream.StreamConfig) bool {
	return have.Description == want.Description && slices.Equal(have.Subjects, want.Subjects) &&
		have.Retention == want.Retention && have.Storage == want.Storage && have.Replicas == want.Replicas &&
		have.Discard == want.Discard && have.AllowDirect == want.AllowDirect &&
		(want.MaxAge == 0 || have.MaxAge == want.MaxAge) &&
		(want.MaxBytes == 0 || have.MaxBytes == want.MaxBytes) &&
		(want.Duplicates == 0 || have.Duplicates == want.Duplicates) &&
		(want.MaxMsgsPerSubject == 0 || have.MaxMsgsPerSubject == want.MaxMsgsPerSubject) &&
		have.Metadata[metaPartitions] == want.Metadata[metaPartitions]
}

func (s *Store) ensureBucket(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		kv, err = s.js.CreateOrUpdateKeyValue(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return kv, nil
}

// ensureConsumer returns a durable consumer, creating it or updating its
// config only when needed: the server writes a consumer's config to disk
// (with fsync) on every create or update, so replicas starting up read
// first.
func (s *Store) ensureConsumer(ctx context.Context, st jetstream.Stream, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if c, err := st.Consumer(ctx, cfg.Durable); err == nil && sameConsumer(c.CachedInfo().Config, cfg) {
		return c, nil
	}
	c, err := st.CreateOrUpdateConsumer(ctx, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) || errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse) {
		c, err = st.CreateOrUpdateConsumer(ctx, cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return c, nil
}

// sameConsumer compares the settings the store chooses.
func sameConsumer(have, want jetstream.ConsumerConfig) bool {
	return have.FilterSubject == want.FilterSubject && have.AckWait == want.AckWait &&
		have.MaxAckPending == want.MaxAckPending && have.AckPolicy == want.AckPolicy &&
		have.DeliverPolicy == want.DeliverPolicy && have.Description == want.Description
}

// queueConsumers returns the durable consumers of one sink's partitions,
// creating them the first time. Every replica shares them.
func (s *Store) queueConsumers(ctx context.Context, enc string) ([]jetstream.Consumer, error) {
	s.mu.Lock()
	cs, ok := s.consumers[enc]
	s.mu.Unlock()
	if ok {
		return cs, nil
	}
	// One creator at a time: concurrent first appends of a new sink would
	// otherwise all create the same consumers.
	select {
	case s.creating <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-s.creating }()
	s.mu.Lock()
	cs, ok = s.consumers[enc]
	s.mu.Unlock()
	if ok {
		return cs, nil
	}
	cs = make([]jetstream.Consumer, s.opts.Partitions)
	for p := range cs {
		c, err := s.ensureConsumer(ctx, s.queue, jetstream.ConsumerConfig{
			Durable:       queueConsumer(enc, p),
			FilterSubject: s.l.queueFilter(enc, p),
			DeliverPolicy: jetstream.DeliverAllPolicy,
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       s.opts.AckWait,
			MaxAckPending: 1, // one delivery of a partition in flight, across replicas
			MaxDeliver:    -1,
		})
		if err != nil {
			return nil, err
		}
		cs[p] = c
	}
	s.mu.Lock()
	s.consumers[enc] = cs
	s.mu.Unlock()
	return cs, nil
}

// forgetConsumers drops cached consumer handles (one was deleted on the
// server), so the next use creates them again.
func (s *Store) forgetConsumers(enc string) {
	s.mu.Lock()
	delete(s.consumers, enc)
	s.mu.Unlock()
}

// Close stops routing and consuming, hands back every delivery this
// replica holds so another replica takes it at once, releases the
// exclusive sinks it owns so another replica takes them over at once, and
// closes the connection. No goroutine of the store outlives it.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		s.mu.Unlock()
		qs := s.queueList()
		s.cancel()
		s.wg.Wait()
		for _, q := range qs {
			q.handBack()
		}
		// Only now, with nothing held: the next owner finds every head.
		s.releaseOwnership(qs)
		ctx, cancel := s.opCtx()
		if err := s.replicas.Delete(ctx, s.instance); err != nil {
			s.log.Debug("could not delete this replica's lease; another replica will reap it", "err", err)
		}
		if err := s.replicas.Purge(ctx, probeKey(s.instance)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			s.log.Debug("could not delete this replica's readiness probe; it expires with store.retention", "err", err)
		}
		cancel()
		if s.nc.IsConnected() {
			if err := s.nc.FlushTimeout(s.opts.Timeout); err != nil {
				s.log.Debug("could not flush the last settlements before closing; NATS hands out what they settled again after the ack wait", "err", err)
			}
		}
		s.nc.Close()
		<-s.connClosed
		s.log.Info("store closed", "driver", "nats")
	})
	return nil
}

// Ready reports whether an append would be accepted now: connected, the
// events stream answers, and JetStream takes writes. The server's and the account's storage limits refuse a write
// without showing in the stream (and a server's own limit shows nowhere an
// account can read), so the last word is the last write's outcome: an
// Append's, or, when none came within readyFor, a probe's (a minRoom-byte
// value in the replicas bucket, replaced each time).
func (s *Store) Ready(ctx context.Context) error {
	if s.ctx.Err() != nil {
		return relay.ErrClosed
	}
	if !s.nc.IsConnected() {
		return fmt.Errorf("%w: not connected to NATS (%s)", relay.ErrUnavailable, strings.ToLower(s.nc.Status().String()))
	}
	if ok, err := s.lastWrite(); ok {
		return err
	}
	if _, err := s.events.Info(ctx); err != nil {
		return fmt.Errorf("events stream: %w", classify(err))
	}
	_, err := s.replicas.Put(ctx, probeKey(s.instance), make([]byte, minRoom))
	err = classify(err)
	s.noteWrite(err)
	if err != nil {
		return fmt.Errorf("JetStream refuses a write: %w", err)
	}
	return nil
}

// readyFor is how long a write's outcome answers Ready.
const readyFor = time.Second

// noteWrite records whether JetStream took a write (nil) or refused it
// for want of room (relay.ErrFull); other outcomes say nothing about room.
func (s *Store) noteWrite(err error) {
	if err != nil && !errors.Is(err, relay.ErrFull) {
		return
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	s.writeAt, s.writeErr = s.mono(), err
}

// lastWrite returns the outcome of the last write, if it is recent.
func (s *Store) lastWrite() (bool, error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.writeAt == 0 || time.Duration(s.mono()-s.writeAt) >= readyFor {
		return false, nil
	}
	if s.writeErr != nil {
		return true, fmt.Errorf("JetStream refuses writes: %w", s.writeErr)
	}
	return true, nil
}

// probeKey is this replica's readiness probe in the replicas bucket (two
// tokens: neither a replica lease nor an ownership key).
func probeKey(instance string) string { return "probe." + instance }

func maxBytes(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// minRoom is the size of Ready's probe: an append of up to that much would
// be taken.
const minRoom = 64 << 10

// classify maps a NATS error to the store's errors: relay.ErrClosed after
// Close, relay.ErrFull for storage limits, else relay.ErrUnavailable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	switch {
	case errors.Is(err, relay.ErrClosed), errors.Is(err, relay.ErrUnavailable), errors.Is(err, relay.ErrFull),
		errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, natsgo.ErrConnectionClosed), errors.Is(err, jetstream.ErrConnectionClosed):
		return fmt.Errorf("%w: %w", relay.ErrClosed, err)
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errAccountResources, errInsufficientResources, errMemoryResources, errStorageResources, errStoreFailed:
			return fmt.Errorf("%w: %w", relay.ErrFull, err)
		}
	}
	return fmt.Errorf("%w: %w", relay.ErrUnavailable, err)
}

// JetStream error codes that mean "no room" (nats-server errors.json).
const (
	errAccountResources      jetstream.ErrorCode = 10002
	errInsufficientResources jetstream.ErrorCode = 10023
	errMemoryResources       jetstream.ErrorCode = 10028
	errStorageResources      jetstream.ErrorCode = 10047
	errStoreFailed           jetstream.ErrorCode = 10077 // includes "maximum bytes exceeded" with DiscardNew
	errMaxBytesRequired      jetstream.ErrorCode = 10113 // the account requires MaxBytes on every stream
	errMaxStreamBytes        jetstream.ErrorCode = 10122 // MaxBytes past the account's limit for one stream
)

// backoff waits before trying again after the failures-th error in a row
// (Options.Backoff), or until the store closes.
func (s *Store) backoff(failures int) {
	t := time.NewTimer(s.opts.Backoff.Backoff(failures, rand.Float64()))
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.ctx.Done():
	}
}

// opCtx bounds one operation the store starts itself. It outlives Close's
// cancel, so an operation under way finishes (Close waits for it).
func (s *Store) opCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(s.ctx), s.opts.Timeout)
}
