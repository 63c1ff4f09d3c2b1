package policy

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"
	"time"
)

var now = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

const (
	acmeKey    = "mgk_acme-0123456789abcdef0123456789"
	batchKey   = "mgk_batch-0123456789abcdef012345678"
	expiredKey = "mgk_expired-0123456789abcdef0123456"
)

func testIndex() *KeyIndex {
	return NewKeyIndex([]KeySpec{
		{Set: "partners", ID: "acme", Hash: sha256.Sum256([]byte(acmeKey))},
		{Set: "partners", ID: "old", Hash: sha256.Sum256([]byte(expiredKey)), NotAfter: now.Add(-time.Second)},
		{Set: "batch", ID: "job", Hash: sha256.Sum256([]byte(batchKey)), NotAfter: now.Add(time.Hour)},
	})
}

func TestEvaluateKeys(t *testing.T) {
	keys := testIndex()
	partners := New(keys, []RuleSpec{{KeySet: "partners"}})
	both := New(keys, []RuleSpec{{KeySet: "batch"}, {KeySet: "partners"}})
	tokensOnly := New(keys, []RuleSpec{{Token: &TokenRule{ProviderName: "aad"}}})
	tests := []struct {
		name       string
		pol        *Policy
		authz      string
		wantStatus int // 0 = admitted
		wantReason string
		wantID     string
		wantRule   string
	}{
		{"admitted", partners, "Bearer " + acmeKey, 0, "", "key:partners/acme", "allow[0] key_set=partners"},
		{"scheme case-insensitive", partners, "bearer " + acmeKey, 0, "", "key:partners/acme", ""},
		{"second rule admits", both, "Bearer " + acmeKey, 0, "", "key:partners/acme", "allow[1] key_set=partners"},
		{"first rule admits", both, "Bearer " + batchKey, 0, "", "key:batch/job", "allow[0] key_set=batch"},
		{"missing", partners, "", 401, ReasonNoCredential, "", ""},
		{"basic scheme", partners, "Basic YWxhZGRpbjpvcGVuc2VzYW1l", 401, ReasonWrongScheme, "", ""},
		{"bearer without value", partners, "Bearer ", 401, ReasonNoCredential, "", ""},
		{"bearer alone (as a server trims it)", partners, "Bearer", 401, ReasonNoCredential, "", ""},
		{"bearer scheme as a prefix of another", partners, "Bearerx", 401, ReasonWrongScheme, "", ""},
		{"bearer with inner space", partners, "Bearer a b", 401, ReasonMalformedCred, "", ""},
		{"bearer with control character", partners, "Bearer " + acmeKey + "\x01", 401, ReasonMalformedCred, "", ""},
		{"unknown key", partners, "Bearer mgk_nope-0123456789abcdef0123", 401, ReasonUnknownKey, "", ""},
		{"prefix of a real key", partners, "Bearer " + acmeKey[:len(acmeKey)-1], 401, ReasonUnknownKey, "", ""},
		{"key plus suffix", partners, "Bearer " + acmeKey + "x", 401, ReasonUnknownKey, "", ""},
		{"expired key", partners, "Bearer " + expiredKey, 401, ReasonKeyExpired, "", ""},
		{"key of another set", partners, "Bearer " + batchKey, 403, ReasonKeyNotAllowed, "", ""},
		{"key on token-only route", tokensOnly, "Bearer " + acmeKey, 401, ReasonKeyNotAllowed, "", ""},
		{"huge key", partners, "Bearer " + strings.Repeat("a", 5000), 401, ReasonUnknownKey, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.pol.Evaluate(context.Background(), tt.authz, now, nil)
			if tt.wantStatus == 0 {
				if d.Denial != nil {
					t.Fatalf("denied: %+v", d.Denial)
				}
				if d.Identity.Key() != tt.wantID {
					t.Errorf("identity = %q, want %q", d.Identity.Key(), tt.wantID)
				}
				if tt.wantRule != "" && d.Rule != tt.wantRule {
					t.Errorf("rule = %q, want %q", d.Rule, tt.wantRule)
				}
				return
			}
			if d.Denial == nil {
				t.Fatalf("admitted %+v, want %d", d.Identity, tt.wantStatus)
			}
			if d.Denial.Status != tt.wantStatus || d.Denial.Reason != tt.wantReason {
				t.Errorf("denial = %d %s, want %d %s", d.Denial.Status, d.Denial.Reason, tt.wantStatus, tt.wantReason)
			}
			if d.Denial.Status == http.StatusUnauthorized && !strings.HasPrefix(d.Denial.Challenge, `Bearer realm="modelgate"`) {
				t.Errorf("401 without a Bearer challenge: %q", d.Denial.Challenge)
			}
			for _, k := range []string{acmeKey, batchKey, expiredKey, "acme", "batch-job"} {
				if strings.Contains(d.Denial.Message+d.Denial.Challenge, k) {
					t.Errorf("denial reveals %q: %+v", k, d.Denial)
				}
			}
		})
	}
}

func TestPublicAdmitsWithoutCredential(t *testing.T) {
	d := Public().Evaluate(context.Background(), "", now, nil)
	if d.Identity == nil || d.Identity.Method != MethodPublic {
		t.Fatalf("public policy: %+v", d)
	}
}

func TestNoRulesDeniesEverything(t *testing.T) {
	d := New(testIndex(), nil).Evaluate(context.Background(), "Bearer "+acmeKey, now, nil)
	if d.Denial == nil {
		t.Fatal("a policy with no rules admitted a caller")
	}
}

func TestTrace(t *testing.T) {
	var steps []Step
	pol := New(testIndex(), []RuleSpec{{KeySet: "batch"}, {KeySet: "partners"}})
	d := pol.Evaluate(context.Background(), "Bearer "+acmeKey, now, &steps)
	if d.Denial != nil || len(steps) != 2 {
		t.Fatalf("decision %+v steps %+v", d, steps)
	}
	if steps[0].Admitted || steps[0].Reason != ReasonKeyNotAllowed || !steps[1].Admitted {
		t.Errorf("steps = %+v", steps)
	}
}

func TestParseBearer(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"Bearer abc", "abc", true},
		{"BEARER abc", "abc", true},
		{"Bearer   abc", "abc", true},
		{"Bearer", "", false},
		{"Bearer ", "", false},
		{"Bearerabc", "", false},
		{"Basic abc", "", false},
		{"Bearer abc def", "", false},
		{"Bearer abc\tdef", "", false},
		{"Bearer abc\x00", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, ok := ParseBearer(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseBearer(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", true},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", true},
		{"eyJhbGciOiJSUzI1NiJ9.eyJ.c2ln.extra", true},
		{"mgk_0123456789abcdef", false},
		{"eyJonly-one.dot", false},
		{"abc.def.ghi", false},
		{"eyJ!!.x.yy", true}, // token-shaped; the verifier refuses it as malformed
		{"", false},
	}
	for _, tt := range tests {
		if got := LooksLikeJWT(tt.in); got != tt.want {
			t.Errorf("LooksLikeJWT(%q) = %v", tt.in, got)
		}
	}
}

// FuzzParseBearer: the header parser never panics, never returns a value
// with whitespace, and a value it accepts round-trips.
func FuzzParseBearer(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer  x", "Basic y", "Bearer eyJ.a.b", "Bearer \x00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, ok := ParseBearer(s)
		if !ok {
			return
		}
		if v == "" || strings.ContainsAny(v, " \t\r\n") {
			t.Fatalf("ParseBearer(%q) = %q", s, v)
		}
		if v2, ok2 := ParseBearer("Bearer " + v); !ok2 || v2 != v {
			t.Fatalf("round trip of %q failed", v)
		}
		_ = LooksLikeJWT(v)
		pol := New(testIndex(), []RuleSpec{{KeySet: "partners"}})
		if d := pol.Evaluate(context.Background(), s, now, nil); d.Identity != nil && v != acmeKey {
			t.Fatalf("admitted %q", s)
		}
	})
}

func BenchmarkEvaluateKey(b *testing.B) {
	pol := New(testIndex(), []RuleSpec{{KeySet: "partners"}})
	ctx := context.Background()
	authz := "Bearer " + acmeKey
	b.ReportAllocs()
	for b.Loop() {
		if d := pol.Evaluate(ctx, authz, now, nil); d.Denial != nil {
			b.Fatal(d.Denial)
		}
	}
}
