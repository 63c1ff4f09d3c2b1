package gateway

import (
	"bytes"
	_ "embed"
	"html/template"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/pool"
)

//go:embed status.html
var statusHTML string

// statusTemplate renders the status page. html/template escapes every value
// for its context, so a hostile reason or upstream error text stays text.
var statusTemplate = template.Must(template.New("status").Parse(statusHTML))

// statusRefresh is how often the page reloads itself, in seconds.
const statusRefresh = 5

// statusCSP allows the page nothing but its own inline style: no script, no
// fetch, no frame, no form.
const statusCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// statusPage is what the template shows. Every value is a configuration
// name, a state, a count, a time or what /readyz already reports: never a
// key, token, secret, identity or URL query.
type statusPage struct {
	Refresh       int
	Version       string
	ConfigFile    string
	Ready         bool
	NotReady      []string // why not ready
	Mode          string
	TLS           string
	ReloadsOK     uint64
	ReloadsFailed uint64
	Rendered      string

	Routes      []statusRoute
	Backends    []statusBackend
	Credentials []statusCredential
	Providers   []statusProvider
	LimitsStore *statusStore
	Usage       *statusUsage // nil when metrics are off
}

type statusRoute struct {
	Name, Host, Path, Upstream string
	Admits                     string // key sets and identity providers, or "public"
	State                      string // ok, degraded, down
	Reasons                    []string
}

type statusBackend struct {
	Upstream, Name      string
	Priority, Weight    int
	Breaker             string // closed, open, half-open
	Badge               string // ok, degraded, down
	Available           bool
	ConsecutiveFailures int
	OpenUntil           string
	LastError           string
	LastErrorAt         string
}

type statusCredential struct {
	Name, Type, Label   string
	Ready               bool
	ValidUntil          string
	NextRefresh         string
	LastRefresh         string
	ConsecutiveFailures int
	LastError           string
	LastErrorAt         string
}

type statusProvider struct {
	Name, Type  string
	Ready       bool
	KeyIDs      []string
	Keys        int
	LastRefresh string
	LastSuccess string
	Failures    uint64
	LastError   string
}

type statusStore struct {
	State, Store, OnError string
	Failures              uint64
	LastError             string
	Since                 string
}

type statusUsage struct {
	Full   bool
	Since  string
	Error  string // the counters could not be read
	Routes []statusUsageRow
}

type statusUsageRow struct {
	Route                     string
	Requests, ServerErrors    uint64
	Errors                    uint64 // requests that ended with a gateway error code
	Codes                     []statusCode
	Prompt, Completion, Total uint64
}

type statusCode struct {
	Code  string
	Count uint64
}

// serveStatus renders the status page into a buffer first, so a template
// error answers a JSON 500 rather than half a page.
// HEAD renders too, so its headers (Content-Length) are the GET's.
func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request) {
	page := s.statusPage()
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, page); err != nil {
		s.log.Error("status page failed to render", slog.String("error", err.Error()))
		writeJSON(w, http.StatusInternalServerError, map[string]map[string]string{
			"error": {"code": "internal_error", "message": "the status page could not be rendered"},
		})
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(buf.Bytes())
	}
}

// statusPage gathers what the page shows from the serving snapshot.
func (s *Server) statusPage() statusPage {
	snap := s.snap.Load()
	rep := s.readiness(snap)
	now := s.deps.Now
	if now == nil {
		now = time.Now
	}
	at := now().UTC()
	ok, failed := s.ReloadCounts()
	p := statusPage{
		Refresh: statusRefresh, ConfigFile: snap.Config.File, Ready: rep.Ready, Mode: rep.Mode, TLS: rep.TLS,
		ReloadsOK: ok, ReloadsFailed: failed, Rendered: at.Format("2006-01-02 15:04:05 UTC"),
	}
	if s.deps.Metrics != nil {
		p.Version = s.deps.Metrics.Version()
	}

	serving := false
	for _, r := range snap.Config.Routes {
		rs := rep.Routes[r.Name]
		serving = serving || rs.State != RouteDown
		p.Routes = append(p.Routes, statusRoute{Name: r.Name, Host: r.Host, Path: r.Path, Upstream: r.Upstream,
			Admits: admits(r), State: rs.State, Reasons: rs.Reasons})
	}
	if !rep.Ready {
		for _, c := range rep.Starting {
			p.NotReady = append(p.NotReady, c+" has not made its first attempt yet")
		}
		if !serving {
			p.NotReady = append(p.NotReady, "no route can serve")
		}
		if rep.Mode == config.ReadinessStrict {
			for _, c := range rep.Credentials {
				if !c.Ready {
					p.NotReady = append(p.NotReady, "strict: upstream "+c.Name+" credential is not valid")
				}
			}
			for _, ip := range rep.IdentityProviders {
				if !ip.Ready {
					p.NotReady = append(p.NotReady, "strict: identity provider "+ip.Name+" has no keys")
				}
			}
		}
		if rep.TLS != "" && rep.TLS != "ready" {
			p.NotReady = append(p.NotReady, "TLS: "+rep.TLS)
		}
	}

	for _, name := range sortedNames(snap.pools) {
		pl := snap.pools[name]
		for i := range pl.Len() {
			b := pl.State(i)
			row := statusBackend{Upstream: name, Name: b.Name, Priority: b.Priority, Weight: b.Weight,
				Breaker: b.State.String(), Available: b.Available, ConsecutiveFailures: b.ConsecutiveFailures,
				LastError: b.LastError, LastErrorAt: stamp(b.LastErrorAt, at)}
			switch {
			case b.State == pool.Open || (!b.Available && b.Weight > 0):
				row.Badge = RouteDown
			case b.State == pool.HalfOpen:
				row.Badge = RouteDegraded
			default:
				row.Badge = RouteOK
			}
			if b.State == pool.Open {
				row.OpenUntil = stamp(b.OpenUntil, at)
			}
			p.Backends = append(p.Backends, row)
		}
	}

	for _, c := range rep.Credentials {
		p.Credentials = append(p.Credentials, statusCredential{Name: c.Name, Type: c.Type, Label: c.Label, Ready: c.Ready,
			ValidUntil: stamp(c.ValidUntil, at), NextRefresh: stamp(c.NextRefresh, at), LastRefresh: stamp(c.LastRefresh, at),
			ConsecutiveFailures: c.ConsecutiveFailures, LastError: c.LastError, LastErrorAt: stamp(c.LastErrorAt, at)})
	}

	for _, ip := range rep.IdentityProviders {
		row := statusProvider{Name: ip.Name, Type: ip.Type, Ready: ip.Ready, Keys: ip.Keys,
			LastRefresh: stamp(ip.LastRefresh, at), LastSuccess: stamp(ip.LastSuccess, at), LastError: ip.LastError}
		kids := map[string]bool{}
		for _, src := range ip.Sources {
			row.Failures += src.Failures
			for _, k := range src.KeyIDs {
				kids[k] = true
			}
		}
		row.KeyIDs = slices.Sorted(maps.Keys(kids))
		p.Providers = append(p.Providers, row)
	}

	if st := rep.LimitsStore; st != nil {
		p.LimitsStore = &statusStore{State: st.State, Store: st.Store, OnError: st.OnError, Failures: st.Failures,
			LastError: st.LastError, Since: stamp(st.Since, at)}
	}

	if s.window != nil {
		p.Usage = s.usage(snap, at)
	}
	return p
}

// usage reads the last hour from the window, afresh, for every configured
// route.
func (s *Server) usage(snap *Snapshot, at time.Time) *statusUsage {
	hour, err := s.window.LastHour()
	if err != nil {
		s.log.Warn("status page: metrics could not be read", slog.String("error", err.Error()))
		return &statusUsage{Error: "the counters could not be read"}
	}
	u := &statusUsage{Full: hour.Full, Since: stamp(hour.Since, at)}
	for _, r := range snap.Config.Routes {
		ru := hour.Routes[r.Name]
		row := statusUsageRow{Route: r.Name, Requests: ru.Requests, ServerErrors: ru.ServerErrors, Errors: ru.ErrorCount(),
			Prompt: ru.Tokens["prompt"], Completion: ru.Tokens["completion"], Total: ru.Tokens["total"]}
		for _, code := range sortedNames(ru.Errors) {
			row.Codes = append(row.Codes, statusCode{Code: code, Count: ru.Errors[code]})
		}
		u.Routes = append(u.Routes, row)
	}
	return u
}

// admits names what a route lets in: its key sets and identity providers
// (configuration names only, never a user, group or app it matches).
func admits(r *config.Route) string {
	if r.Public {
		return "public"
	}
	var out []string
	for _, a := range r.Allow {
		switch {
		case a.KeySet != "":
			out = append(out, "key set "+a.KeySet)
		case a.IdentityProvider != "":
			out = append(out, "identity provider "+a.IdentityProvider)
		}
	}
	return strings.Join(slices.Compact(out), ", ")
}

// stamp shows t in UTC with how far it is from now; "" for the zero time.
func stamp(t, now time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := t.Sub(now)
	rel := "now"
	switch {
	case d >= time.Second:
		rel = "in " + roughly(d)
	case d <= -time.Second:
		rel = roughly(-d) + " ago"
	}
	return t.UTC().Format("2006-01-02 15:04:05") + " UTC (" + rel + ")"
}

// roughly rounds d for people: seconds under two minutes, then minutes,
// hours, days.
func roughly(d time.Duration) string {
	switch {
	case d < 2*time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s"
	case d < 2*time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d"
}

// newWindow returns the last-hour recorder over deps.Metrics, nil without
// metrics.
func newWindow(deps Deps) *metrics.Window {
	if deps.Metrics == nil {
		return nil
	}
	return deps.Metrics.NewWindow(deps.Now)
}
