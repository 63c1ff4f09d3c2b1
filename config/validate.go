package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/modelgate/modelgate/internal/guid"
	"github.com/modelgate/modelgate/internal/httpx"
)

// MinKeyLength is the shortest static key accepted, in bytes.
const MinKeyLength = 16

type validator struct {
	d   *decoder
	cfg *Config
}

// errAt records a problem at a field path, using the line of the nearest
// field that was written in the file.
func (v *validator) errAt(p, format string, args ...any) {
	v.d.errs = append(v.d.errs, &FieldError{File: v.d.file, Line: lineOf(v.d.lines, p), Path: p, Msg: scrub(v.d.secretValues, fmt.Sprintf(format, args...))})
}

// lineOf returns the line of the field at path p, or of its nearest
// enclosing field that was written in the file.
func lineOf(lines map[string]int, p string) int {
	for q := p; ; {
		if l, ok := lines[q]; ok {
			return l
		}
		i := strings.LastIndexAny(q, ".[")
		if i < 0 {
			return 0
		}
		q = q[:i]
	}
}

func sortedKeys[M ~map[string]V, V any](m M) []string { return slices.Sorted(maps.Keys(m)) }

func (v *validator) validate() {
	v.server()
	v.admin()
	v.log()
	v.keySets()
	v.credentials()
	v.identityProviders()
	v.upstreams()
	v.routes()
}

func (v *validator) server() {
	s := &v.cfg.Server
	if s.Listen == "" {
		s.Listen = DefaultListen
		if s.TLS != nil {
			s.Listen = DefaultListenTLS
		}
	} else if err := httpx.HostPort(s.Listen); err != nil {
		v.errAt("server.listen", "%v", err)
	}
	if t := s.TLS; t != nil && t.HTTPListen != "" {
		// The rest of server.tls is validated where it is used (tlsserve).
		if err := httpx.HostPort(t.HTTPListen); err != nil {
			v.errAt("server.tls.http_listen", "%v", err)
		} else if t.HTTPListen == s.Listen {
			v.errAt("server.tls.http_listen", "is the same address as server.listen")
		}
	}
	if s.MaxBodyBytes == 0 {
		s.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if s.BufferBodyBytes == 0 {
		s.BufferBodyBytes = min(DefaultBufferBodyBytes, s.MaxBodyBytes)
	}
	if s.BufferBodyBytes > s.MaxBodyBytes {
		v.errAt("server.buffer_body_bytes", "is larger than max_body_bytes (%d): make it at most that", s.MaxBodyBytes)
	}
	setDefault(&s.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	setDefault(&s.ReadBodyTimeout, DefaultReadBodyTimeout)
	if s.ReadBodyTimeout < 0 {
		v.errAt("server.read_body_timeout", "must be positive: a duration such as 30s")
	}
	setDefault(&s.IdleTimeout, DefaultIdleTimeout)
	setDefault(&s.ShutdownTimeout, DefaultShutdownTimeout)
	setDefault(&s.Upstream.DialTimeout, DefaultDialTimeout)
	setDefault(&s.Upstream.ResponseHeaderTimeout, DefaultResponseHeader)
	setDefault(&s.Upstream.IdleConnTimeout, DefaultIdleConnTimeout)
	if s.Upstream.MaxIdleConnsPerHost == 0 {
		s.Upstream.MaxIdleConnsPerHost = DefaultMaxIdlePerHost
	} else if s.Upstream.MaxIdleConnsPerHost < 0 {
		v.errAt("server.upstream.max_idle_conns_per_host", "must be positive")
	}
	v.credentialHeaders()
	for i, raw := range s.TrustedProxies {
		p := fmt.Sprintf("server.trusted_proxies[%d]", i)
		if pfx, err := netip.ParsePrefix(raw); err == nil {
			s.TrustedPrefixes = append(s.TrustedPrefixes, pfx.Masked())
		} else if a, err := netip.ParseAddr(raw); err == nil {
			s.TrustedPrefixes = append(s.TrustedPrefixes, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else {
			v.errAt(p, "%q is not a CIDR or an IP address (write 10.0.0.0/8 or 10.1.2.3)", raw)
		}
	}
}

func setDefault(d *Duration, def interface{ Nanoseconds() int64 }) {
	if *d == 0 {
		*d = Duration(def.Nanoseconds())
	}
}

func (v *validator) admin() {
	a := &v.cfg.Admin
	if a.Listen == "" {
		a.Listen = DefaultAdminListen
	} else if err := httpx.HostPort(a.Listen); err != nil {
		v.errAt("admin.listen", "%v", err)
	}
	switch a.Readiness {
	case "":
		a.Readiness = ReadinessRoutes
	case ReadinessRoutes, ReadinessStrict:
	default:
		v.errAt("admin.readiness", "%q is not a readiness mode: write routes (the default) or strict", a.Readiness)
	}
	if a.Listen == v.cfg.Server.Listen && !strings.HasSuffix(a.Listen, ":0") { // port 0: each picks a free port
		v.errAt("admin.listen", "is the same address as server.listen: the admin endpoints must never be on the public listener")
	}
}

func (v *validator) log() {
	l := &v.cfg.Log
	switch l.Level {
	case "":
		l.Level = "info"
	case "debug", "info", "warn", "error":
	default:
		v.errAt("log.level", "%q is not a level: write debug, info, warn or error", l.Level)
	}
	switch l.Format {
	case "":
		l.Format = "json"
	case "json", "text":
	default:
		v.errAt("log.format", "%q is not a format: write json or text", l.Format)
	}
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// uniqueName checks a required name of a list entry (a route, a backend)
// and that no other entry in seen has it.
func (v *validator) uniqueName(p, kind, n string, seen map[string]bool) {
	switch {
	case n == "":
		v.errAt(p, "missing: every %s needs a name (it appears in logs and metrics)", kind)
	case seen[n]:
		v.name(p, kind, n)
		v.errAt(p, "%s name %q is used twice", kind, n)
	default:
		v.name(p, kind, n)
	}
	seen[n] = true
}

func (v *validator) name(p, kind, n string) {
	if !namePattern.MatchString(n) {
		v.errAt(p, "%s name %q must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", kind, n)
	}
}

func (v *validator) keySets() {
	type owner struct{ set, id string }
	byHash := map[[32]byte]owner{}
	for _, name := range sortedKeys(v.cfg.KeySets) {
		set := v.cfg.KeySets[name]
		sp := "key_sets." + name
		v.name(sp, "key set", name)
		if len(set) == 0 {
			v.errAt(sp, "key set has no keys: add one (gateway keys new prints one) or remove the set")
		}
		ids := map[string]bool{}
		for i, k := range set {
			p := fmt.Sprintf("%s[%d]", sp, i)
			if k == nil {
				v.errAt(p, "empty entry: give it an id and a sha256")
				continue
			}
			if k.ID == "" {
				v.errAt(p+".id", "missing: every key needs an id (it names the caller in logs)")
			} else if ids[k.ID] {
				v.errAt(p+".id", "id %q appears twice in this key set", k.ID)
			}
			ids[k.ID] = true
			switch {
			case k.SHA256 != "" && k.Key != "":
				v.errAt(p, "set sha256 or key, not both")
				continue
			case k.SHA256 != "":
				b, err := hex.DecodeString(strings.ToLower(k.SHA256))
				if err != nil || len(b) != sha256.Size {
					v.errAt(p+".sha256", "must be 64 hex digits (the SHA-256 of the key; gateway keys new prints it)")
					continue
				}
				copy(k.Hash[:], b)
			case k.Key != "":
				if !v.d.secret[p+".key"] {
					v.errAt(p+".key", "a plaintext key must not be written in the file: use key: ${NAME} from the environment, or sha256")
					continue
				}
				if len(k.Key) < MinKeyLength {
					v.errAt(p+".key", "the key from the environment is shorter than %d characters: use gateway keys new", MinKeyLength)
					continue
				}
				k.Hash = sha256.Sum256([]byte(k.Key))
			default:
				v.errAt(p, "missing sha256 (or key from the environment)")
				continue
			}
			if prev, dup := byHash[k.Hash]; dup {
				v.errAt(p, "the same key is also key_sets.%s id %q: give every holder its own key", prev.set, prev.id)
				continue
			}
			byHash[k.Hash] = owner{name, k.ID}
		}
	}
}

// credentials checks what only the file can tell: names, and that secrets
// come from the environment. Everything else about a credential is
// validated where it is built (credential/azcred).
func (v *validator) credentials() {
	for _, name := range sortedKeys(v.cfg.Credentials) {
		c := v.cfg.Credentials[name]
		p := "credentials." + name
		v.name(p, "credential", name)
		if c == nil {
			v.errAt(p, "empty credential: set its type")
			continue
		}
		v.fromEnv(p+".client_secret", c.ClientSecret)
		v.fromEnv(p+".certificate_password", c.CertificatePassword)
	}
}

// fromEnv refuses a secret written in the file itself.
func (v *validator) fromEnv(p string, val Secret) {
	if val != "" && !v.d.secret[p] {
		v.errAt(p, "must come from the environment (${NAME}), not be written in the file")
	}
}

// identityProviders checks names only; the settings are validated where
// they are used (package idp).
func (v *validator) identityProviders() {
	for _, name := range sortedKeys(v.cfg.IdentityProviders) {
		p := "identity_providers." + name
		v.name(p, "identity provider", name)
		if v.cfg.IdentityProviders[name] == nil {
			v.errAt(p, "empty identity provider: set its type")
		}
	}
}

var identityHeaderKeys = map[string]bool{"key_id": true, "oid": true, "tid": true, "appid": true, "sub": true, "provider": true, "method": true}

func (v *validator) upstreams() {
	for _, name := range sortedKeys(v.cfg.Upstreams) {
		u := v.cfg.Upstreams[name]
		p := "upstreams." + name
		v.name(p, "upstream", name)
		if u == nil {
			v.errAt(p, "empty upstream: set url and auth")
			continue
		}
		if len(u.Backends) > 0 {
			v.pool(p, u)
			continue
		}
		u.Parsed = v.endpoint(p, u.URL, u.Headers, u.IdentityHeaders, &u.Auth)
		for _, f := range []struct {
			field string
			set   bool
		}{{"retry", u.Retry != nil}, {"circuit_breaker", u.CircuitBreaker != nil}, {"health_check", u.HealthCheck != nil}, {"mirror", u.Mirror != nil}} {
			if f.set {
				v.errAt(p+"."+f.field, "applies to a pool: list backends instead of url and auth, or remove it")
			}
		}
	}
}

// pool checks an upstream with backends: each backend as an upstream of
// its own, names, and the mirror's reference. Priorities, weights and the
// retry, breaker and health-check settings are validated where they are
// used (package pool).
func (v *validator) pool(p string, u *Upstream) {
	if u.URL != "" || u.Headers != nil || u.IdentityHeaders != nil || u.Auth.Type != "" {
		v.errAt(p, "an upstream has url and auth, or backends (each with its own url and auth), not both")
	}
	names := map[string]bool{}
	for i, b := range u.Backends {
		bp := fmt.Sprintf("%s.backends[%d]", p, i)
		if b == nil {
			v.errAt(bp, "empty backend: give it a name, url and auth")
			continue
		}
		v.uniqueName(bp+".name", "backend", b.Name, names)
		b.Parsed = v.endpoint(bp, b.URL, b.Headers, b.IdentityHeaders, &b.Auth)
	}
	if m := u.Mirror; m != nil && m.Backend != "" && !names[m.Backend] {
		if _, ok := v.cfg.Upstreams[m.Backend]; !ok {
			v.errAt(p+".mirror.backend", "%q is neither a backend of this upstream nor another upstream", m.Backend)
		}
	}
}

// endpoint checks one place requests go: url, headers, identity headers and
// auth, at path p; it returns the parsed url.
func (v *validator) endpoint(p, rawURL string, headers, identityHeaders map[string]string, auth *Auth) (parsed *url.URL) {
	if rawURL == "" {
		v.errAt(p+".url", "missing: the scoring URI (for example http://fraud-1234.westeurope.azurecontainer.io)")
	} else if pu, err := httpx.UpstreamURL(rawURL); err != nil {
		v.errAt(p+".url", "%v", err)
	} else {
		parsed = pu
	}
	for _, h := range sortedKeys(headers) {
		hp := p + ".headers." + h
		switch {
		case !httpx.ValidHeaderName(h):
			v.errAt(hp, "%q is not a valid header name", h)
		case httpx.IsHopByHop(h):
			v.errAt(hp, "%s is a hop-by-hop header and cannot be forwarded", http.CanonicalHeaderKey(h))
		case strings.EqualFold(h, "Authorization"):
			v.errAt(hp, "the upstream's Authorization comes from auth: configure the credential there")
		case strings.EqualFold(h, "Host"):
			v.errAt(hp, "Host is set from the upstream url")
		case !httpx.ValidHeaderValue(headers[h]):
			v.errAt(hp, "value contains control characters")
		}
	}
	seen := map[string]bool{}
	for _, k := range sortedKeys(identityHeaders) {
		hp := p + ".identity_headers." + k
		h := identityHeaders[k]
		switch {
		case !identityHeaderKeys[k]:
			v.errAt(hp, "%q is not an identity field: use key_id, oid, tid, appid, sub, provider or method", k)
		case !httpx.ValidHeaderName(h) || httpx.IsHopByHop(h) || strings.EqualFold(h, "Authorization") || strings.EqualFold(h, "Host"):
			v.errAt(hp, "%q cannot be used as an identity header name", h)
		case seen[http.CanonicalHeaderKey(h)]:
			v.errAt(hp, "header %s is used twice", h)
		}
		seen[http.CanonicalHeaderKey(h)] = true
		if slices.ContainsFunc(sortedKeys(headers), func(k string) bool { return strings.EqualFold(k, h) }) {
			v.errAt(hp, "header %s is also in headers: pick one", h)
		}
	}
	v.auth(p+".auth", auth)
	return parsed
}

// authFields lists, per auth type, the optional fields it reads; the
// others must be empty. What each type needs (service, endpoint, workspace,
// credential, key) is checked where the credential is built (package
// credential).
var authFields = map[string][]string{
	AuthNone:             {"refresh_interval"},
	AuthKey:              {"key", "secondary_key", "refresh_interval"},
	AuthAMLKeys:          {"credential", "workspace", "service", "endpoint", "refresh_interval"},
	AuthAMLServiceToken:  {"credential", "workspace", "service"},
	AuthAMLEndpointToken: {"credential", "workspace", "endpoint"},
	AuthAADToken:         {"credential", "scope"},
}

// auth checks the file's own rules for an auth section: fields that do not
// belong to the type, secrets from the environment, and names that must
// exist. It fills the type's defaults.
func (v *validator) auth(p string, a *Auth) {
	allowed, ok := authFields[a.Type]
	switch {
	case a.Type == "":
		v.errAt(p+".type", "missing: write key, aml_keys, aml_service_token, aml_endpoint_token, aad_token or none")
		return
	case !ok:
		v.errAt(p+".type", "%q is not an auth type: write key, aml_keys, aml_service_token, aml_endpoint_token, aad_token or none", a.Type)
		return
	}
	if a.Type == AuthKey {
		v.fromEnv(p+".key", a.Key)
		v.fromEnv(p+".secondary_key", a.SecondaryKey)
	}
	for _, f := range []struct {
		field string
		set   bool
	}{{"key", a.Key != ""}, {"secondary_key", a.SecondaryKey != ""}, {"credential", a.Credential != ""}, {"workspace", a.Workspace != nil},
		{"service", a.Service != ""}, {"endpoint", a.Endpoint != ""}, {"scope", a.Scope != ""}, {"refresh_interval", a.RefreshInterval != 0}} {
		if f.set && !slices.Contains(allowed, f.field) {
			v.errAt(p+"."+f.field, "is not used by auth type %s: remove it", a.Type)
		}
	}
	if _, ok := v.cfg.Credentials[a.Credential]; a.Credential != "" && !ok && slices.Contains(allowed, "credential") {
		v.errAt(p+".credential", "no credential named %q in credentials: (have: %s)", a.Credential, strings.Join(sortedKeys(v.cfg.Credentials), ", "))
	}
	switch a.Type {
	case AuthAMLKeys:
		if a.RefreshInterval == 0 {
			a.RefreshInterval = Duration(DefaultKeysRefresh)
		}
	case AuthAADToken:
		if a.Scope == "" {
			a.Scope = DefaultAADScope
		}
	}
}

func (v *validator) routes() {
	if len(v.cfg.Routes) == 0 {
		v.errAt("routes", "no routes: add at least one (see config.example.yaml)")
	}
	names := map[string]bool{}
	type hp struct{ host, path string }
	seen := map[hp]string{}
	for i, r := range v.cfg.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if r == nil {
			v.errAt(p, "empty route: give it a name, path, upstream and allow")
			continue
		}
		v.uniqueName(p+".name", "route", r.Name, names)
		if r.Host != "" {
			r.Host = strings.ToLower(r.Host)
			if strings.HasPrefix(r.Host, "*.") {
				v.errAt(p+".host", "%q: wildcard hosts are not supported: list one route per host, or omit host to match any", r.Host)
			} else if !validHost(r.Host) {
				v.errAt(p+".host", "%q is not a host name (no scheme, port or path)", r.Host)
			}
		}
		switch {
		case r.Path == "":
			v.errAt(p+".path", "missing: a path prefix such as /fraud, or / for everything")
		case !strings.HasPrefix(r.Path, "/"):
			v.errAt(p+".path", "%q must start with /", r.Path)
		case strings.ContainsAny(r.Path, "?#%\\") || path.Clean(r.Path) != r.Path:
			v.errAt(p+".path", "%q must be a clean path: no trailing slash, '..', '//', '%%', '?' or '#'", r.Path)
		default:
			k := hp{r.Host, r.Path}
			if prev, dup := seen[k]; dup {
				v.errAt(p+".path", "route %q already serves host %q path %s", prev, r.Host, r.Path)
			}
			seen[k] = r.Name
		}
		if r.Upstream == "" {
			v.errAt(p+".upstream", "missing: name one of the upstreams: entries")
		} else if _, ok := v.cfg.Upstreams[r.Upstream]; !ok {
			v.errAt(p+".upstream", "no upstream named %q (have: %s)", r.Upstream, strings.Join(sortedKeys(v.cfg.Upstreams), ", "))
		}
		switch {
		case r.Public && len(r.Allow) > 0:
			v.errAt(p+".public", "a public route admits everyone, so its allow list would never apply: remove one of them")
		case !r.Public && len(r.Allow) == 0:
			v.errAt(p+".allow", "missing: list who may call this route (key_set or identity_provider rules), or set public: true to admit everyone")
		}
		for j, a := range r.Allow {
			v.allowRule(fmt.Sprintf("%s.allow[%d]", p, j), a)
		}
		if r.CORS != nil {
			v.cors(p+".cors", r.CORS)
		}
	}
}

// CredentialHeaderNames are the headers server.credential_headers may list,
// in canonical form.
var CredentialHeaderNames = []string{"Authorization", "Api-Key", "Ocp-Apim-Subscription-Key"}

// credentialHeaders checks server.credential_headers, puts each in
// canonical form and defaults it to [Authorization].
func (v *validator) credentialHeaders() {
	s := &v.cfg.Server
	if len(s.CredentialHeaders) == 0 {
		s.CredentialHeaders = []string{"Authorization"}
		return
	}
	seen := map[string]bool{}
	for i, h := range s.CredentialHeaders {
		p := fmt.Sprintf("server.credential_headers[%d]", i)
		c := http.CanonicalHeaderKey(h)
		if !slices.Contains(CredentialHeaderNames, c) {
			v.errAt(p, "%q is not a credential header: write Authorization, api-key or Ocp-Apim-Subscription-Key", h)
			continue
		}
		if seen[c] {
			v.errAt(p, "%s is listed twice", c)
		}
		seen[c] = true
		s.CredentialHeaders[i] = c
	}
}

// cors checks a route's cors section and fills its defaults.
func (v *validator) cors(p string, c *CORS) {
	if len(c.AllowOrigins) == 0 {
		v.errAt(p+".allow_origins", "missing: list the origins allowed to call this route (https://app.contoso.com), or \"*\" for any")
	}
	for i, o := range c.AllowOrigins {
		op := fmt.Sprintf("%s.allow_origins[%d]", p, i)
		if o == "*" {
			if len(c.AllowOrigins) > 1 {
				v.errAt(op, "\"*\" allows every origin: list it alone, or list exact origins only")
			}
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
			v.errAt(op, "%q is not an origin: write scheme://host[:port] with no path, such as https://app.contoso.com", o)
			continue
		}
		if lo := strings.ToLower(o); lo != o {
			v.errAt(op, "%q: write the origin in lower case, as browsers send it (%s)", o, lo)
		}
	}
	if c.AllowHeaders == nil {
		c.AllowHeaders = []string{"Content-Type"}
	}
	if c.ExposeHeaders == nil {
		c.ExposeHeaders = []string{"X-Request-Id", "Retry-After"}
	}
	for _, hs := range [...]struct {
		field string
		list  []string
	}{{"allow_headers", c.AllowHeaders}, {"expose_headers", c.ExposeHeaders}} {
		for i, h := range hs.list {
			if !httpx.ValidHeaderName(h) {
				v.errAt(fmt.Sprintf("%s.%s[%d]", p, hs.field, i), "%q is not a header name", h)
			}
		}
	}
	if c.MaxAge < 0 {
		v.errAt(p+".max_age", "must not be negative")
	}
}

func (v *validator) allowRule(p string, a *AllowRule) {
	if a == nil {
		v.errAt(p, "empty rule: write key_set: NAME or identity_provider: NAME")
		return
	}
	claims := []struct {
		field string
		m     Match
	}{{"roles", a.Roles}, {"scopes", a.Scopes}, {"groups", a.Groups}, {"users", a.Users}, {"apps", a.Apps}, {"tenants", a.Tenants}}
	switch {
	case a.KeySet != "" && a.IdentityProvider != "":
		v.errAt(p, "a rule names key_set or identity_provider, not both: split it into two rules")
	case a.KeySet != "":
		if _, ok := v.cfg.KeySets[a.KeySet]; !ok {
			v.errAt(p+".key_set", "no key set named %q (have: %s)", a.KeySet, strings.Join(sortedKeys(v.cfg.KeySets), ", "))
		}
		for _, c := range claims {
			if c.m.IsSet() {
				v.errAt(p+"."+c.field, "claim conditions apply to identity_provider rules, not key sets")
			}
		}
	case a.IdentityProvider != "":
		if _, ok := v.cfg.IdentityProviders[a.IdentityProvider]; !ok {
			v.errAt(p+".identity_provider", "no identity provider named %q (have: %s)", a.IdentityProvider, strings.Join(sortedKeys(v.cfg.IdentityProviders), ", "))
		}
		for _, c := range []struct {
			field string
			m     Match
		}{{"groups", a.Groups}, {"users", a.Users}, {"tenants", a.Tenants}} {
			for _, id := range append(append([]string(nil), c.m.AnyOf...), c.m.AllOf...) {
				if !guid.Valid(id) {
					v.errAt(p+"."+c.field, "%q is not an object id GUID (%s are matched by id, never by name)", id, c.field)
					break
				}
			}
		}
	default:
		v.errAt(p, "a rule must name key_set or identity_provider")
	}
}

var hostPattern = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func validHost(h string) bool { return len(h) <= 253 && hostPattern.MatchString(strings.ToLower(h)) }
