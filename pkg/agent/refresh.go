package agent

import (
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/secctx/secctx/pkg/agent/internal/storekit"
	"github.com/secctx/secctx/pkg/agentapi"
)

// RefreshConfig is what the sidecar keeps fresh: the fetch's FILE secrets,
// the set in Fetch.SetDir that the fetch init container wrote, read again
// from their stores every Interval.
type RefreshConfig struct {
	// Fetch is the fetch's configuration: the secrets (those of the set),
	// the stores' settings, the files' mode and the set's directory.
	Fetch FetchConfig
	// Interval is the time between two refreshes; Jitter spreads each by
	// up to this part of it either way, so that the pods of a map task do
	// not ask their store at once.
	Interval time.Duration
	Jitter   float64
	// MinBackoff and MaxBackoff bound the wait after a refresh that
	// failed, which doubles from one to the other; never more than
	// Interval.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds one read of a store.
	RequestTimeout time.Duration
}

// Renewer is a Store that holds a credential with a lifetime of its own
// (Vault's login token), which the sidecar keeps alive for the pod's life:
// Renew renews it, or replaces it when it cannot be renewed, and says when
// to call it again.
type Renewer interface {
	Renew(ctx context.Context, log logr.Logger) (next time.Duration, err error)
}

// Leaser is a Store whose secrets include leased ones (Secret.Leased):
// it keeps their leases alive as it renews its credential (Renewer), and
// signals Expiring when one is due to be replaced; the sidecar then reads
// the leased secrets at once, after Rotate.
type Leaser interface {
	Expiring() <-chan struct{}
	// Leased is signalled when a read took a new lease: its renewal may
	// be due before the credential's, so Renew is called at once.
	Leased() <-chan struct{}
	// Rotate starts a round of reads: the leases due are replaced at
	// this round, each by one read.
	Rotate()
}

// clock is time as the refresher sees it: a test replaces it to check the
// waits without waiting.
type clock interface {
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// refresher keeps the set of FILE secrets fresh.
type refresher struct {
	cfg    RefreshConfig
	log    logr.Logger
	status *statusBook
	clock  clock

	// stores are opened on the first refresh that needs them, and kept;
	// a store that failed to open is tried again at the next refresh.
	// runCtx is run's, which a store's renewal lives as long as.
	mu     sync.Mutex
	stores map[string]Store
	runCtx context.Context
	// last is the set as written last: a hash of each value, by its path
	// in SetDir.
	last map[string][sha256.Size]byte
	// rounds and calls count refreshes and store reads, for the log.
	rounds, reads int
	// expiring is signalled by a Leaser whose lease is due; leased holds
	// the leased secrets this sidecar has read itself, and only those
	// count as ready.
	expiring chan struct{}
	leased   map[string]bool
}

// readKey is what one read of a store depends on: two secrets that share
// it (a file and an env var of one Secrets Manager secret) are read once.
type readKey struct{ store, id, version, key, engine string }

func keyOf(s agentapi.Secret) readKey {
	return readKey{s.Store, s.ID, s.Version, s.Key, s.Engine}
}

// secretStatus names a secret in the status.
func secretStatus(s agentapi.Secret) string { return s.Field }

// newRefresher records each secret of the set in book, as written by the
// fetch.
func newRefresher(cfg RefreshConfig, book *statusBook, log logr.Logger) (*refresher, error) {
	if cfg.Interval <= 0 || cfg.Jitter < 0 || cfg.Jitter >= 1 {
		return nil, fmt.Errorf("refresh every %s with jitter %g: the interval must be positive and the jitter in [0, 1)", cfg.Interval, cfg.Jitter)
	}
	if cfg.Fetch.SetDir == "" {
		return nil, fmt.Errorf("refresh: no set directory (--set-dir)")
	}
	if err := cfg.Fetch.checkLayout(); err != nil {
		return nil, err
	}
	var secrets []agentapi.Secret
	for _, s := range cfg.Fetch.Secrets {
		if _, ok := stores[s.Store]; !ok {
			return nil, fmt.Errorf("%s: store %q: unknown; one of %v", s.Field, s.Store, slices.Sorted(maps.Keys(stores)))
		}
		if _, ok := cfg.Fetch.inSet(s); !ok {
			return nil, fmt.Errorf("%s: file %s: not in the set's directory %s (an ENV_VAR value is not refreshed)", s.Field, s.File, cfg.Fetch.SetDir)
		}
		secrets = append(secrets, s)
		if s.Leased {
			// The fetch's lease dies with the fetch's login: the task
			// waits for this sidecar's own.
			book.add(secretStatus(s), "not read yet", false)
		} else {
			book.add(secretStatus(s), "", true)
		}
	}
	cfg.Fetch.Secrets = secrets
	return &refresher{cfg: cfg, log: log, status: book, clock: realClock{}, stores: map[string]Store{},
		expiring: make(chan struct{}, 1), leased: map[string]bool{}}, nil
}

func isLeased(s agentapi.Secret) bool { return s.Leased }

// leaseKey is a leased path: every key of it comes from one lease.
type leaseKey struct{ store, id string }

func everySecret(agentapi.Secret) bool { return true }

// run refreshes the set every Interval, give or take the jitter, until
// ctx ends; after a refresh that failed it tries again sooner, backing
// off. It closes the stores it opened before it returns.
func (r *refresher) run(ctx context.Context) {
	defer r.close()
	last, err := readSet(r.cfg.Fetch.SetDir)
	if err != nil {
		r.log.Error(err, "read the fetched set: every secret is written again at the first refresh")
	}
	r.remember(last)
	r.mu.Lock()
	r.runCtx = ctx
	r.mu.Unlock()
	r.log.Info("refreshing secrets", "secrets", len(r.cfg.Fetch.Secrets), "every", r.cfg.Interval.String(), "jitter", r.cfg.Jitter)
	// Leased secrets are read at once: the fetch's leases end with it.
	if slices.ContainsFunc(r.cfg.Fetch.Secrets, isLeased) {
		for wait := r.cfg.MinBackoff; r.round(ctx, isLeased) > 0; wait = min(2*wait, maxLeaseBackoff) {
			select {
			case <-ctx.Done():
				return
			case <-r.clock.After(jitter(wait)):
			}
		}
	}
	// Two schedules: every secret each interval (timer), and the leased
	// ones when a lease is due (expiring), retried with a backoff of
	// their own (leaseRetry) so that neither postpones the other.
	backoff, leaseBackoff := r.firstBackoff(), r.cfg.MinBackoff
	timer := r.clock.After(r.next())
	var leaseRetry <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.expiring:
		case <-leaseRetry:
		case <-timer:
			if failed := r.round(ctx, everySecret); failed > 0 && ctx.Err() == nil {
				wait := min(jitter(backoff), r.cfg.Interval)
				backoff = min(2*backoff, r.cfg.MaxBackoff, r.cfg.Interval)
				r.log.Info("refresh incomplete: the last good values are kept", "failed", failed, "retryIn", wait.Round(time.Millisecond).String())
				timer = r.clock.After(wait)
				continue
			}
			timer, backoff = r.clock.After(r.next()), r.firstBackoff()
			continue
		}
		// A lease is due: its secrets now, the others on time.
		leaseRetry = nil
		if failed := r.round(ctx, isLeased); failed > 0 && ctx.Err() == nil {
			wait := jitter(leaseBackoff)
			leaseBackoff = min(2*leaseBackoff, maxLeaseBackoff)
			r.log.Info("leased secrets not replaced: the last values are kept while their leases last", "failed", failed, "retryIn", wait.Round(time.Millisecond).String())
			leaseRetry = r.clock.After(wait)
			continue
		}
		leaseBackoff = r.cfg.MinBackoff
	}
}

// maxLeaseBackoff bounds the wait between two tries to replace a lease:
// unlike a refresh, which keeps a value that stays good, a lease due to be
// replaced has a third of its time left, at most.
const maxLeaseBackoff = 30 * time.Second

// next is the wait until the next refresh: Interval, plus up to Jitter of
// it. Never less: the interval is the least time between two refreshes,
// which a SecurityContextPolicy may hold a namespace to.
func (r *refresher) next() time.Duration {
	return time.Duration(float64(r.cfg.Interval) * (1 + r.cfg.Jitter*rand.Float64()))
}

// firstBackoff is the first wait after a failed refresh: a tenth of the
// interval, at least MinBackoff, so that a failing store is asked again
// at most a few times an interval.
func (r *refresher) firstBackoff() time.Duration {
	return max(r.cfg.MinBackoff, r.cfg.Interval/10)
}

// round reads every secret of the set that only accepts once and, when a
// value changed, writes the set anew. A secret that cannot be read keeps
// its last value, so that the other secrets' new values still arrive. It
// returns how many secrets failed.
func (r *refresher) round(ctx context.Context, only func(agentapi.Secret) bool) (failed int) {
	r.rounds++
	r.mu.Lock()
	for _, st := range r.stores {
		if l, ok := st.(Leaser); ok {
			l.Rotate()
		}
	}
	r.mu.Unlock()
	fresh := map[string][]byte{} // the values read, by path in the set
	read := map[readKey][]byte{}
	brokenLease := map[leaseKey]bool{}
	var changed []string
	for _, s := range r.cfg.Fetch.Secrets {
		if !only(s) {
			continue
		}
		rel, _ := r.cfg.Fetch.inSet(s)
		v, ok := read[keyOf(s)]
		if !ok {
			var err error
			v, err = r.read(ctx, s)
			if err == nil {
				err = checkSize(s, v)
			}
			if err != nil {
				if ctx.Err() != nil {
					return 0 // the pod is ending
				}
				failed++
				if s.Leased {
					brokenLease[leaseKey{s.Store, s.ID}] = true
				}
				kept := "the last value is kept"
				if _, had := r.last[rel]; !had {
					kept = "no value yet"
				}
				r.status.set(secretStatus(s), fmt.Sprintf("not refreshed, %s: %s (%s)", kept, err.Error(), storekit.Describe(s)), !s.Leased || r.leased[s.Field])
				r.log.Error(err, "secret not refreshed", "field", s.Field, "store", s.Store, "secret", storekit.Describe(s))
				continue
			}
			read[keyOf(s)] = v
		}
		fresh[rel] = v
		if h, had := r.last[rel]; !had || h != sha256.Sum256(v) {
			changed = append(changed, s.Field)
		}
		if !s.Leased {
			r.status.set(secretStatus(s), "", true)
		}
	}
	// The keys of one leased path are one user: when one could not be
	// read, none is written this round, lest the set hold one user's
	// name with another's password.
	for _, s := range r.cfg.Fetch.Secrets {
		if !s.Leased || !only(s) || !brokenLease[leaseKey{s.Store, s.ID}] {
			continue
		}
		if rel, _ := r.cfg.Fetch.inSet(s); fresh[rel] != nil {
			delete(fresh, rel)
			changed = slices.DeleteFunc(changed, func(f string) bool { return f == s.Field })
			failed++
			r.status.set(secretStatus(s), "not refreshed, the last value is kept: another key of the same lease could not be read", r.leased[s.Field])
		}
	}
	if len(changed) == 0 {
		r.leasedReady(fresh)
		return failed
	}
	// The whole set: what was read, and for a secret that could not be,
	// its last value, from the current set. Only hashes of the values are
	// kept between refreshes: the files in memory are counted against the
	// sidecar's memory, and a copy would double them.
	set := fresh
	if len(fresh) < len(r.cfg.Fetch.Secrets) {
		current, err := readSet(r.cfg.Fetch.SetDir)
		if err != nil {
			r.log.Error(err, "read the current set")
		}
		for rel, v := range current {
			if _, ok := set[rel]; !ok {
				set[rel] = v
			}
		}
	}
	switched, err := writeSet(r.cfg.Fetch.SetDir, set, r.cfg.Fetch.Mode)
	if err != nil && !switched {
		r.log.Error(err, "write the refreshed set: the last one stays")
		for _, s := range r.cfg.Fetch.Secrets {
			r.status.set(secretStatus(s), "not refreshed, the last value is kept: write "+r.cfg.Fetch.SetDir+": "+err.Error(), !s.Leased || r.leased[s.Field])
		}
		return len(r.cfg.Fetch.Secrets)
	}
	if err != nil {
		r.log.Error(err, "the refreshed set is written, but the previous one is not cleaned up")
	}
	r.remember(set)
	r.leasedReady(fresh)
	r.log.Info("secrets refreshed", "changed", changed, "refreshes", r.rounds, "reads", r.reads)
	return failed
}

// leasedReady marks ready the leased secrets whose value this sidecar
// read is in the set now: the status is what lets the task start.
func (r *refresher) leasedReady(fresh map[string][]byte) {
	for _, s := range r.cfg.Fetch.Secrets {
		rel, _ := r.cfg.Fetch.inSet(s)
		if _, ok := fresh[rel]; s.Leased && ok {
			r.leased[s.Field] = true
			r.status.set(secretStatus(s), "", true)
		}
	}
}

// remember keeps the hashes of set's values, as written last.
func (r *refresher) remember(set map[string][]byte) {
	r.last = map[string][sha256.Size]byte{}
	for rel, v := range set {
		r.last[rel] = sha256.Sum256(v)
	}
}

// read reads s from its store, opening the store first if it is not yet.
func (r *refresher) read(ctx context.Context, s agentapi.Secret) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	st, err := r.store(ctx, s.Store)
	if err != nil {
		return nil, err
	}
	r.reads++
	return st.Read(ctx, s)
}

// store is the opened store name, opened now if it is not yet.
func (r *refresher) store(ctx context.Context, name string) (Store, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if st, ok := r.stores[name]; ok {
		return st, nil
	}
	var mine []agentapi.Secret
	for _, s := range r.cfg.Fetch.Secrets {
		if s.Store == name {
			mine = append(mine, s)
		}
	}
	st, err := stores[name](ctx, r.cfg.Fetch, mine)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	r.stores[name] = st
	r.log.Info("store opened", "store", name, "secrets", len(mine))
	if l, ok := st.(Leaser); ok && r.runCtx != nil {
		go func() {
			for {
				select {
				case <-r.runCtx.Done():
					return
				case <-l.Expiring():
					notify(r.expiring)
				}
			}
		}()
	}
	if rn, ok := st.(Renewer); ok && r.runCtx != nil {
		go r.keepAlive(r.runCtx, name, rn)
	}
	return st, nil
}

// keepAlive renews one store's credential, and its leases, until ctx
// ends.
func (r *refresher) keepAlive(ctx context.Context, name string, rn Renewer) {
	log := r.log.WithValues("store", name)
	backoff := r.cfg.MinBackoff
	var leased <-chan struct{} // nil, which never fires, but for a Leaser
	if l, ok := rn.(Leaser); ok {
		leased = l.Leased()
	}
	for {
		next, err := rn.Renew(ctx, log)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// A next still given is a lease's renewal, due whatever the
			// credential's fate.
			if wait := jitter(backoff); next <= 0 || wait < next {
				next = wait
			}
			backoff = min(2*backoff, r.cfg.MaxBackoff)
			log.Error(err, "store credential not renewed", "retryIn", next.Round(time.Millisecond).String())
		} else {
			backoff = r.cfg.MinBackoff
		}
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(next):
		case <-leased:
		}
	}
}

// close gives back what the stores hold (Vault's login token).
func (r *refresher) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	for name, st := range r.stores {
		if c, ok := st.(Closer); ok {
			c.Close(ctx, r.log.WithValues("store", name))
		}
	}
}
