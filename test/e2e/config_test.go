package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// YAML fragments most test configurations share.
const (
	// upstreamKeyAuth authenticates to an upstream with upstreamKey.
	upstreamKeyAuth = `{ type: key, key: "${UPSTREAM_KEY}" }`
	// upstreamKeysAuth adds upstreamKey2 as the secondary key.
	upstreamKeysAuth = `{ type: key, key: "${UPSTREAM_KEY}", secondary_key: "${UPSTREAM_KEY_2}" }`
	// allowPartners is the allow rule admitting the partners key set.
	allowPartners = "key_set: partners"
)

// cfgBuilder writes the configuration one test feeds the real loader, so a
// test states only what it configures instead of carrying its own copy of
// the whole file. Each method adds to one section and returns the builder;
// fields are YAML lines ("max_body_bytes: 4KiB", flow mappings for nested
// values). Entries keep the order they were added in. The harness supplies
// the listeners' addresses (YAML).
type cfgBuilder struct {
	server      []string
	keySets     []namedFields
	providers   []namedFields
	credentials []namedFields
	upstreams   []namedFields
	routes      []string
}

// namedFields is one named entry of a map section: its YAML lines.
type namedFields struct {
	name   string
	fields []string
}

// newConfig starts an empty configuration: listeners only.
func newConfig() *cfgBuilder { return &cfgBuilder{} }

// Server adds fields to the server section (listen is the harness's).
func (b *cfgBuilder) Server(fields ...string) *cfgBuilder {
	b.server = append(b.server, fields...)
	return b
}

// KeySet adds key id to key set set (created on first use); fields are its
// other lines: "key: ${NAME}", "sha256: ...", "not_after: ...".
func (b *cfgBuilder) KeySet(set, id string, fields ...string) *cfgBuilder {
	entry := append([]string{"- id: " + id}, indentAll(fields, "  ")...)
	b.keySets = addFields(b.keySets, set, entry)
	return b
}

// Partners adds the key set most tests admit: partners, holding partnerKey
// as acme.
func (b *cfgBuilder) Partners() *cfgBuilder {
	return b.KeySet("partners", "acme", "key: ${PARTNER_KEY}")
}

// IdentityProvider adds identity provider name with fields.
func (b *cfgBuilder) IdentityProvider(name string, fields ...string) *cfgBuilder {
	b.providers = addFields(b.providers, name, fields)
	return b
}

// Credential adds the credentials entry name; def is its flow mapping.
func (b *cfgBuilder) Credential(name, def string) *cfgBuilder {
	b.credentials = append(b.credentials, namedFields{name: name, fields: []string{def}})
	return b
}

// Upstream adds upstream name at url, authenticating with auth (a flow
// mapping); fields are its other lines (headers, identity_headers).
func (b *cfgBuilder) Upstream(name, url, auth string, fields ...string) *cfgBuilder {
	lines := append([]string{"url: " + strconv.Quote(url)}, fields...)
	b.upstreams = append(b.upstreams, namedFields{name: name, fields: append(lines, "auth: "+auth)})
	return b
}

// PoolUpstream adds upstream name as a pool: lines are its YAML as written
// under the name (backends:, retry:, ...), each line relative to it.
func (b *cfgBuilder) PoolUpstream(name string, lines ...string) *cfgBuilder {
	b.upstreams = append(b.upstreams, namedFields{name: name, fields: lines})
	return b
}

// Route adds route name from path to upstream, on any host; each of allow
// is one rule's fields ("key_set: partners").
func (b *cfgBuilder) Route(name, path, upstream string, allow ...string) *cfgBuilder {
	return b.route(name, "", path, upstream, false, allow)
}

// HostRoute is Route for requests to host only.
func (b *cfgBuilder) HostRoute(host, name, path, upstream string, allow ...string) *cfgBuilder {
	return b.route(name, host, path, upstream, false, allow)
}

// PublicRoute adds a route that admits everyone (public: true).
func (b *cfgBuilder) PublicRoute(name, path, upstream string) *cfgBuilder {
	return b.route(name, "", path, upstream, true, nil)
}

func (b *cfgBuilder) route(name, host, path, upstream string, public bool, allow []string) *cfgBuilder {
	var r strings.Builder
	r.WriteString("  - name: " + name + "\n")
	if host != "" {
		r.WriteString("    host: " + host + "\n")
	}
	r.WriteString("    path: " + path + "\n    upstream: " + upstream + "\n")
	if public {
		r.WriteString("    public: true\n")
	}
	if len(allow) > 0 {
		r.WriteString("    allow: [{ " + strings.Join(allow, " }, { ") + " }]\n")
	}
	b.routes = append(b.routes, r.String())
	return b
}

// YAML renders the configuration with the public and admin listeners on
// listen and admin.
func (b *cfgBuilder) YAML(listen, admin string) string {
	var out strings.Builder
	out.WriteString("server:\n  listen: " + strconv.Quote(listen) + "\n")
	for _, f := range b.server {
		out.WriteString("  " + f + "\n")
	}
	out.WriteString("admin:\n  listen: " + strconv.Quote(admin) + "\n")
	writeSection(&out, "key_sets", b.keySets)
	writeSection(&out, "identity_providers", b.providers)
	if len(b.credentials) > 0 {
		out.WriteString("credentials:\n")
		for _, c := range b.credentials {
			out.WriteString("  " + c.name + ": " + c.fields[0] + "\n")
		}
	}
	writeSection(&out, "upstreams", b.upstreams)
	if len(b.routes) > 0 {
		out.WriteString("routes:\n" + strings.Join(b.routes, ""))
	}
	return out.String()
}

// writeSection writes a map section of entries with nested lines; nothing
// when there are none.
func writeSection(out *strings.Builder, section string, entries []namedFields) {
	if len(entries) == 0 {
		return
	}
	out.WriteString(section + ":\n")
	for _, e := range entries {
		out.WriteString("  " + e.name + ":\n")
		for _, f := range e.fields {
			out.WriteString("    " + f + "\n")
		}
	}
}

// addFields appends fields to entry name, adding the entry if it is new.
func addFields(entries []namedFields, name string, fields []string) []namedFields {
	for i := range entries {
		if entries[i].name == name {
			entries[i].fields = append(entries[i].fields, fields...)
			return entries
		}
	}
	return append(entries, namedFields{name: name, fields: fields})
}

func indentAll(lines []string, prefix string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = prefix + l
	}
	return out
}

// sha256Hex is a key's hex SHA-256, for sha256: entries.
func sha256Hex(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// yamlList renders items as a flow sequence of quoted strings.
func yamlList(items ...string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
