package gateway

import (
	"context"
	"time"

	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/pool"
	"github.com/modelgate/modelgate/ratelimit"

	"github.com/modelgate/modelgate/config"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/idp"
)

// Readiness is the /readyz report. It names each component and its state
// and never contains a credential.
type Readiness struct {
	Ready bool `json:"ready"`
	// Mode is admin.readiness: routes (the default) or strict.
	Mode string `json:"mode"`
	// Starting lists the components that have not made their first attempt
	// yet; /readyz is not ready until it is empty.
	Starting []string `json:"starting,omitempty"`
	// Routes is each route's state: ok, degraded (it serves, but some of
	// what it relies on is unavailable) or down (it cannot serve).
	Routes            map[string]RouteState `json:"routes"`
	IdentityProviders []idp.Status          `json:"identity_providers"`
	Credentials       []credential.Status   `json:"upstream_credentials"`
	// TLS is "ready", what the certificate manager still waits for, or
	// absent without TLS.
	TLS string `json:"tls,omitempty"`
	// LimitsStore is limits.store's state, absent without one. A degraded
	// store never makes the gateway unready: requests follow its on_error.
	LimitsStore *ratelimit.StoreStatus `json:"limits_store,omitempty"`
}

// Route states in Readiness.
const (
	RouteOK       = "ok"
	RouteDegraded = "degraded"
	RouteDown     = "down"
)

// RouteState is one route's readiness.
type RouteState struct {
	State   string   `json:"state"`
	Reasons []string `json:"reasons,omitempty"`
}

// Readiness reports the snapshot's state. In mode routes it is ready once
// every identity provider and credential source has made its first attempt
// (successful or not) and at least one route can serve, so one broken
// upstream never takes every replica's healthy routes out of service. In
// mode strict it is ready only when every provider has keys and every
// credential is valid.
func (s *Snapshot) Readiness() Readiness {
	rep := Readiness{Ready: true, Mode: s.Config.Admin.Readiness, Routes: map[string]RouteState{},
		Credentials: []credential.Status{}, IdentityProviders: []idp.Status{}}
	if rep.Mode == "" {
		rep.Mode = config.ReadinessRoutes
	}
	strict := rep.Mode == config.ReadinessStrict
	providers := map[string]idp.Status{}
	for _, name := range sortedNames(s.providers) {
		st := s.providers[name].Status()
		providers[name] = st
		rep.IdentityProviders = append(rep.IdentityProviders, st)
		if !attempted(st) {
			rep.Starting = append(rep.Starting, "identity provider "+name)
		}
		if strict && !st.Ready {
			rep.Ready = false
		}
	}
	sources := map[string]credential.Status{}
	for _, name := range sortedNames(s.sources) {
		st := s.sources[name].Status()
		sources[name] = st
		rep.Credentials = append(rep.Credentials, st)
		if !st.Ready && st.Refreshes == 0 && st.Failures == 0 {
			rep.Starting = append(rep.Starting, "upstream "+name+" credential")
		}
		if strict && !st.Ready {
			rep.Ready = false
		}
	}
	serving := false
	for _, r := range s.Config.Routes {
		rs := routeState(r, providers, sources)
		if pl := s.pools[r.Upstream]; pl != nil {
			poolState(&rs, r.Upstream, pl)
		}
		rep.Routes[r.Name] = rs
		serving = serving || rs.State != RouteDown
	}
	if s.store != nil {
		st := s.store.Status()
		rep.LimitsStore = &st
	}
	if len(rep.Starting) > 0 || !serving {
		rep.Ready = false
	}
	return rep
}

// poolState judges a route's pool: down when no backend that takes traffic
// (weight above 0) is available, degraded when some are not.
func poolState(rs *RouteState, upstream string, pl *pool.Pool) {
	serving, total := 0, 0
	for i := range pl.Len() {
		b := pl.State(i)
		if b.Weight == 0 {
			continue
		}
		total++
		if b.Available {
			serving++
			continue
		}
		reason := "upstream " + upstream + " backend " + b.Name + ": unavailable"
		if b.State == pool.Open {
			reason += " (breaker open until " + b.OpenUntil.UTC().Format(time.RFC3339) + ")"
		}
		if b.LastError != "" {
			reason += ": " + b.LastError
		}
		rs.Reasons = append(rs.Reasons, reason)
	}
	switch {
	case serving == 0 && total > 0:
		rs.State = RouteDown
	case serving < total && rs.State == RouteOK:
		rs.State = RouteDegraded
	}
}

// Mirrors reports every pool's mirror, for metrics.
func (s *Snapshot) Mirrors() []metrics.MirrorState {
	var out []metrics.MirrorState
	for _, name := range sortedNames(s.pools) {
		if m := s.pools[name].Mirror(); m != nil {
			out = append(out, metrics.MirrorState{Upstream: name, Dropped: m.Dropped(), InFlight: m.InFlight()})
		}
	}
	return out
}

// Backends reports every pool member's breaker, for metrics.
func (s *Snapshot) Backends() []metrics.BackendState {
	var out []metrics.BackendState
	for _, name := range sortedNames(s.pools) {
		pl := s.pools[name]
		for i := range pl.Len() {
			b := pl.State(i)
			out = append(out, metrics.BackendState{Upstream: name, Backend: b.Name, Breaker: b.State.String(), Available: b.Available})
		}
	}
	return out
}

// attempted reports whether every source of the provider has tried once.
func attempted(st idp.Status) bool {
	for _, src := range st.Sources {
		if src.LastRefresh.IsZero() && src.Refreshes == 0 && src.Failures == 0 {
			return false
		}
	}
	return true
}

// routeState judges one route: down when its upstream has no valid
// credential or none of its rules can admit anyone (every rule names an
// identity provider without keys); degraded when some rules cannot.
func routeState(r *config.Route, providers map[string]idp.Status, sources map[string]credential.Status) RouteState {
	var rs RouteState
	down := false
	if st, ok := sources[r.Upstream]; ok && !st.Ready {
		down = true
		reason := "upstream " + r.Upstream + ": credential unavailable"
		if st.LastError != "" {
			reason += ": " + st.LastError
		}
		rs.Reasons = append(rs.Reasons, reason)
	}
	usable := 0
	for _, a := range r.Allow {
		if a.IdentityProvider == "" {
			usable++
			continue
		}
		if st := providers[a.IdentityProvider]; st.Ready {
			usable++
		} else {
			rs.Reasons = append(rs.Reasons, "identity provider "+a.IdentityProvider+": no keys")
		}
	}
	switch {
	case down || (!r.Public && usable == 0):
		rs.State = RouteDown
	case len(rs.Reasons) > 0:
		rs.State = RouteDegraded
	default:
		rs.State = RouteOK
	}
	return rs
}

// WaitIdentityProviders waits until every identity provider has keys, or ctx
// ends.
func (s *Snapshot) WaitIdentityProviders(ctx context.Context) error {
	for _, p := range s.providers {
		if err := p.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}
