package policy

import (
	"context"
	"fmt"
	"reflect"
	"testing"

	"github.com/modelgate/modelgate/idp"
)

// fakeVerifier is a TokenVerifier that knows a fixed set of tokens; any
// other token is malformed. If down is set it has no signing keys yet and
// refuses every token as unavailable.
type fakeVerifier struct {
	name   string
	down   bool
	tokens map[string]*idp.Claims
}

func (f *fakeVerifier) Verify(_ context.Context, raw string) (*idp.Claims, error) {
	if f.down {
		return nil, &idp.Error{Provider: f.name, Reason: idp.ReasonProviderUnavailable, Detail: "the identity provider's signing keys are not available yet"}
	}
	if c, ok := f.tokens[raw]; ok {
		return c, nil
	}
	return nil, &idp.Error{Provider: f.name, Reason: idp.ReasonBadSignature, Detail: `the token's "signature" does not verify`}
}

const (
	readerToken = "eyJreader.payload.sig"
	plainToken  = "eyJplain.payload.sig"
	forgedToken = "eyJforged.payload.sig"
)

// traceRoutes are the policies of a small gateway: key routes, token routes,
// mixed ones, and the edge cases (no rules, public).
func traceRoutes(t testing.TB) map[string]*Policy {
	t.Helper()
	claims := func(oid string, roles ...string) *idp.Claims {
		return &idp.Claims{TenantID: "11111111-1111-1111-1111-111111111111", ObjectID: oid, Roles: roles}
	}
	aad := &fakeVerifier{name: "aad", tokens: map[string]*idp.Claims{
		readerToken: claims("22222222-2222-2222-2222-222222222222", "reader"),
		plainToken:  claims("33333333-3333-3333-3333-333333333333"),
	}}
	other := &fakeVerifier{name: "other", tokens: map[string]*idp.Claims{plainToken: claims("44444444-4444-4444-4444-444444444444")}}
	down := &fakeVerifier{name: "down", down: true}
	readers, err := idp.CompileRule(idp.RuleSpec{Roles: idp.Match{AnyOf: []string{"reader"}}})
	if err != nil {
		t.Fatal(err)
	}
	keys := testIndex()
	return map[string]*Policy{
		"public":          Public(),
		"no rules":        New(keys, nil),
		"partners":        New(keys, []RuleSpec{{KeySet: "partners"}}),
		"batch, partners": New(keys, []RuleSpec{{KeySet: "batch"}, {KeySet: "partners"}}),
		"batch":           New(keys, []RuleSpec{{KeySet: "batch"}}),
		"aad":             New(keys, []RuleSpec{{Token: &TokenRule{ProviderName: "aad", Verifier: aad}}}),
		"aad readers":     New(keys, []RuleSpec{{Token: &TokenRule{ProviderName: "aad", Verifier: aad, Claims: readers}}}),
		"readers, then partners": New(keys, []RuleSpec{
			{Token: &TokenRule{ProviderName: "aad", Verifier: aad, Claims: readers}}, {KeySet: "partners"},
		}),
		"down, readers, other": New(keys, []RuleSpec{
			{Token: &TokenRule{ProviderName: "down", Verifier: down}},
			{Token: &TokenRule{ProviderName: "aad", Verifier: aad, Claims: readers}},
			{Token: &TokenRule{ProviderName: "other", Verifier: other}},
		}),
		"down": New(keys, []RuleSpec{{Token: &TokenRule{ProviderName: "down", Verifier: down}}}),
	}
}

// traceCredentials are Authorization header values of every kind.
var traceCredentials = map[string]string{
	"none":          "",
	"basic":         "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
	"empty bearer":  "Bearer",
	"malformed":     "Bearer a b",
	"partners key":  "Bearer " + acmeKey,
	"batch key":     "Bearer " + batchKey,
	"expired key":   "Bearer " + expiredKey,
	"unknown key":   "Bearer mgk_nope-0123456789abcdef0123",
	"reader token":  "Bearer " + readerToken,
	"plain token":   "Bearer " + plainToken,
	"forged token":  "Bearer " + forgedToken,
	"garbled token": "Bearer eyJ!!.x.yy",
}

// TestTraceAgreesWithDecision: tracing an evaluation (gateway explain) does
// not change its decision, and the trace ends in an admitting step exactly
// when the decision admits, naming the rule that did.
func TestTraceAgreesWithDecision(t *testing.T) {
	for rname, pol := range traceRoutes(t) {
		for cname, authz := range traceCredentials {
			t.Run(rname+"/"+cname, func(t *testing.T) {
				ctx := context.Background()
				want := pol.Evaluate(ctx, authz, now, nil)
				var steps []Step
				got := pol.Evaluate(ctx, authz, now, &steps)
				if !reflect.DeepEqual(got, want) {
					t.Errorf("traced decision %s, untraced %s", describe(got), describe(want))
				}
				if len(steps) == 0 {
					if want.Identity != nil && !pol.IsPublic() {
						t.Errorf("admitted by %q without a step", want.Rule)
					}
					return
				}
				if want.Denial != nil && len(steps) != len(pol.rules) {
					t.Errorf("denied after %d steps, want one per rule (%d)", len(steps), len(pol.rules))
				}
				last := steps[len(steps)-1]
				if last.Admitted != (want.Identity != nil) {
					t.Errorf("last step %+v, decision %+v", last, want)
				}
				if last.Admitted && last.Rule != want.Rule {
					t.Errorf("last step admits by %q, decision by %q", last.Rule, want.Rule)
				}
				for _, s := range steps[:len(steps)-1] {
					if s.Admitted {
						t.Errorf("step %+v admits before the last", s)
					}
				}
			})
		}
	}
}

func describe(d Decision) string {
	if d.Denial != nil {
		return fmt.Sprintf("denial %+v", *d.Denial)
	}
	return fmt.Sprintf("identity %+v by %q", *d.Identity, d.Rule)
}

func BenchmarkEvaluateToken(b *testing.B) {
	pol := traceRoutes(b)["aad readers"]
	ctx := context.Background()
	authz := "Bearer " + readerToken
	b.ReportAllocs()
	for b.Loop() {
		if d := pol.Evaluate(ctx, authz, now, nil); d.Denial != nil {
			b.Fatal(d.Denial)
		}
	}
}
