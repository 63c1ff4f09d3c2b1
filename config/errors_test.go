package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// errEnv is the environment for TestErrorSites. Every value starts with
// "s3cr3t", so one substring check proves no error quotes any of them.
var errEnv = map[string]string{
	"UPSTREAM_KEY": "s3cr3t-upstream-key-0123456789",
	"CLIENT_KEY":   "s3cr3t-client-key-0123456789",
	"SHORT_KEY":    "s3cr3t-short", // shorter than MinKeyLength
	"LEAK":         "s3cr3t-leak",  // put into fields that are not secrets
}

const envMarker = "s3cr3t"

// edit returns base with old replaced by new; old must occur exactly once, so
// a row cannot silently stop editing anything when the base changes.
func edit(base, old, new string) string {
	if n := strings.Count(base, old); n != 1 {
		panic(fmt.Sprintf("edit: %q occurs %d times in the base, want once", old, n))
	}
	return strings.Replace(base, old, new, 1)
}

// top puts lines (each ending in "\n") before minimal's first line: the
// first of them is line 1, and minimal's "key_sets:" follows them.
func top(lines string) string { return lines + minimal[1:] }

// The bases below are valid (TestErrorBasesValid). Line numbers in the rows
// refer to minimal, which reads:
//
//	 1
//	 2 key_sets:
//	 3   partners:
//	 4     - id: acme
//	 5       sha256: "…"
//	 6 upstreams:
//	 7   fraud:
//	 8     url: http://fraud.example.com/api/v1/service/fraud/
//	 9     auth: { type: key, key: "${UPSTREAM_KEY}" }
//	10 routes:
//	11   - name: fraud
//	12     path: /fraud
//	13     upstream: fraud
//	14     allow:
//	15       - key_set: partners
const (
	shaLine  = `      sha256: "` // line 5, completed by hashHex(testKey)
	authLine = `    auth: { type: key, key: "${UPSTREAM_KEY}" }`
	ruleLine = "      - key_set: partners\n"
)

var (
	// idpBase adds a second allow rule (line 16) naming identity provider
	// aad (lines 17-18).
	idpBase = edit(minimal, ruleLine, ruleLine+"      - identity_provider: aad\n") +
		"identity_providers:\n  aad: {type: azure_ad}\n"
	// credBase adds credential mi (lines 16-17) for the Azure auth types.
	credBase = minimal + "credentials:\n  mi: {type: managed_identity}\n"
	// validSHA is minimal's line 5.
	validSHA = shaLine + hashHex(testKey) + `"`
	// otherHash is a second key's sha256, distinct from acme's.
	otherHash = hashHex("another-key-0123456789")
)

func TestErrorBasesValid(t *testing.T) {
	for name, y := range map[string]string{"minimal": minimal, "idpBase": idpBase, "credBase": credBase} {
		if _, err := Parse("gw.yaml", []byte(y), lookup(errEnv)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type errRow struct {
	name string
	yaml string
	// want is the start of one line of the error: "file:line: path: message".
	want string
	// more is set when the edit must also cause other errors; otherwise the
	// row's error must be the only one.
	more bool
	// bug, when set, names a known defect this row demonstrates: the row is
	// skipped while it fails and reported once it passes.
	bug string
}

// authRow is a row that replaces minimal's (or credBase's) auth on line 9.
func authRow(name, auth, want string) errRow {
	return errRow{name: name, yaml: edit(credBase, authLine, "    auth: {"+auth+"}"), want: "gw.yaml:9: upstreams.fraud.auth" + want}
}

// forbidRows has one row per field each auth type refuses (validator.auth's
// forbid), each from a valid auth of that type plus the field.
func forbidRows() []errRow {
	valid := map[string]string{
		AuthNone:             "type: none",
		AuthKey:              `type: key, key: "${UPSTREAM_KEY}"`,
		AuthAADToken:         "type: aad_token, credential: mi",
		AuthAMLKeys:          "type: aml_keys, credential: mi, endpoint: e",
		AuthAMLServiceToken:  "type: aml_service_token, credential: mi, service: s",
		AuthAMLEndpointToken: "type: aml_endpoint_token, credential: mi, endpoint: e",
	}
	field := map[string]string{
		"key":              `key: "${UPSTREAM_KEY}"`,
		"secondary_key":    `secondary_key: "${UPSTREAM_KEY}"`,
		"credential":       "credential: mi",
		"workspace":        "workspace: {name: w}",
		"service":          "service: s",
		"endpoint":         "endpoint: e",
		"scope":            "scope: api://x/.default",
		"refresh_interval": "refresh_interval: 5m",
	}
	forbidden := []struct {
		typ    string
		fields []string
	}{
		{AuthNone, []string{"key", "secondary_key", "credential", "workspace", "service", "endpoint", "scope"}},
		{AuthKey, []string{"credential", "workspace", "service", "endpoint", "scope"}},
		{AuthAADToken, []string{"key", "secondary_key", "workspace", "service", "endpoint", "refresh_interval"}},
		{AuthAMLKeys, []string{"key", "scope"}},
		{AuthAMLServiceToken, []string{"endpoint", "scope", "refresh_interval"}},
		{AuthAMLEndpointToken, []string{"service", "scope"}},
	}
	var rows []errRow
	for _, f := range forbidden {
		for _, fld := range f.fields {
			rows = append(rows, authRow("auth "+f.typ+" refuses "+fld, valid[f.typ]+", "+field[fld],
				"."+fld+": is not used by auth type "+f.typ+": remove it"))
		}
	}
	return rows
}

// errorRows has a row for every error site in decode.go, scalars.go and
// validate.go (and the load.go and httpx messages they pass on).
func errorRows() []errRow {
	rows := []errRow{
		// load.go: parse.
		{name: "empty file", yaml: "", want: "gw.yaml: the file is empty"},
		{name: "invalid YAML", yaml: top("log:\n\tlevel: info\n"), want: "gw.yaml:2: not valid YAML: found character that cannot start any token"},
		{name: "invalid YAML, unclosed list", yaml: top("server:\n  listen: [\n"), want: "gw.yaml:2: not valid YAML: did not find expected ',' or ']'"},
		{name: "two documents", yaml: minimal + "---\nlog: {}\n", want: "gw.yaml:16: the file holds more than one YAML document"},

		// decode.go: scalar.
		{name: "list for a value", yaml: top("log:\n  level: [debug]\n"), want: "gw.yaml:2: log.level: expected a single value, got a list"},
		{name: "mapping for a value", yaml: top("log:\n  audit: {to: stdout}\n"), want: "gw.yaml:2: log.audit: expected a single value, got a mapping"},
		{name: "env unclosed", yaml: top("log:\n  audit: \"${LEAK\"\n"), want: "gw.yaml:2: log.audit: invalid environment reference: unclosed ${"},
		{name: "env bad name", yaml: top("log:\n  audit: \"${1LEAK}\"\n"), want: `gw.yaml:2: log.audit: invalid environment reference: "1LEAK" is not a variable name`},
		{name: "env unset", yaml: edit(minimal, "${UPSTREAM_KEY}", "${NOPE}"), want: "gw.yaml:9: upstreams.fraud.auth.key: environment variable NOPE is not set: set it, or remove the reference"},

		// decode.go: decode, and the scalar parsers of scalars.go.
		{name: "duration without unit", yaml: top("server:\n  read_header_timeout: 10\n"), want: `gw.yaml:2: server.read_header_timeout: "10": not a duration: write a number with a unit`},
		{name: "duration negative", yaml: top("server:\n  idle_timeout: -5s\n"), want: `gw.yaml:2: server.idle_timeout: "-5s": a duration here cannot be negative`},
		{name: "duration from env not echoed", yaml: top("server:\n  idle_timeout: ${LEAK}\n"), want: "gw.yaml:2: server.idle_timeout: (value from the environment): not a duration"},
		{name: "size malformed", yaml: top("server:\n  max_body_bytes: 10 MB!\n"), want: `gw.yaml:2: server.max_body_bytes: "10 MB!": not a size: write a whole number of bytes`},
		{name: "size too large", yaml: top("server:\n  max_body_bytes: 99999999999GiB\n"), want: `gw.yaml:2: server.max_body_bytes: "99999999999GiB": size is too large`},
		{name: "size from env not echoed", yaml: top("server:\n  max_body_bytes: \"${LEAK}\"\n"), want: "gw.yaml:2: server.max_body_bytes: (value from the environment): not a size"},
		{name: "timestamp malformed", yaml: edit(minimal, validSHA, validSHA+"\n      not_after: tomorrow"), want: `gw.yaml:6: key_sets.partners[0].not_after: "tomorrow": not a timestamp: write RFC 3339`},
		{name: "long value shortened", yaml: top("server:\n  idle_timeout: " + strings.Repeat("x", 70) + "\n"), want: `gw.yaml:2: server.idle_timeout: "` + strings.Repeat("x", 64) + `…": not a duration`},
		{name: "not a boolean", yaml: top("admin:\n  pprof: yes\n"), want: `gw.yaml:2: admin.pprof: "yes" is not a boolean: write true or false`},
		{name: "boolean from env not echoed", yaml: top("admin:\n  pprof: ${LEAK}\n"), want: "gw.yaml:2: admin.pprof: (value from the environment) is not a boolean"},
		{name: "not a whole number", yaml: top("server:\n  upstream:\n    max_idle_conns_per_host: 1.5\n"), want: `gw.yaml:3: server.upstream.max_idle_conns_per_host: "1.5" is not a whole number`},
		{name: "whole number out of range", yaml: top("server:\n  upstream:\n    max_idle_conns_per_host: 3000000000\n"), want: `gw.yaml:3: server.upstream.max_idle_conns_per_host: "3000000000" is not a whole number`},

		// decode.go: decodeStruct.
		{name: "list for a struct", yaml: top("server: [listen]\n"), want: "gw.yaml:1: server: expected a mapping of fields, got a list"},
		{name: "merge key in a struct", yaml: top("server: &s\n  idle_timeout: 5s\nadmin:\n  <<: *s\n"), want: "gw.yaml:4: admin: YAML merge keys (<<) are not supported: write the fields out"},
		{name: "field twice", yaml: top("server:\n  listen: \":1\"\n  listen: \":2\"\n"), want: "gw.yaml:3: server.listen: field appears twice: keep one"},
		{name: "unknown field with suggestion", yaml: top("server:\n  lisen: \":80\"\n"), want: `gw.yaml:2: server.lisen: unknown field "lisen"; did you mean "listen"? (known fields: buffer_body_bytes, credential_headers, idle_timeout, listen,`},
		{name: "unknown top-level field", yaml: top("colour: blue\n"), want: `gw.yaml:1: colour: unknown field "colour" (known fields: admin, credentials, identity_providers, key_sets, limits, log, routes, server, telemetry, upstreams)`},

		// decode.go: decodeMap.
		{name: "list for a map", yaml: top("credentials: [mi]\n"), want: "gw.yaml:1: credentials: expected a mapping of names, got a list"},
		{name: "empty name", yaml: top("credentials:\n  \"\": {type: azure_cli}\n"), want: "gw.yaml:2: credentials: names here must be non-empty strings"},
		{name: "merge key in a map", yaml: top("credentials:\n  <<: {}\n"), want: "gw.yaml:2: credentials: YAML merge keys (<<) are not supported: write the entries out"},
		{name: "name twice", yaml: top("credentials:\n  mi: {type: azure_cli}\n  mi: {type: azure_cli}\n"), want: "gw.yaml:3: credentials.mi: name appears twice: names must be unique"},

		// decode.go: decodeSlice.
		{name: "value for a list", yaml: top("server:\n  trusted_proxies: 10.0.0.0/8\n"), want: "gw.yaml:2: server.trusted_proxies: expected a list, got a single value"},

		// scalars.go: Match.decodeNode.
		{name: "claim as a single value", yaml: edit(idpBase, "- identity_provider: aad\n", "- identity_provider: aad\n        roles: Score.Invoke\n"),
			want: "gw.yaml:17: routes[0].allow[1].roles: expected a list (any of) or a mapping with any_of / all_of, got a single value"},
		{name: "claim with no values", yaml: edit(idpBase, "- identity_provider: aad\n", "- identity_provider: aad\n        roles: {all_of: []}\n"),
			want: "gw.yaml:17: routes[0].allow[1].roles: condition lists no values: list at least one, or remove the field"},
		{name: "claim with an empty value", yaml: edit(idpBase, "- identity_provider: aad\n", "- identity_provider: aad\n        roles: [Score.Invoke, \" \"]\n"),
			want: "gw.yaml:17: routes[0].allow[1].roles: empty value in the list: remove it"},

		// validate.go: server.
		{name: "listen not host:port", yaml: top("server:\n  listen: nope\n"), want: `gw.yaml:2: server.listen: "nope" is not host:port (write ":8443" or "127.0.0.1:8080")`},
		{name: "listen port out of range", yaml: top("server:\n  listen: \":65536\"\n"), want: `gw.yaml:2: server.listen: ":65536": port 65536 is not a number from 0 to 65535`},
		{name: "http_listen not host:port", yaml: top("server:\n  tls:\n    http_listen: nope\n"), want: `gw.yaml:3: server.tls.http_listen: "nope" is not host:port`},
		{name: "http_listen on the TLS listener", yaml: top("server:\n  tls:\n    http_listen: \":8443\"\n"), want: "gw.yaml:3: server.tls.http_listen: is the same address as server.listen"},
		{name: "buffer larger than max body", yaml: top("server:\n  max_body_bytes: 1KiB\n  buffer_body_bytes: 2KiB\n"), want: "gw.yaml:3: server.buffer_body_bytes: is larger than max_body_bytes (1024): make it at most that"},
		{name: "negative idle pool", yaml: top("server:\n  upstream:\n    max_idle_conns_per_host: -1\n"), want: "gw.yaml:3: server.upstream.max_idle_conns_per_host: must be positive"},
		{name: "trusted proxy malformed", yaml: top("server:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - 10.0.0.300\n"), want: `gw.yaml:4: server.trusted_proxies[1]: "10.0.0.300" is not a CIDR or an IP address`},

		// validate.go: admin.
		{name: "admin listen not host:port", yaml: top("admin:\n  listen: nope\n"), want: `gw.yaml:2: admin.listen: "nope" is not host:port`},
		{name: "admin on the public listener", yaml: top("admin:\n  listen: \":8080\"\n"), want: "gw.yaml:2: admin.listen: is the same address as server.listen: the admin endpoints must never be on the public listener"},

		// validate.go: log.
		{name: "log level", yaml: top("log:\n  level: loud\n"), want: `gw.yaml:2: log.level: "loud" is not a level: write debug, info, warn or error`},
		{name: "log format", yaml: top("log:\n  format: xml\n"), want: `gw.yaml:2: log.format: "xml" is not a format: write json or text`},

		// validate.go: name, from each of its callers.
		{name: "key set name", yaml: edit(minimal, "key_sets:\n", "key_sets:\n  _bad:\n    - {id: b, sha256: \""+otherHash+"\"}\n"), want: `gw.yaml:3: key_sets._bad: key set name "_bad" must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit`},
		{name: "credential name", yaml: top("credentials:\n  _bad: {type: azure_cli}\n"), want: `gw.yaml:2: credentials._bad: credential name "_bad" must be 1-64`},
		{name: "identity provider name", yaml: top("identity_providers:\n  _bad: {type: azure_ad}\n"), want: `gw.yaml:2: identity_providers._bad: identity provider name "_bad" must be 1-64`},
		{name: "upstream name", yaml: edit(minimal, "upstreams:\n", "upstreams:\n  _bad: {url: \"http://b.example.com\", auth: {type: none}}\n"), want: `gw.yaml:7: upstreams._bad: upstream name "_bad" must be 1-64`},
		{name: "route name", yaml: edit(minimal, "name: fraud", "name: fr aud"), want: `gw.yaml:11: routes[0].name: route name "fr aud" must be 1-64`},

		// validate.go: keySets.
		{name: "key set without keys", yaml: edit(minimal, "  partners:\n    - id: acme\n"+validSHA+"\n", "  partners: []\n"), want: "gw.yaml:3: key_sets.partners: key set has no keys: add one (gateway keys new prints one) or remove the set"},
		{name: "empty key entry", yaml: edit(minimal, "    - id: acme\n", "    -\n    - id: acme\n"), want: "gw.yaml:4: key_sets.partners[0]: empty entry: give it an id and a sha256"},
		{name: "key without id", yaml: edit(minimal, "    - id: acme\n"+shaLine, "    - sha256: \""), want: "gw.yaml:4: key_sets.partners[0].id: missing: every key needs an id"},
		{name: "key id twice", yaml: edit(minimal, validSHA, validSHA+"\n    - id: acme\n      sha256: \""+otherHash+"\""), want: `gw.yaml:6: key_sets.partners[1].id: id "acme" appears twice in this key set`},
		{name: "sha256 and key", yaml: edit(minimal, validSHA, validSHA+"\n      key: \"${CLIENT_KEY}\""), want: "gw.yaml:4: key_sets.partners[0]: set sha256 or key, not both"},
		{name: "sha256 malformed", yaml: edit(minimal, hashHex(testKey), "abc"), want: "gw.yaml:5: key_sets.partners[0].sha256: must be 64 hex digits"},
		{name: "plaintext key", yaml: edit(minimal, validSHA, `      key: "plaintext-key-0123456789"`), want: "gw.yaml:5: key_sets.partners[0].key: a plaintext key must not be written in the file"},
		{name: "short key from env", yaml: edit(minimal, validSHA, `      key: "${SHORT_KEY}"`), want: "gw.yaml:5: key_sets.partners[0].key: the key from the environment is shorter than 16 characters"},
		{name: "key without sha256", yaml: edit(minimal, "\n"+validSHA, ""), want: "gw.yaml:4: key_sets.partners[0]: missing sha256 (or key from the environment)"},
		{name: "key in two sets", yaml: edit(minimal, "upstreams:\n", "  other:\n    - id: dup\n      sha256: \""+hashHex(testKey)+"\"\nupstreams:\n"), want: `gw.yaml:4: key_sets.partners[0]: the same key is also key_sets.other id "dup": give every holder its own key`},

		// validate.go: credentials, identityProviders, fromEnv.
		{name: "empty credential", yaml: top("credentials:\n  mi:\n"), want: "gw.yaml:2: credentials.mi: empty credential: set its type"},
		{name: "client secret in the file", yaml: top("credentials:\n  sp: {type: client_secret, client_secret: written-here}\n"), want: "gw.yaml:2: credentials.sp.client_secret: must come from the environment (${NAME}), not be written in the file"},
		{name: "certificate password in the file", yaml: top("credentials:\n  sp: {type: client_certificate, certificate_password: written-here}\n"), want: "gw.yaml:2: credentials.sp.certificate_password: must come from the environment"},
		{name: "empty identity provider", yaml: top("identity_providers:\n  aad:\n"), want: "gw.yaml:2: identity_providers.aad: empty identity provider: set its type"},

		// validate.go: upstreams.
		{name: "empty upstream", yaml: edit(minimal, "upstreams:\n", "upstreams:\n  other:\n"), want: "gw.yaml:7: upstreams.other: empty upstream: set url and auth"},
		{name: "upstream without url", yaml: edit(minimal, "    url: http://fraud.example.com/api/v1/service/fraud/\n", ""), want: "gw.yaml:7: upstreams.fraud.url: missing: the scoring URI"},
		{name: "upstream url not http", yaml: edit(minimal, "http://fraud", "ftp://fraud"), want: `gw.yaml:8: upstreams.fraud.url: "ftp://fraud.example.com/api/v1/service/fraud/" is not an absolute http or https URL`},
		{name: "upstream url with a query", yaml: edit(minimal, "/fraud/\n", "/fraud/?code=x\n"), want: "gw.yaml:8: upstreams.fraud.url: must not carry credentials, a query or a fragment: put credentials in auth"},
		{name: "upstream url port", yaml: edit(minimal, "example.com/api", "example.com:0/api"), want: `gw.yaml:8: upstreams.fraud.url: "http://fraud.example.com:0/api/v1/service/fraud/": port 0 is not a number from 1 to 65535`},
		{name: "header name", yaml: edit(minimal, authLine, "    headers: {\"bad header\": x}\n"+authLine), want: `gw.yaml:9: upstreams.fraud.headers.bad header: "bad header" is not a valid header name`},
		{name: "header hop-by-hop", yaml: edit(minimal, authLine, "    headers: {connection: close}\n"+authLine), want: "gw.yaml:9: upstreams.fraud.headers.connection: Connection is a hop-by-hop header and cannot be forwarded"},
		{name: "header Authorization", yaml: edit(minimal, authLine, "    headers: {authorization: x}\n"+authLine), want: "gw.yaml:9: upstreams.fraud.headers.authorization: the upstream's Authorization comes from auth: configure the credential there"},
		{name: "header Host", yaml: edit(minimal, authLine, "    headers: {Host: x}\n"+authLine), want: "gw.yaml:9: upstreams.fraud.headers.Host: Host is set from the upstream url"},
		{name: "header value control character", yaml: edit(minimal, authLine, "    headers: {X-Tag: \"a\\nb\"}\n"+authLine), want: "gw.yaml:9: upstreams.fraud.headers.X-Tag: value contains control characters"},
		{name: "header value from env not echoed", yaml: edit(minimal, authLine, "    headers: {X-Tag: \"${LEAK}\\r\"}\n"+authLine), want: "gw.yaml:9: upstreams.fraud.headers.X-Tag: value contains control characters"},
		{name: "identity field unknown", yaml: edit(minimal, authLine, "    identity_headers: {email: X-Email}\n"+authLine), want: `gw.yaml:9: upstreams.fraud.identity_headers.email: "email" is not an identity field: use key_id, oid, tid, appid, sub, provider or method`},
		{name: "identity header forbidden name", yaml: edit(minimal, authLine, "    identity_headers: {oid: Authorization}\n"+authLine), want: `gw.yaml:9: upstreams.fraud.identity_headers.oid: "Authorization" cannot be used as an identity header name`},
		{name: "identity header twice", yaml: edit(minimal, authLine, "    identity_headers: {oid: X-Id, sub: x-id}\n"+authLine), want: "gw.yaml:9: upstreams.fraud.identity_headers.sub: header x-id is used twice"},
		{name: "identity header also a header", yaml: edit(minimal, authLine, "    headers: {X-Id: a}\n    identity_headers: {oid: X-Id}\n"+authLine), want: "gw.yaml:10: upstreams.fraud.identity_headers.oid: header X-Id is also in headers: pick one"},
		{name: "identity header also a header, other case", yaml: edit(minimal, authLine, "    headers: {x-id: a}\n    identity_headers: {oid: X-Id}\n"+authLine), want: "gw.yaml:10: upstreams.fraud.identity_headers.oid: header X-Id is also in headers: pick one"},

		// validate.go: auth (forbid is in forbidRows).
		authRow("auth credential unknown", "type: aad_token, credential: nope", `.credential: no credential named "nope" in credentials: (have: mi)`),
		authRow("key written in the file", "type: key, key: written-here", ".key: must come from the environment (${NAME}), not be written in the file"),
		authRow("secondary key written in the file", `type: key, key: "${UPSTREAM_KEY}", secondary_key: written-here`, ".secondary_key: must come from the environment"),
		authRow("auth without type", `key: "${UPSTREAM_KEY}"`, ".type: missing: write key, aml_keys, aml_service_token, aml_endpoint_token, aad_token or none"),
		authRow("auth type unknown", "type: magic", `.type: "magic" is not an auth type: write key, aml_keys`),

		// validate.go: routes.
		{name: "no routes", yaml: edit(minimal, "routes:\n  - name: fraud\n    path: /fraud\n    upstream: fraud\n    allow:\n"+ruleLine, "routes: []\n"), want: "gw.yaml:10: routes: no routes: add at least one (see config.example.yaml)"},
		{name: "routes left out", yaml: edit(minimal, "routes:\n  - name: fraud\n    path: /fraud\n    upstream: fraud\n    allow:\n"+ruleLine, ""), want: "gw.yaml: routes: no routes"},
		{name: "empty route", yaml: edit(minimal, "  - name: fraud\n", "  -\n  - name: fraud\n"), want: "gw.yaml:11: routes[0]: empty route: give it a name, path, upstream and allow"},
		{name: "route without name", yaml: edit(minimal, "  - name: fraud\n    path:", "  - path:"), want: "gw.yaml:11: routes[0].name: missing: every route needs a name"},
		{name: "route name twice", yaml: minimal + "  - {name: fraud, path: /other, upstream: fraud, public: true}\n", want: `gw.yaml:16: routes[1].name: route name "fraud" is used twice`},
		{name: "route wildcard host", yaml: edit(minimal, "    path: /fraud", "    host: \"*.example.com\"\n    path: /fraud"), want: `gw.yaml:12: routes[0].host: "*.example.com": wildcard hosts are not supported`},
		{name: "route host with port", yaml: edit(minimal, "    path: /fraud", "    host: Models.example.com:443\n    path: /fraud"), want: `gw.yaml:12: routes[0].host: "models.example.com:443" is not a host name (no scheme, port or path)`},
		{name: "route without path", yaml: edit(minimal, "    path: /fraud\n", ""), want: "gw.yaml:11: routes[0].path: missing: a path prefix such as /fraud, or / for everything"},
		{name: "route path relative", yaml: edit(minimal, "path: /fraud", "path: fraud"), want: `gw.yaml:12: routes[0].path: "fraud" must start with /`},
		{name: "route path unclean", yaml: edit(minimal, "path: /fraud", "path: /fraud/"), want: `gw.yaml:12: routes[0].path: "/fraud/" must be a clean path: no trailing slash, '..', '//', '%', '?' or '#'`},
		{name: "route path twice", yaml: minimal + "  - {name: other, path: /fraud, upstream: fraud, public: true}\n", want: `gw.yaml:16: routes[1].path: route "fraud" already serves host "" path /fraud`},
		{name: "route without upstream", yaml: edit(minimal, "    upstream: fraud\n", ""), want: "gw.yaml:11: routes[0].upstream: missing: name one of the upstreams: entries"},
		{name: "route upstream unknown", yaml: edit(minimal, "upstream: fraud", "upstream: frad"), want: `gw.yaml:13: routes[0].upstream: no upstream named "frad" (have: fraud)`},
		{name: "route public with allow", yaml: edit(minimal, "    allow:", "    public: true\n    allow:"), want: "gw.yaml:14: routes[0].public: a public route admits everyone, so its allow list would never apply"},
		{name: "route without allow", yaml: edit(minimal, "    allow:\n"+ruleLine, ""), want: "gw.yaml:11: routes[0].allow: missing: list who may call this route"},

		// validate.go: allowRule.
		{name: "empty rule", yaml: edit(minimal, ruleLine, "      -\n"+ruleLine), want: "gw.yaml:15: routes[0].allow[0]: empty rule: write key_set: NAME or identity_provider: NAME"},
		{name: "rule names both", yaml: edit(idpBase, ruleLine, "      - key_set: partners\n        identity_provider: aad\n"), want: "gw.yaml:15: routes[0].allow[0]: a rule names key_set or identity_provider, not both"},
		{name: "rule key set unknown", yaml: edit(minimal, "key_set: partners", "key_set: partner"), want: `gw.yaml:15: routes[0].allow[0].key_set: no key set named "partner" (have: partners)`},
		{name: "claims on a key set rule", yaml: edit(minimal, ruleLine, ruleLine+"        tenants: [72f988bf-86f1-41af-91ab-2d7cd011db47]\n"), want: "gw.yaml:16: routes[0].allow[0].tenants: claim conditions apply to identity_provider rules, not key sets"},
		{name: "rule identity provider unknown", yaml: edit(idpBase, "identity_provider: aad", "identity_provider: add"), want: `gw.yaml:16: routes[0].allow[1].identity_provider: no identity provider named "add" (have: aad)`},
		{name: "rule user not a GUID", yaml: edit(idpBase, "- identity_provider: aad\n", "- identity_provider: aad\n        users: {all_of: [alice@contoso.com]}\n"), want: `gw.yaml:17: routes[0].allow[1].users: "alice@contoso.com" is not an object id GUID (users are matched by id, never by name)`},
		{name: "rule names neither", yaml: edit(minimal, "- key_set: partners", "- roles: [Score.Invoke]"), want: "gw.yaml:15: routes[0].allow[0]: a rule must name key_set or identity_provider"},
	}
	rows = append(rows, forbidRows()...)
	rows = append(rows, leakRows()...)
	return append(rows, newlineRows()...)
}

// newlineRows: keys and values with raw newlines must not break an error
// into lines (nor forge a "gw.yaml:1: ..." line); each error is one line.

// newlineRows put a newline where an error prints text from the file
// without quoting it.
func newlineRows() []errRow {
	return []errRow{
		{name: "newline: field name", yaml: "\"a\\nb\": 1\n" + minimal[1:], want: "gw.yaml:1: "},
		{name: "newline: identity header", yaml: edit(minimal, authLine, "    headers: {\"a\\nb\": x}\n    identity_headers: {oid: \"a\\nb\"}\n"+authLine), want: "gw.yaml:10: upstreams.fraud.identity_headers.oid: ", more: true},
		{name: "newline: route path", yaml: minimal + "  - {name: a, path: \"/a\\nb\", upstream: fraud, public: true}\n  - {name: b, path: \"/a\\nb\", upstream: fraud, public: true}\n", want: "gw.yaml:17: routes[2].path: "},
	}
}

// laughs is a small file whose aliases expand to n*n*n claim values: routes
// lists n aliases of a route, whose allow lists n aliases of a rule, whose
// roles list n values.
func laughs(n int) string {
	rep := func(s string) string { return strings.TrimSuffix(strings.Repeat(s+", ", n), ", ") }
	return "x:\n" +
		"  - &L [" + rep("Score.Invoke") + "]\n" +
		"  - &R {identity_provider: aad, roles: *L}\n" +
		"  - &A [" + rep("*R") + "]\n" +
		"  - &T {name: a, path: /a, upstream: u, allow: *A}\n" +
		"routes: [" + rep("*T") + "]\n"
}

// TestAliasExpansionBounded: the decoder follows every alias, so a few KB of
// anchors and aliases cost cubic time and memory (laughs(100), 2.3KB: about
// 6s and a 0.9MB error; a 10KB file does not finish). yaml.v3 bounds alias
// expansion in its own decoder, not in a yaml.Node walk like ours.
func TestAliasExpansionBounded(t *testing.T) {
	y := laughs(100)
	start := time.Now()
	_, err := Parse("gw.yaml", []byte(y), lookup(errEnv))
	if err == nil {
		t.Fatal("Parse accepted the file")
	}
	if d := time.Since(start); d > 3*time.Second || len(flatten(err)) > 10 {
		t.Errorf("Parse of %d bytes took %v and reported %d errors", len(y), d, len(flatten(err)))
	}
}

// leakRows: a value from the environment is never quoted back, whatever
// message quotes its field.

// leakRows put a value from the environment where validate.go quotes the
// field's value in its message. decode.go names only the value's origin
// (decoder.shown); these show validate.go does not.
func leakRows() []errRow {
	return []errRow{
		{name: "leak: listen", yaml: top("server:\n  listen: \"${LEAK}\"\n"), want: "gw.yaml:2: server.listen: "},
		{name: "leak: upstream url", yaml: edit(minimal, "example.com/api", "example.com:0/${LEAK}/api"), want: "gw.yaml:8: upstreams.fraud.url: "},
		{name: "leak: route path", yaml: edit(minimal, "path: /fraud", "path: ${LEAK}"), want: "gw.yaml:12: routes[0].path: "},
		{name: "leak: key id", yaml: edit(minimal, validSHA, validSHA+"\n    - id: \"${LEAK}\"\n      sha256: \""+otherHash+"\"\n    - id: \"${LEAK}\"\n      sha256: \""+hashHex("third-key-0123456789")+"\""), want: "gw.yaml:8: key_sets.partners[2].id: "},
		{name: "leak: user GUID", yaml: edit(idpBase, "- identity_provider: aad\n", "- identity_provider: aad\n        users: [\"${LEAK}\"]\n"), want: "gw.yaml:17: routes[0].allow[1].users: "},
	}
}

// TestErrorSites has a row for every place config reports a problem: each
// row is a valid base with one edit, and names the file, line and field path
// the problem must be reported at. No row's error may quote a value that
// came from the environment.
func TestErrorSites(t *testing.T) {
	seen := map[string]bool{}
	for _, tt := range errorRows() {
		if seen[tt.name] {
			t.Fatalf("two rows named %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("gw.yaml", []byte(tt.yaml), lookup(errEnv))
			var problems []string
			switch {
			case err == nil:
				problems = append(problems, "Parse succeeded, want an error")
			default:
				problems = checkError(err, tt)
			}
			switch {
			case tt.bug != "" && len(problems) > 0:
				t.Skipf("bug: %s\n%s", tt.bug, strings.Join(problems, "\n"))
			case tt.bug != "":
				t.Errorf("row marked with bug %q passes: remove the mark", tt.bug)
			}
			for _, p := range problems {
				t.Error(p)
			}
		})
	}
}

// checkError returns what is wrong with err for row tt.
func checkError(err error, tt errRow) []string {
	var problems []string
	text := err.Error()
	lines := strings.Split(text, "\n")
	found := false
	for _, l := range lines {
		found = found || strings.HasPrefix(l, tt.want)
	}
	if !found {
		problems = append(problems, "no error line starts with\n\t"+tt.want+"\ngot\n\t"+strings.Join(lines, "\n\t"))
	}
	if n := len(flatten(err)); n != 1 && !tt.more {
		problems = append(problems, "want exactly one error, got "+strings.Join(lines, "\n\t"))
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "gw.yaml") {
			problems = append(problems, "error line does not start with the file name: "+strconv.Quote(l))
		}
	}
	if strings.Contains(text, envMarker) {
		problems = append(problems, "error quotes a value from the environment:\n\t"+strings.Join(lines, "\n\t"))
	}
	return problems
}

// flatten lists the errors errors.Join put together.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	var fe *FieldError
	if errors.As(err, &fe) {
		return []error{fe}
	}
	return []error{err}
}
