package config

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/modelgate/modelgate/internal/guid"
	"github.com/modelgate/modelgate/internal/httpx"
	"github.com/modelgate/modelgate/ratelimit"
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
	line := 0
	for q := p; ; {
		if l, ok := v.d.lines[q]; ok {
			line = l
			break
		}
		i := strings.LastIndexAny(q, ".[")
		if i < 0 {
			break
		}
		q = q[:i]
	}
	v.d.errs = append(v.d.errs, &FieldError{File: v.d.file, Line: line, Path: p, Msg: fmt.Sprintf(format, args...)})
}

func sortedKeys[M ~map[string]V, V any](m M) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

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
	} else if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		v.errAt("server.listen", "%q is not host:port (write \":8443\" or \"127.0.0.1:8080\")", s.Listen)
	}
	if s.TLS != nil {
		v.tls(s.TLS)
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

func (v *validator) tls(t *TLS) {
	switch t.Mode {
	case "acme":
		if len(t.Domains) == 0 {
			v.errAt("server.tls.domains", "mode acme needs at least one domain")
		}
		for i, dom := range t.Domains {
			if !validHost(dom) {
				v.errAt(fmt.Sprintf("server.tls.domains[%d]", i), "%q is not a DNS name", dom)
			}
		}
		if t.CA != "" {
			if _, err := parseHTTPSURL(t.CA, false); err != nil {
				v.errAt("server.tls.ca", "%v", err)
			}
		}
		if t.CertFile != "" || t.KeyFile != "" || t.ReloadInterval != 0 {
			v.errAt("server.tls", "cert_file, key_file and reload_interval belong to mode files, not acme")
		}
		if t.HTTPChallenge != nil && t.TLSALPNChallenge != nil && !*t.HTTPChallenge && !*t.TLSALPNChallenge {
			v.errAt("server.tls", "both ACME challenges are off: leave http_challenge or tls_alpn_challenge on")
		}
		if (t.HTTPChallenge == nil || *t.HTTPChallenge) && t.HTTPListen == "" && t.TLSALPNChallenge != nil && !*t.TLSALPNChallenge {
			v.errAt("server.tls.http_listen", "the HTTP-01 challenge is the only one on, so it needs http_listen (port 80)")
		}
	case "files":
		if t.CertFile == "" || t.KeyFile == "" {
			v.errAt("server.tls", "mode files needs both cert_file and key_file")
		}
		if len(t.Domains) > 0 || t.Email != "" || t.CA != "" || t.CARoot != "" || t.Storage != "" || t.HTTPChallenge != nil || t.TLSALPNChallenge != nil {
			v.errAt("server.tls", "domains, email, ca, ca_root, storage and the challenge switches belong to mode acme, not files")
		}
	case "":
		v.errAt("server.tls.mode", "missing: write acme or files (or remove tls for plain HTTP)")
		return
	default:
		v.errAt("server.tls.mode", "%q is not a TLS mode: write acme or files", t.Mode)
		return
	}
	if t.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(t.HTTPListen); err != nil {
			v.errAt("server.tls.http_listen", "%q is not host:port (write \":80\")", t.HTTPListen)
		} else if t.HTTPListen == v.cfg.Server.Listen {
			v.errAt("server.tls.http_listen", "is the same address as server.listen")
		}
	}
}

func (v *validator) admin() {
	a := &v.cfg.Admin
	if a.Listen == "" {
		a.Listen = DefaultAdminListen
	} else if _, _, err := net.SplitHostPort(a.Listen); err != nil {
		v.errAt("admin.listen", "%q is not host:port (write \"127.0.0.1:9090\")", a.Listen)
	}
	if a.Listen == v.cfg.Server.Listen {
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

func (v *validator) credentials() {
	for _, name := range sortedKeys(v.cfg.Credentials) {
		c := v.cfg.Credentials[name]
		p := "credentials." + name
		v.name(p, "credential", name)
		if c == nil {
			v.errAt(p, "empty credential: set its type")
			continue
		}
		need := func(field, val, why string) {
			if val == "" {
				v.errAt(p+"."+field, "missing: %s", why)
			}
		}
		forbid := func(field string, set bool) {
			if set {
				v.errAt(p+"."+field, "is not used by credential type %s: remove it", c.Type)
			}
		}
		switch c.Type {
		case CredClientSecret:
			need("tenant_id", c.TenantID, "the service principal's tenant")
			need("client_id", c.ClientID, "the service principal's application (client) id")
			need("client_secret", string(c.ClientSecret), "the client secret, as ${NAME} from the environment")
			if c.ClientSecret != "" && !v.d.secret[p+".client_secret"] {
				v.errAt(p+".client_secret", "must come from the environment (${NAME}), not be written in the file")
			}
			forbid("certificate_path", c.CertificatePath != "")
			forbid("resource_id", c.ResourceID != "")
			forbid("token_file_path", c.TokenFilePath != "")
		case CredClientCertificate:
			need("tenant_id", c.TenantID, "the service principal's tenant")
			need("client_id", c.ClientID, "the service principal's application (client) id")
			need("certificate_path", c.CertificatePath, "a PEM or PFX file with the certificate and private key")
			if c.CertificatePassword != "" && !v.d.secret[p+".certificate_password"] {
				v.errAt(p+".certificate_password", "must come from the environment (${NAME}), not be written in the file")
			}
			forbid("client_secret", c.ClientSecret != "")
			forbid("resource_id", c.ResourceID != "")
			forbid("token_file_path", c.TokenFilePath != "")
		case CredManagedIdentity:
			if c.ClientID != "" && c.ResourceID != "" {
				v.errAt(p, "set client_id or resource_id to pick a user-assigned identity, not both")
			}
			forbid("tenant_id", c.TenantID != "")
			forbid("client_secret", c.ClientSecret != "")
			forbid("certificate_path", c.CertificatePath != "")
			forbid("token_file_path", c.TokenFilePath != "")
			forbid("authority_host", c.AuthorityHost != "")
		case CredWorkloadIdentity:
			forbid("client_secret", c.ClientSecret != "")
			forbid("certificate_path", c.CertificatePath != "")
			forbid("resource_id", c.ResourceID != "")
		case CredAzureCLI, CredDefault:
			forbid("client_secret", c.ClientSecret != "")
			forbid("certificate_path", c.CertificatePath != "")
			forbid("token_file_path", c.TokenFilePath != "")
		case "":
			v.errAt(p+".type", "missing: write client_secret, client_certificate, managed_identity, workload_identity, azure_cli or default")
		default:
			v.errAt(p+".type", "%q is not a credential type: write client_secret, client_certificate, managed_identity, workload_identity, azure_cli or default", c.Type)
		}
		switch c.Cloud {
		case "", "public", "usgovernment", "china":
		default:
			v.errAt(p+".cloud", "%q is not a cloud: write public, usgovernment or china", c.Cloud)
		}
		if c.AuthorityHost != "" {
			if _, err := parseHTTPSURL(c.AuthorityHost, false); err != nil {
				v.errAt(p+".authority_host", "%v (azidentity accepts only https authorities)", err)
			}
		}
	}
}

var regionPattern = regexp.MustCompile(`^[a-z0-9]+$`)

// IsGUID reports whether s is a GUID such as a tenant or object id.
func IsGUID(s string) bool { return guid.Valid(s) }

func (v *validator) identityProviders() {
	for _, name := range sortedKeys(v.cfg.IdentityProviders) {
		ip := v.cfg.IdentityProviders[name]
		p := "identity_providers." + name
		v.name(p, "identity provider", name)
		if ip == nil {
			v.errAt(p, "empty identity provider: set its type")
			continue
		}
		forbid := func(field string, set bool) {
			if set {
				v.errAt(p+"."+field, "is not used by identity provider type %s: remove it", ip.Type)
			}
		}
		switch ip.Type {
		case IdPAzureAD:
			switch t := ip.TenantID; {
			case t == "":
				v.errAt(p+".tenant_id", "missing: the directory (tenant) id GUID, or organizations/common with allowed_tenants")
			case t == "common" || t == "organizations":
				if len(ip.AllowedTenants) == 0 {
					v.errAt(p+".allowed_tenants", "tenant_id %s accepts tokens from any tenant: list the tenant ids to admit", t)
				}
			case !IsGUID(t):
				v.errAt(p+".tenant_id", "%q is not a tenant id GUID (find it with az account show --query tenantId)", t)
			default:
				if len(ip.AllowedTenants) > 0 {
					v.errAt(p+".allowed_tenants", "only applies to tenant_id organizations or common")
				}
			}
			for i, t := range ip.AllowedTenants {
				if !IsGUID(t) {
					v.errAt(fmt.Sprintf("%s.allowed_tenants[%d]", p, i), "%q is not a tenant id GUID", t)
				}
			}
			switch ip.Cloud {
			case "", "public", "usgovernment", "china":
			default:
				v.errAt(p+".cloud", "%q is not a cloud: write public, usgovernment or china", ip.Cloud)
			}
			if ip.AuthorityHost != "" {
				if _, err := parseHTTPSURL(ip.AuthorityHost, true); err != nil {
					v.errAt(p+".authority_host", "%v", err)
				}
			}
			forbid("issuer", ip.Issuer != "")
			forbid("discovery_url", ip.DiscoveryURL != "")
			forbid("jwks_uri", ip.JWKSURI != "")
		case IdPOIDC:
			if ip.Issuer == "" {
				v.errAt(p+".issuer", "missing: the exact issuer (iss) of the tokens to accept")
			} else if u, err := url.Parse(ip.Issuer); err != nil || u.Scheme == "" || u.Host == "" {
				v.errAt(p+".issuer", "%q is not an absolute URL", ip.Issuer)
			}
			for _, f := range []struct{ field, val string }{{"discovery_url", ip.DiscoveryURL}, {"jwks_uri", ip.JWKSURI}} {
				if f.val != "" {
					if _, err := parseHTTPSURL(f.val, true); err != nil {
						v.errAt(p+"."+f.field, "%v", err)
					}
				}
			}
			if ip.DiscoveryURL == "" && ip.JWKSURI == "" && ip.Issuer != "" {
				if _, err := parseHTTPSURL(ip.Issuer, true); err != nil {
					v.errAt(p+".issuer", "keys would be discovered from the issuer, but %v; set jwks_uri or discovery_url", err)
				}
			}
			forbid("tenant_id", ip.TenantID != "")
			forbid("allowed_tenants", len(ip.AllowedTenants) > 0)
			forbid("cloud", ip.Cloud != "")
			forbid("authority_host", ip.AuthorityHost != "")
		case "":
			v.errAt(p+".type", "missing: write azure_ad or oidc")
			continue
		default:
			v.errAt(p+".type", "%q is not an identity provider type: write azure_ad or oidc", ip.Type)
			continue
		}
		if len(ip.Audiences) == 0 {
			v.errAt(p+".audiences", "missing: list the aud values to accept (the App ID URI and/or client id)")
		}
		for i, a := range ip.Audiences {
			if strings.TrimSpace(a) == "" {
				v.errAt(fmt.Sprintf("%s.audiences[%d]", p, i), "empty audience")
			}
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
		if u.URL == "" {
			v.errAt(p+".url", "missing: the scoring URI (for example http://fraud-1234.westeurope.azurecontainer.io)")
		} else if pu, err := url.Parse(u.URL); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			v.errAt(p+".url", "%q is not an absolute http or https URL", u.URL)
		} else if pu.User != nil || pu.RawQuery != "" || pu.Fragment != "" || pu.Opaque != "" {
			v.errAt(p+".url", "must not carry credentials, a query or a fragment: put credentials in auth")
		} else {
			pu.Path = strings.TrimSuffix(pu.Path, "/")
			pu.RawPath = ""
			u.Parsed = pu
		}
		for _, h := range sortedKeys(u.Headers) {
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
			case !httpx.ValidHeaderValue(u.Headers[h]):
				v.errAt(hp, "value contains control characters")
			}
		}
		seen := map[string]bool{}
		for _, k := range sortedKeys(u.IdentityHeaders) {
			hp := p + ".identity_headers." + k
			h := u.IdentityHeaders[k]
			switch {
			case !identityHeaderKeys[k]:
				v.errAt(hp, "%q is not an identity field: use key_id, oid, tid, appid, sub, provider or method", k)
			case !httpx.ValidHeaderName(h) || httpx.IsHopByHop(h) || strings.EqualFold(h, "Authorization") || strings.EqualFold(h, "Host"):
				v.errAt(hp, "%q cannot be used as an identity header name", h)
			case seen[http.CanonicalHeaderKey(h)]:
				v.errAt(hp, "header %s is used twice", h)
			}
			seen[http.CanonicalHeaderKey(h)] = true
			if _, clash := u.Headers[h]; clash {
				v.errAt(hp, "header %s is also in headers: pick one", h)
			}
		}
		v.auth(p+".auth", &u.Auth)
	}
}

func (v *validator) auth(p string, a *Auth) {
	forbid := func(field string, set bool) {
		if set {
			v.errAt(p+"."+field, "is not used by auth type %s: remove it", a.Type)
		}
	}
	fromEnv := func(field string, val Secret) {
		if val != "" && !v.d.secret[p+"."+field] {
			v.errAt(p+"."+field, "must come from the environment (${NAME}), not be written in the file")
		}
	}
	credential := func() {
		if a.Credential == "" {
			v.errAt(p+".credential", "missing: name one of the credentials: entries (the gateway's Azure identity)")
		} else if _, ok := v.cfg.Credentials[a.Credential]; !ok {
			v.errAt(p+".credential", "no credential named %q in credentials: (have: %s)", a.Credential, strings.Join(sortedKeys(v.cfg.Credentials), ", "))
		}
	}
	workspace := func(needRegion bool) {
		w := a.Workspace
		if w == nil {
			v.errAt(p+".workspace", "missing: subscription_id, resource_group and name of the Azure ML workspace")
			return
		}
		wp := p + ".workspace"
		for _, f := range []struct{ field, val string }{{"subscription_id", w.SubscriptionID}, {"resource_group", w.ResourceGroup}, {"name", w.Name}} {
			if f.val == "" {
				v.errAt(wp+"."+f.field, "missing")
			} else if strings.ContainsAny(f.val, "/?#% ") {
				v.errAt(wp+"."+f.field, "%q contains characters not allowed in an Azure resource name", f.val)
			}
		}
		if needRegion && w.Region == "" && w.APIHost == "" {
			v.errAt(wp+".region", "missing: the workspace's region (or api_host)")
		}
		if w.Region != "" && !regionPattern.MatchString(w.Region) {
			v.errAt(wp+".region", "%q is not an Azure region name like westeurope", w.Region)
		}
		for _, f := range []struct{ field, val string }{{"api_host", w.APIHost}, {"management_host", w.ManagementHost}} {
			if f.val != "" {
				if _, err := parseHTTPSURL(f.val, true); err != nil {
					v.errAt(wp+"."+f.field, "%v", err)
				}
			}
		}
	}
	switch a.Type {
	case AuthNone:
		forbid("key", a.Key != "")
		forbid("secondary_key", a.SecondaryKey != "")
		forbid("credential", a.Credential != "")
		forbid("workspace", a.Workspace != nil)
		forbid("service", a.Service != "")
		forbid("endpoint", a.Endpoint != "")
		forbid("scope", a.Scope != "")
	case AuthKey:
		if a.Key == "" {
			v.errAt(p+".key", "missing: the upstream's key, as ${NAME} from the environment")
		}
		fromEnv("key", a.Key)
		fromEnv("secondary_key", a.SecondaryKey)
		forbid("credential", a.Credential != "")
		forbid("workspace", a.Workspace != nil)
		forbid("service", a.Service != "")
		forbid("endpoint", a.Endpoint != "")
		forbid("scope", a.Scope != "")
	case AuthAMLKeys, AuthAMLServiceToken, AuthAMLEndpointToken, AuthAADToken:
		forbid("key", a.Key != "")
		forbid("secondary_key", a.SecondaryKey != "")
		credential()
		switch a.Type {
		case AuthAMLKeys:
			if (a.Service == "") == (a.Endpoint == "") {
				v.errAt(p, "set service (an ACI/AKS web service) or endpoint (an online endpoint), one of them")
			}
			workspace(a.Service != "")
			forbid("scope", a.Scope != "")
			if a.RefreshInterval == 0 {
				a.RefreshInterval = Duration(DefaultKeysRefresh)
			}
		case AuthAMLServiceToken:
			if a.Service == "" {
				v.errAt(p+".service", "missing: the AKS web service name")
			}
			workspace(true)
			forbid("endpoint", a.Endpoint != "")
			forbid("scope", a.Scope != "")
		case AuthAMLEndpointToken:
			if a.Endpoint == "" {
				v.errAt(p+".endpoint", "missing: the online endpoint name")
			}
			workspace(false)
			forbid("service", a.Service != "")
			forbid("scope", a.Scope != "")
		case AuthAADToken:
			if a.Scope == "" {
				a.Scope = DefaultAADScope
			}
			forbid("workspace", a.Workspace != nil)
			forbid("service", a.Service != "")
			forbid("endpoint", a.Endpoint != "")
		}
		if a.Type != AuthAMLKeys {
			forbid("refresh_interval", a.RefreshInterval != 0)
		}
	case "":
		v.errAt(p+".type", "missing: write key, aml_keys, aml_service_token, aml_endpoint_token, aad_token or none")
	default:
		v.errAt(p+".type", "%q is not an auth type: write key, aml_keys, aml_service_token, aml_endpoint_token, aad_token or none", a.Type)
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
		if r.Name == "" {
			v.errAt(p+".name", "missing: every route needs a name (it appears in logs and metrics)")
		} else {
			v.name(p+".name", "route", r.Name)
			if names[r.Name] {
				v.errAt(p+".name", "route name %q is used twice", r.Name)
			}
			names[r.Name] = true
		}
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
		if r.RateLimit != nil {
			v.rateLimit(p+".rate_limit", r.RateLimit)
		}
	}
}

func (v *validator) rateLimit(p string, rl *RateLimit) {
	o := &rl.Options
	var err error
	if rl.PerIdentity != "" {
		if o.PerIdentity, err = ratelimit.ParseRate(rl.PerIdentity); err != nil {
			v.errAt(p+".per_identity", "%v", err)
		}
	}
	if rl.Overall != "" {
		if o.Overall, err = ratelimit.ParseRate(rl.Overall); err != nil {
			v.errAt(p+".overall", "%v", err)
		}
	}
	if rl.PerIdentity == "" && rl.Overall == "" {
		v.errAt(p, "set per_identity and/or overall (N/s, N/m or N/h), or remove rate_limit")
	}
	for _, f := range []struct {
		field string
		n     int
		rate  string
	}{{"burst", rl.Burst, rl.PerIdentity}, {"overall_burst", rl.OverallBurst, rl.Overall}, {"max_identities", rl.MaxIdentities, rl.PerIdentity}} {
		if f.n < 0 {
			v.errAt(p+"."+f.field, "must be positive")
		} else if f.n > 0 && f.rate == "" {
			v.errAt(p+"."+f.field, "has no rate to apply to: set the matching rate too")
		}
	}
	o.PerIdentityBurst, o.OverallBurst, o.MaxIdentities = rl.Burst, rl.OverallBurst, rl.MaxIdentities
	if _, err := ratelimit.New(*o); err != nil && len(v.d.errs) == 0 {
		v.errAt(p, "%v", err)
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
				if !IsGUID(id) {
					v.errAt(p+"."+c.field, "%q is not an object id GUID (%s are matched by id, never by name)", id, c.field)
					break
				}
			}
		}
	default:
		v.errAt(p, "a rule must name key_set or identity_provider")
	}
}

var hostPattern = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)

func validHost(h string) bool { return len(h) <= 253 && hostPattern.MatchString(strings.ToLower(h)) }

// parseHTTPSURL accepts an absolute https URL; plain http is accepted only for
// loopback hosts when allowLoopbackHTTP is set (tests and local fakes).
func parseHTTPSURL(s string, allowLoopbackHTTP bool) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("%q is not an absolute https URL", s)
	}
	if u.Scheme == "http" && !(allowLoopbackHTTP && httpx.IsLoopbackHost(u.Hostname())) {
		return nil, fmt.Errorf("%q must use https (plain http is allowed only for loopback addresses)", s)
	}
	return u, nil
}
