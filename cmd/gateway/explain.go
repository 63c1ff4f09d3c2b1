package main

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
	"github.com/modelgate/modelgate/policy"
	"github.com/modelgate/modelgate/pool"
	"github.com/modelgate/modelgate/proxy"
)

type jwksFlag map[string]string

func (j jwksFlag) String() string { return "" }
func (j jwksFlag) Set(v string) error {
	name, file, ok := strings.Cut(v, "=")
	if !ok {
		name, file = "*", v
	}
	j[name] = file
	return nil
}

// cmdExplain answers "would this credential be admitted on this path, and
// why?" with the same policy code the gateway runs. Exit 0 when admitted,
// 1 when refused, 2 on bad usage.
func cmdExplain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("explain", stderr)
	path := configFlag(fs)
	reqPath := fs.String("path", "", "request `path`, e.g. /fraud/score (required)")
	host := fs.String("host", "", "request `host` (for host-specific routes)")
	token := fs.String("token", "", "access `token` to check; @FILE reads it from a file, - from stdin")
	key := fs.String("key", "", "API `key` to check; @FILE reads it from a file, - from stdin")
	at := fs.String("at", "", "evaluate time-based checks as of this RFC 3339 `instant` (default now)")
	jwks := jwksFlag{}
	fs.Var(jwks, "jwks", "use a saved key set instead of fetching: `FILE` for every provider, or NAME=FILE (repeatable); nothing is fetched")
	wait := fs.Duration("wait", 15*time.Second, "how long to wait for identity providers' keys when fetching them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" || *reqPath == "" || (*token == "") == (*key == "") {
		fmt.Fprintln(stderr, "usage: gateway explain -config FILE -path PATH [-host HOST] (-token T | -key K) [-jwks FILE] [-at TIME]")
		return exitError(2)
	}
	cred, err := readSecretArg(*token + *key)
	if err != nil {
		fmt.Fprintln(stderr, "gateway explain:", err)
		return exitError(2)
	}
	now := time.Now()
	if *at != "" {
		if now, err = time.Parse(time.RFC3339, *at); err != nil {
			fmt.Fprintln(stderr, "gateway explain: -at must be RFC 3339, like 2026-11-17T09:30:00Z")
			return exitError(2)
		}
	}
	// Only the secrets of what is explained are needed: an unset ${NAME}
	// loads as a placeholder that matches nothing, and is named below when
	// it could matter.
	cfg, err := config.LoadWith(*path, config.LoadOptions{LookupEnv: os.LookupEnv, AllowUnset: true})
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return exitError(2)
	}
	static := map[string][]byte{}
	for name, file := range jwks {
		b, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintln(stderr, "gateway explain:", err)
			return exitError(2)
		}
		static[name] = b
	}
	// Compile only: nothing is started, so nothing is fetched unless a
	// token's keys must be (below).
	deps := gateway.Deps{Now: func() time.Time { return now }, StaticJWKS: static}
	snap, err := gateway.Compile(cfg, deps, gateway.CompileOptions{DecideOnly: true})
	if err != nil {
		fmt.Fprintln(stderr, "gateway explain:", err)
		return exitError(2)
	}
	defer snap.Close()

	route := proxy.NewRouter(snap.Routes).MatchHost(*host, *reqPath)
	if route == nil {
		fmt.Fprintf(stdout, "route: none serves host %q path %s: the gateway answers 404 no_route\n", *host, *reqPath)
		return exitError(1)
	}
	r := findRoute(cfg, route.Name)
	hostDesc := r.Host
	if hostDesc == "" {
		hostDesc = "*"
	}
	fmt.Fprintf(stdout, "route:      %s (host %s, path %s) -> upstream %s\n", r.Name, hostDesc, r.Path, r.Upstream)
	if pl := route.Upstream.Pool; pl != nil {
		fmt.Fprintf(stdout, "backends:   %s\n", describeBackends(pl, cfg.Upstreams[r.Upstream]))
	}
	fmt.Fprintf(stdout, "evaluated:  as of %s\n", now.UTC().Format(time.RFC3339))
	if *token != "" {
		if !policy.LooksLikeJWT(cred) {
			fmt.Fprintln(stdout, "credential: not shaped like a JWT, so the gateway treats it as an API key")
		} else {
			fmt.Fprintf(stdout, "credential: access token (claims below are UNVERIFIED, as sent)\n%s", describeToken(cred))
		}
	} else {
		fmt.Fprintln(stdout, "credential: API key")
	}

	if *key != "" {
		for _, p := range sortedKeys(cfg.Unset()) {
			if strings.HasPrefix(p, "key_sets.") {
				fmt.Fprintf(stdout, "warning:    %s comes from ${%s}, which is not set here: that key cannot match\n", p, cfg.Unset()[p])
			}
		}
	}
	if *token != "" && len(jwks) == 0 {
		snap.Start(ctx) // a DecideOnly snapshot has nothing but identity providers to start
		wctx, cancel := context.WithTimeout(ctx, *wait)
		if err := snap.WaitIdentityProviders(wctx); err != nil {
			fmt.Fprintf(stdout, "warning:    identity provider keys not available after %s (%v); offline, pass -jwks FILE\n", *wait, err)
		}
		cancel()
	}

	var steps []policy.Step
	d := route.Policy.Evaluate(ctx, "Bearer "+cred, now, &steps)
	fmt.Fprintln(stdout, "rules:")
	if route.Policy.IsPublic() {
		fmt.Fprintln(stdout, "  public: true (everyone is admitted)")
	}
	for _, s := range steps {
		verdict := "refused"
		if s.Admitted {
			verdict = "ADMITTED"
		}
		fmt.Fprintf(stdout, "  %-40s %s (%s): %s\n", s.Rule, verdict, s.Reason, printable(s.Detail))
	}
	if d.Denial != nil {
		fmt.Fprintf(stdout, "decision:   REFUSED %d %s, reason %s\n            the caller is told: %s\n", d.Denial.Status, d.Denial.Code, d.Denial.Reason, printable(d.Denial.Message))
		return exitError(1)
	}
	fmt.Fprintf(stdout, "decision:   ADMITTED by %s as %s\n", d.Rule, printable(d.Identity.Key()))
	return nil
}

// describeBackends names the backends a pooled route would use, in the
// order selection prefers them (priority, then as configured), with their
// weights; weight-0 backends take no normal traffic and are named after
// them as the mirror target or standbys. This is configuration only:
// whether a backend's breaker is open is known to a running gateway
// (/readyz), not here.
func describeBackends(pl *pool.Pool, u *config.Upstream) string {
	order := make([]int, pl.Len())
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(pl.Priority(a), pl.Priority(b)) })
	var serving, standby []string
	mirror := -1
	if m := pl.Mirror(); m != nil {
		_, mirror = m.Target()
	}
	for _, i := range order {
		switch {
		case pl.Weight(i) > 0:
			serving = append(serving, fmt.Sprintf("%s (priority %d, weight %d)", pl.Name(i), pl.Priority(i), pl.Weight(i)))
		case i != mirror:
			standby = append(standby, pl.Name(i))
		}
	}
	s := strings.Join(serving, ", ")
	if len(standby) > 0 {
		s += "; standby (weight 0): " + strings.Join(standby, ", ")
	}
	if m := pl.Mirror(); m != nil && u != nil && u.Mirror != nil {
		s += fmt.Sprintf("; mirror %s %d%%", mirrorTarget(m), u.Mirror.Percent)
	}
	return s
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func findRoute(cfg *config.Config, name string) *config.Route {
	for _, r := range cfg.Routes {
		if r.Name == name {
			return r
		}
	}
	return nil
}

// readSecretArg reads a credential given on the command line, from a file
// (@FILE) or from stdin (-), so it need not appear in shell history.
func readSecretArg(v string) (string, error) {
	var b []byte
	var err error
	switch {
	case v == "-":
		b, err = io.ReadAll(io.LimitReader(os.Stdin, 64<<10))
	case strings.HasPrefix(v, "@"):
		b, err = os.ReadFile(v[1:])
	default:
		return strings.TrimSpace(v), nil
	}
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// describeToken prints a few claims of an unverified token for the reader.
func describeToken(tok string) string {
	parts := strings.Split(tok, ".")
	var hdr, claims map[string]any
	if b, err := base64.RawURLEncoding.DecodeString(parts[0]); err == nil {
		_ = json.Unmarshal(b, &hdr)
	}
	if len(parts) > 1 {
		if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil {
			_ = json.Unmarshal(b, &claims)
		}
	}
	var sb strings.Builder
	line := func(k string, v any) {
		if v != nil {
			fmt.Fprintf(&sb, "            %-6s %s\n", k, printable(fmt.Sprint(v)))
		}
	}
	line("alg", hdr["alg"])
	line("kid", hdr["kid"])
	for _, k := range []string{"iss", "aud", "ver", "tid", "oid", "appid", "azp", "roles", "scp", "groups"} {
		line(k, claims[k])
	}
	for _, k := range []string{"nbf", "exp"} {
		if f, ok := claims[k].(float64); ok {
			line(k, time.Unix(int64(f), 0).UTC().Format(time.RFC3339))
		} else {
			line(k, claims[k])
		}
	}
	return sb.String()
}

// printable escapes what came from a token (or a message quoting one) so
// that it cannot move the cursor, clear the terminal or start a line of its
// own: control and other non-graphic characters become Go escapes.
func printable(s string) string {
	clean := true
	for _, r := range s {
		if !unicode.IsGraphic(r) || r == utf8.RuneError {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}
