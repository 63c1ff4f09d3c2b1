package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/gateway"
)

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", stderr)
	path := configFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *path == "" && fs.NArg() == 1 {
		*path = fs.Arg(0)
	}
	if *path == "" {
		fmt.Fprintln(stderr, "gateway check: -config FILE is required")
		return exitError(2)
	}
	// The same load and compile as serve, so check cannot pass a
	// configuration serve refuses; nothing is started.
	cfg, err := config.Load(*path, os.LookupEnv)
	var snap *gateway.Snapshot
	if err == nil {
		snap, err = gateway.Compile(cfg, gateway.Deps{}, gateway.CompileOptions{})
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		n := strings.Count(err.Error(), "\n") + 1
		fmt.Fprintf(stderr, "%s: %d problem(s); nothing was started\n", *path, n)
		return exitError(1)
	}
	defer snap.Close()
	for _, w := range snap.Warnings {
		fmt.Fprintln(stderr, w)
	}
	fmt.Fprintf(stdout, "%s: OK (listen %s, admin %s)\n\n", *path, cfg.Server.Listen, cfg.Admin.Listen)
	printRoutes(stdout, cfg)
	return nil
}

// printRoutes writes the route table: where each route goes and who may
// call it.
func printRoutes(w io.Writer, cfg *config.Config) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROUTE\tHOST\tPATH\tUPSTREAM\tUPSTREAM AUTH\tALLOW")
	for _, r := range cfg.Routes {
		u := cfg.Upstreams[r.Upstream]
		host := r.Host
		if host == "" {
			host = "*"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s (%s)\t%s\t%s\n", r.Name, host, r.Path, r.Upstream, u.Parsed.Redacted(), u.Auth.Type, describeAllow(r))
	}
	tw.Flush()
}

func describeAllow(r *config.Route) string {
	if r.Public {
		return "everyone (public)"
	}
	var parts []string
	for _, a := range r.Allow {
		if a.KeySet != "" {
			parts = append(parts, "key_set "+a.KeySet)
			continue
		}
		s := "identity_provider " + a.IdentityProvider
		for _, c := range []struct {
			name string
			m    config.Match
		}{{"roles", a.Roles}, {"scopes", a.Scopes}, {"groups", a.Groups}, {"users", a.Users}, {"apps", a.Apps}, {"tenants", a.Tenants}} {
			if c.m.IsSet() {
				s += " " + c.name + " " + c.m.String()
			}
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " | ")
}

// keyPrefix makes modelgate keys recognisable (for secret scanners, and
// for people).
const keyPrefix = "mgk_"

// newKey returns a fresh API key with 256 bits of entropy.
func newKey() string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return keyPrefix + base64.RawURLEncoding.EncodeToString(b[:])
}

func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func cmdKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "new" {
		fmt.Fprintln(stderr, "usage: gateway keys new [-id NAME]")
		return exitError(2)
	}
	fs := newFlagSet("keys new", stderr)
	id := fs.String("id", "client", "the key holder's `name`, as it will appear in logs")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	key := newKey()
	fmt.Fprintf(stdout, "key (give it to the caller; it is not stored anywhere):\n  %s\n\n", key)
	fmt.Fprintf(stdout, "for key_sets in the configuration:\n  - id: %s\n    sha256: %q\n", *id, keyHash(key))
	return nil
}
