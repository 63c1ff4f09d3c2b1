package credential

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/modelgate/modelgate/internal/problem"
)

// keyPair is a primary and secondary key; either may be empty.
type keyPair struct {
	primary, secondary Secret
}

func (p keyPair) get(slot int) Secret {
	if slot == 0 {
		return p.primary
	}
	return p.secondary
}

var slotLabels = [2]string{"primary key", "secondary key"}

// keySelector chooses which of two keys to present. It is sticky: it keeps
// presenting the key in use until that key is rejected, and then switches to
// the other one if that has not been rejected too.
//
// rememberAll selects what "rejected" means. For static keys (false) only the
// latest rejection counts, so rejecting the secondary switches back to the
// primary: the keys cannot change without a reload, and alternating is the
// only thing left to try. For fetched keys (true) every rejected value is
// remembered until a fetch shows it is gone (regenerated), so the source does
// not go back to a key the upstream already refused.
type keySelector struct {
	rememberAll bool

	pair     keyPair
	pairSeq  uint64
	slot     int
	rejected []Secret

	gen    uint64
	served Secret
	header Secret // bearer(served)
	label  string
}

// apply installs the pair fetched with sequence number seq, unless a newer
// one is installed already.
func (s *keySelector) apply(p keyPair, seq uint64) {
	if seq != 0 && seq <= s.pairSeq {
		return
	}
	s.pair, s.pairSeq = p, seq
	s.rejected = slices.DeleteFunc(s.rejected, func(v Secret) bool { return !v.Equal(p.primary) && !v.Equal(p.secondary) })
	s.choose()
}

func (s *keySelector) isRejected(v Secret) bool { return slices.ContainsFunc(s.rejected, v.Equal) }

// reject records that the upstream refused v.
func (s *keySelector) reject(v Secret) {
	if !s.rememberAll {
		s.rejected = append(s.rejected[:0], v)
		return
	}
	if !s.isRejected(v) {
		s.rejected = append(s.rejected, v)
	}
}

// choose picks the slot to present and bumps gen when the presented key
// changes.
func (s *keySelector) choose() {
	cur, other := s.pair.get(s.slot), s.pair.get(1-s.slot)
	switch {
	case cur.IsZero() && !other.IsZero():
		s.slot = 1 - s.slot
	case s.isRejected(cur) && !other.IsZero() && !s.isRejected(other):
		s.slot = 1 - s.slot
	}
	v := s.pair.get(s.slot)
	if s.gen == 0 || !v.Equal(s.served) || s.label != slotLabels[s.slot] {
		s.gen++
		s.served = v
		s.header = bearer(v)
		s.label = slotLabels[s.slot]
	}
}

func (s *keySelector) credential() Credential {
	return Credential{Value: s.served, Generation: s.gen, Label: s.label, header: s.header}
}

// stale reports whether c is no longer the credential being presented.
func (s *keySelector) stale(c Credential) bool { return c.Generation != s.gen }

// KeyOptions configures NewKey.
type KeyOptions struct {
	// Name is the upstream's name.
	Name string
	// Primary is the key presented first. Required.
	Primary Secret
	// Secondary, if set, is presented after the upstream rejects Primary.
	Secondary Secret
	// Logger receives a line when the source switches keys; nil discards.
	Logger *slog.Logger
	// RetryInterval is how often, at most, the source goes back to a key
	// that the upstream refused right after refusing the key in use (see
	// KeySource). Default: DefaultKeyRetry.
	RetryInterval time.Duration
	// Clock defaults to SystemClock(); only Now is used.
	Clock Clock
}

// DefaultKeyRetry is the default KeyOptions.RetryInterval.
const DefaultKeyRetry = 30 * time.Second

// KeySource is the key source: a static primary key and optional secondary
// key from the configuration. Rejected(primary) switches to the secondary,
// which then stays in use (sticky) until it is rejected in turn, which
// switches back. It never touches the network and is always ready. It is safe
// for concurrent use.
//
// Flapping (issue "Harden the edge", item 8): an upstream path may answer
// 401 for reasons of its own, to both keys. Rejected cannot see paths, so the
// source learns it from the order of events. The key switched to after a 401
// is on trial until the upstream accepts it (Accepted). If it is refused
// while on trial, both keys were refused one after the other (typically one
// request and its replay): the source switches back to the key it left and
// from then on keeps it when the upstream refuses it once after accepting it
// (so other paths go on using it; the caller gets no replay). It goes back to
// the other key only when the key in use is refused twice with no success in
// between, which is what a revoked key looks like, and then at most once per
// RetryInterval. The bound: a path that 401s for both keys causes at most 4
// switches at once (the first episode and one retry) and at most 2 per
// RetryInterval after that, however many calls it gets. The cost: once the
// source has seen both keys refused, a real revocation of the key in use
// fails one request before the source moves on, or, right after such a
// retry, up to RetryInterval of requests. Without Accepted calls every trial
// lasts until the next 401, and the bound still holds.
//
// Every switch logs one WARN line naming the keys by label, never by value;
// 401s that switch nothing log at debug level.
type KeySource struct {
	name  string
	log   *slog.Logger
	clock Clock
	retry time.Duration

	mu       sync.Mutex
	sel      keySelector
	switches uint64
	// refused says, per slot, that the key was refused since it was last
	// accepted.
	refused [2]bool
	// trial says the key in use replaced one that was refused, and has
	// been neither accepted nor refused since.
	trial bool
	// suspect says the other key was refused on trial (both keys were
	// refused one after the other) and has not been accepted since.
	suspect bool
	// lastRetry is when the source last went back to a suspect key.
	lastRetry time.Time

	// okGen is the generation last reported accepted, so that Accepted
	// takes the lock once per generation, not once per request.
	okGen atomic.Uint64
}

var _ ManagedSource = (*KeySource)(nil)

// NewKey returns the key source for o.
func NewKey(o KeyOptions) (*KeySource, error) {
	if o.Primary.IsZero() {
		return nil, problem.At("key", "missing: the upstream's key, as ${NAME} from the environment")
	}
	o.Logger = cmp.Or(o.Logger, slog.New(slog.DiscardHandler))
	o.Clock = cmp.Or(o.Clock, SystemClock())
	if o.RetryInterval <= 0 {
		o.RetryInterval = DefaultKeyRetry
	}
	s := &KeySource{
		name:  o.Name,
		log:   o.Logger.With(slog.String("source", o.Name), slog.String("type", "key")),
		clock: o.Clock,
		retry: o.RetryInterval,
	}
	s.sel.apply(keyPair{o.Primary, o.Secondary}, 1)
	return s, nil
}

// Credential returns the key in use. It never blocks.
func (s *KeySource) Credential(context.Context) (Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sel.credential(), nil
}

// Rejected reports a 401 to c. It switches to the other key, once for any
// number of callers reporting the same generation, unless the other key was
// refused too (see KeySource), and reports whether the key changed.
func (s *KeySource) Rejected(ctx context.Context, c Credential) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sel.stale(c) {
		return !s.sel.served.Equal(c.Value)
	}
	cur := s.sel.slot
	other := 1 - cur
	wasRefused := s.refused[cur]
	s.refused[cur] = true
	s.okGen.Store(0)
	if s.sel.pair.get(other).IsZero() {
		level := slog.LevelWarn
		if wasRefused {
			level = slog.LevelDebug // logged when this run of 401s began
		}
		s.log.LogAttrs(ctx, level, "upstream rejected key; no other key configured",
			slog.String("rejected", c.Label))
		return false
	}
	msg := "upstream rejected key; switched"
	switch now := s.clock.Now(); {
	case s.trial:
		// Both keys refused one after the other: go back to the key we
		// left, and hold on to it from now on.
		s.trial, s.suspect = false, true
		s.use(ctx, other, "upstream rejected both keys; switched back and keeps this key while it works", c.Label)
		return true
	case s.suspect && !wasRefused:
		// Accepted since its last 401: this one is about the request
		// (both keys got it before), not the key.
		s.log.LogAttrs(ctx, slog.LevelDebug, "upstream rejected key; kept: the other key was refused too",
			slog.String("rejected", c.Label))
		return false
	case s.suspect && now.Sub(s.lastRetry) < s.retry:
		s.log.LogAttrs(ctx, slog.LevelDebug, "upstream rejected key again; kept: the other key was retried recently",
			slog.String("rejected", c.Label), slog.Time("next_retry", s.lastRetry.Add(s.retry)))
		return false
	case s.suspect:
		s.lastRetry = now
		msg = "upstream rejected key twice in a row; switched back to retry the other key"
	}
	s.trial = true
	s.use(ctx, other, msg, c.Label)
	return true
}

// use switches to the key in slot and logs msg once. Callers hold s.mu.
func (s *KeySource) use(ctx context.Context, slot int, msg, rejected string) {
	s.sel.slot = slot
	s.sel.rejected = s.sel.rejected[:0]
	s.sel.choose()
	s.switches++
	s.log.LogAttrs(ctx, slog.LevelWarn, msg, slog.String("rejected", rejected), slog.String("now", s.sel.label))
}

// Accepted reports that the upstream took c (answered anything but 401).
// The proxy calls it after every such answer; it takes the lock only for
// the first report of a generation after a 401, so it is cheap. It ends a
// trial and lets the source tell a path's own 401s from a revoked key (see
// KeySource).
func (s *KeySource) Accepted(c Credential) {
	if s.okGen.Load() == c.Generation {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sel.stale(c) {
		return
	}
	s.refused[s.sel.slot] = false
	if s.trial {
		// The key switched to works: the one left behind is an ordinary
		// refused key again, not one refused together with this one.
		s.trial, s.suspect = false, false
	}
	s.okGen.Store(c.Generation)
}

// Status reports the key in use (by label, never by value). Refreshes
// counts switches between keys.
func (s *KeySource) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Status{Name: s.name, Type: "key", Ready: true, Label: s.sel.label, Refreshes: s.switches}
}

// Start does nothing: static keys need no fetching.
func (s *KeySource) Start() {}

// Close does nothing.
func (s *KeySource) Close() error { return nil }

// AMLKeysOptions configures NewAMLKeys. Exactly one of Service and Endpoint
// must be set.
type AMLKeysOptions struct {
	// Name is the upstream's name.
	Name string
	// Credential is the gateway's own Azure identity.
	Credential azcore.TokenCredential
	// Workspace holds the service or endpoint. Web services need Region or
	// APIHost.
	Workspace Workspace
	// Service is a web service (SDK v1, ACI/AKS) whose keys come from
	// POST {api_host}/modelmanagement/v1.0/.../services/{name}/listkeys.
	Service string
	// Endpoint is an online endpoint whose keys come from ARM
	// POST .../onlineEndpoints/{name}/listKeys.
	Endpoint string
	// APIVersion is the ARM api-version for Endpoint.
	// Default: DefaultAPIVersion.
	APIVersion string
	// Scope of the ARM token. Default: ScopeWorkspaceAPI for Service,
	// ScopeARM for Endpoint.
	Scope string
	// Interval is how often the keys are fetched again to follow
	// regenerations that no request has noticed yet. Default: 15m.
	Interval time.Duration
	// HTTPClient reaches the control plane. Default: a client with a 30s
	// timeout.
	HTTPClient *http.Client
	// Clock defaults to SystemClock().
	Clock Clock
	// Logger receives one line per fetch (never a key); nil discards.
	Logger *slog.Logger
	// Refresh tunes backoff, timeouts and rate limits.
	Refresh RefreshPolicy
}

var errNoKeys = errors.New("response has no primaryKey or secondaryKey")

// DefaultKeysInterval is how often aml_keys fetches the keys by default.
const DefaultKeysInterval = 15 * time.Minute

type listKeysResponse struct {
	PrimaryKey   string `json:"primaryKey"`
	SecondaryKey string `json:"secondaryKey"`
}

// AMLKeysSource is the aml_keys source: a service's or online endpoint's
// keys, fetched with the gateway's identity at Start and every Interval.
// Fetched keys do not expire, so a control plane outage never makes the
// source unavailable once it has keys.
//
// Rejected refetches the keys (one fetch for any number of callers reporting
// the same generation, at most once per RefreshPolicy.RejectInterval) to
// follow a regeneration, and if the refetched key in use still equals the
// rejected value it switches to the other key. The choice is sticky. It is
// safe for concurrent use.
type AMLKeysSource struct {
	engine[keyPair]

	mu  sync.Mutex
	sel keySelector
}

var _ ManagedSource = (*AMLKeysSource)(nil)

// NewAMLKeys returns the aml_keys source for o.
func NewAMLKeys(o AMLKeysOptions) (*AMLKeysSource, error) {
	var probs problem.List
	needCredential(o.Credential, &probs)
	if (o.Service == "") == (o.Endpoint == "") {
		probs.Add("", "set service (an ACI/AKS web service) or endpoint (an online endpoint), one of them")
	}
	var u, scope string
	var op operation
	if o.Service != "" {
		u = o.Workspace.serviceBase(o.Service, &probs) + "/listkeys"
		scope = cmp.Or(o.Scope, ScopeWorkspaceAPI)
		op = operation{
			name:   "list service keys",
			target: fmt.Sprintf("service %q", o.Service),
			action: "list web service keys (Microsoft.MachineLearningServices/workspaces/services/*/listkeys/action)",
		}
	} else {
		u = o.Workspace.endpointURL(o.Endpoint, "listKeys", o.APIVersion, &probs)
		scope = cmp.Or(o.Scope, ScopeARM)
		op = operation{
			name:   "list online endpoint keys",
			target: fmt.Sprintf("online endpoint %q", o.Endpoint),
			action: "list online endpoint keys (Microsoft.MachineLearningServices/workspaces/onlineEndpoints/listKeys/action)",
		}
	}
	if err := probs.Err(); err != nil {
		return nil, err
	}
	if o.Interval <= 0 {
		o.Interval = DefaultKeysInterval
	}
	cp := &controlPlane{o.Credential, scope, newHTTPClient(o.HTTPClient), o.Workspace.Name, o.Name}
	s := &AMLKeysSource{sel: keySelector{rememberAll: true}}
	s.r = newRefresher(refresherConfig[keyPair]{
		name: o.Name,
		kind: "aml_keys",
		fetch: func(ctx context.Context) (keyPair, lifetime, error) {
			var r listKeysResponse
			if err := cp.post(ctx, op, u, &r); err != nil {
				return keyPair{}, lifetime{}, err
			}
			if r.PrimaryKey == "" && r.SecondaryKey == "" {
				return keyPair{}, lifetime{}, fmt.Errorf("credential: %s: %w", op.name, errNoKeys)
			}
			return keyPair{Secret(r.PrimaryKey), Secret(r.SecondaryKey)}, lifetime{}, nil
		},
		interval: o.Interval,
		clock:    o.Clock,
		log:      o.Logger,
		pol:      o.Refresh,
	})
	return s, nil
}

// Credential returns the key in use, or waits (bounded by ctx) for the
// first fetch.
func (s *AMLKeysSource) Credential(ctx context.Context) (Credential, error) {
	e, err := s.r.get(ctx)
	if err != nil {
		return Credential{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sel.apply(e.val, e.seq)
	return s.sel.credential(), nil
}

// Rejected refetches the keys and switches keys as needed; see
// AMLKeysSource.
func (s *AMLKeysSource) Rejected(ctx context.Context, c Credential) bool {
	s.mu.Lock()
	// Catch up with a background refetch first: it may already have
	// replaced the rejected key, and refetching must start from the
	// newest pair or it would be skipped as "already newer".
	if e, _ := s.r.peek(); e.seq != 0 {
		s.sel.apply(e.val, e.seq)
	}
	if s.sel.gen == 0 {
		s.mu.Unlock()
		return false
	}
	if s.sel.stale(c) {
		changed := !s.sel.served.Equal(c.Value)
		s.mu.Unlock()
		return changed
	}
	s.sel.reject(c.Value)
	seen := s.sel.pairSeq
	s.mu.Unlock()

	e, _, err := s.r.refreshNow(ctx, seen)

	s.mu.Lock()
	defer s.mu.Unlock()
	if e.seq != 0 {
		s.sel.apply(e.val, e.seq)
	}
	s.sel.choose()
	changed := !s.sel.served.Equal(c.Value)
	attrs := []slog.Attr{slog.String("rejected", c.Label), slog.String("now", s.sel.label), slog.Bool("changed", changed)}
	if err != nil && !errors.Is(err, context.Canceled) {
		attrs = append(attrs, slog.String("refetch", err.Error()))
	}
	s.r.log.LogAttrs(ctx, slog.LevelWarn, "upstream rejected key", attrs...)
	return changed
}

// Status reports the fetch state and which key is in use (by label).
func (s *AMLKeysSource) Status() Status {
	st, cur := s.r.status()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur != nil {
		s.sel.apply(cur.val, cur.seq)
	}
	st.Label = s.sel.label
	return st
}
