package proxy

import (
	"strings"
	"testing"
)

func testRoutes() []*Route {
	return []*Route{
		{Name: "fraud", Prefix: "/fraud"},
		{Name: "fraud-v2", Prefix: "/fraud/v2"},
		{Name: "deep", Prefix: "/a/b/c"},
		{Name: "host-fraud", Host: "models.example.com", Prefix: "/fraud"},
		{Name: "host-root", Host: "root.example.com", Prefix: "/"},
		{Name: "dup-fraud", Prefix: "/fraud"}, // loses to the first
	}
}

func TestRouterMatch(t *testing.T) {
	rt := NewRouter(testRoutes())
	tests := []struct {
		name string
		host string
		path string
		want string // route name, "" = none
	}{
		{name: "prefix itself", path: "/fraud", want: "fraud"},
		{name: "prefix with slash", path: "/fraud/", want: "fraud"},
		{name: "below prefix", path: "/fraud/score", want: "fraud"},
		{name: "deep below prefix", path: "/fraud/a/b/c/d", want: "fraud"},
		{name: "not a boundary", path: "/fraudster", want: ""},
		{name: "not a boundary, longer", path: "/fraudster/score", want: ""},
		{name: "case sensitive", path: "/FRAUD", want: ""},
		{name: "root", path: "/", want: ""},
		{name: "empty", path: "", want: ""},
		{name: "longest wins", path: "/fraud/v2", want: "fraud-v2"},
		{name: "longest wins below", path: "/fraud/v2/x", want: "fraud-v2"},
		{name: "longest needs boundary", path: "/fraud/v2x", want: "fraud"},
		{name: "multi-segment prefix", path: "/a/b/c/d", want: "deep"},
		{name: "multi-segment prefix partial", path: "/a/b", want: ""},
		{name: "double slash before prefix", path: "//fraud", want: ""},
		{name: "first of duplicates", path: "/fraud/x", want: "fraud"},
		{name: "host route", host: "models.example.com", path: "/fraud/x", want: "host-fraud"},
		{name: "host route beats longer any-host", host: "models.example.com", path: "/fraud/v2/x", want: "host-fraud"},
		{name: "host route misses, any-host serves", host: "models.example.com", path: "/a/b/c", want: "deep"},
		{name: "host root catches all", host: "root.example.com", path: "/fraud/v2/x", want: "host-root"},
		{name: "host root, root path", host: "root.example.com", path: "/", want: "host-root"},
		{name: "unknown host", host: "other.example.com", path: "/fraud", want: "fraud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if r := rt.Match(tt.host, tt.path); r != nil {
				got = r.Name
			}
			if got != tt.want {
				t.Errorf("Match(%q, %q) = %q, want %q", tt.host, tt.path, got, tt.want)
			}
		})
	}
}

func TestRouterMatchDoesNotAllocate(t *testing.T) {
	rt := NewRouter(testRoutes())
	if n := testing.AllocsPerRun(100, func() { rt.Match("models.example.com", "/x/fraud/v2/score/deeper") }); n != 0 {
		t.Errorf("Match allocates %v times per call", n)
	}
}

func TestHostOnly(t *testing.T) {
	tests := []struct{ in, want string }{
		{"models.example.com", "models.example.com"},
		{"models.example.com:8443", "models.example.com"},
		{"MODELS.Example.COM:8443", "models.example.com"},
		{"models.example.com.", "models.example.com"},
		{"models.example.com.:80", "models.example.com"},
		{"127.0.0.1:8080", "127.0.0.1"},
		{"[::1]:8080", "[::1]"},
		{"[::1]", "[::1]"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := hostOnly(tt.in); got != tt.want {
			t.Errorf("hostOnly(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestBadPath(t *testing.T) {
	tests := []struct {
		path string
		bad  bool
	}{
		{"/", false},
		{"/fraud", false},
		{"/fraud/", false},
		{"/fraud/score", false},
		{"/fraud//score", false},
		{"/fraud/v1..2", false},
		{"/fraud/.well-known", false},
		{"/fraud/..x", false},
		{"/fraud/x.", false},
		{"/fraud/a;b=c", false},
		{"/fraud/caf\u00e9", false},
		{"/fraud/a%b", false},
		{"/fraud/a%2541", false},
		{"/fraud/...", true}, // Windows trims trailing dots: ".." for IIS
		{"/fraud/.. ", true},
		{"/fraud/..;/admin", true},
		{"/fraud/.;x/admin", true},
		{"/fraud/%2e%2e/admin", true},   // decoded once more by the upstream
		{"/fraud/%2E%2e%2fadmin", true}, // mixed case
		{"/fraud/%u002e%u002e/admin", true},
		{"/fraud/%252e%252e/admin", true},
		{"/fraud/%25252e%25252e/admin", true},
		{"/fraud/%5c..%5cadmin", true},
		{"/fraud/%00", true},
		{"/fraud/\xc0\xae\xc0\xae/admin", true}, // overlong '.'
		{"/fraud/\uff0e\uff0e/admin", true},     // NFKC '.'
		{"/fraud/..\uff0fadmin", true},          // NFKC '/'
		{"/fraud/%2525252e", true},              // encoded too many times
		{"", true},
		{"fraud", true},
		{"*", true},
		{"/.", true},
		{"/..", true},
		{"/./fraud", true},
		{"/../fraud", true},
		{"/fraud/.", true},
		{"/fraud/..", true},
		{"/fraud/./x", true},
		{"/fraud/../admin", true},
		{"/fraud/x/../../admin", true},
		{"/fraud//../admin", true},
		{`/fraud\admin`, true},
		{`/fraud/..\admin`, true},
		{"/fraud/\x00", true},
		{"/fraud/a\r\nb", true},
		{"/fraud/\x7f", true},
		{"/fraud/\t", true},
	}
	for _, tt := range tests {
		if got := badPath(tt.path) != ""; got != tt.bad {
			t.Errorf("badPath(%q) refuses = %v, want %v", tt.path, got, tt.bad)
		}
	}
}

// FuzzRoute checks the routing invariants for any path: a path badPath
// accepts has no dot segment, backslash or control character, and the
// route Match finds has a prefix that ends on a segment boundary of it.
func FuzzRoute(f *testing.F) {
	for _, s := range []string{"/fraud", "/fraud/", "/fraudster", "/fraud/../x", "/fraud/v2/..", "//", "/a/b/c/d", `/fraud\x`, "/fraud/.%2e"} {
		f.Add("", s)
	}
	f.Add("models.example.com", "/fraud/v2")
	rt := NewRouter(testRoutes())
	f.Fuzz(func(t *testing.T, host, path string) {
		if badPath(path) != "" {
			return
		}
		for _, seg := range strings.Split(path, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("badPath accepted %q with a dot segment", path)
			}
		}
		for i := 0; i < len(path); i++ {
			if c := path[i]; c == '\\' || c < 0x20 || c == 0x7f {
				t.Fatalf("badPath accepted %q with byte %#x", path, c)
			}
		}
		r := rt.Match(hostOnly(host), path)
		if r == nil || r.Prefix == "/" {
			return
		}
		if !strings.HasPrefix(path, r.Prefix) || (len(path) > len(r.Prefix) && path[len(r.Prefix)] != '/') {
			t.Fatalf("Match(%q) = route %s with prefix %q: not a segment prefix", path, r.Name, r.Prefix)
		}
	})
}
