package idp_test

import (
	"context"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

const (
	group1 = "11111111-1111-4111-8111-111111111111"
	group2 = "22222222-2222-4222-8222-222222222222"
	user2  = "99999999-9999-4999-8999-999999999999"
)

func TestRuleEvaluate(t *testing.T) {
	base := func() *idp.Claims {
		return &idp.Claims{
			Version:  "2.0",
			ObjectID: fakeaad.UserObjectID,
			TenantID: fakeaad.TenantID,
			AppID:    fakeaad.ClientAppID,
			Roles:    []string{"Score.Invoke", "Reader"},
			Scopes:   []string{"Score.Invoke", "user_impersonation"},
			Groups:   []string{group1},
		}
	}
	any := func(v ...string) idp.Match { return idp.Match{AnyOf: v} }
	all := func(v ...string) idp.Match { return idp.Match{AllOf: v} }

	tests := []struct {
		name   string
		spec   idp.RuleSpec
		claims func(*idp.Claims)
		want   idp.Reason // "" = admitted
		detail string     // substring of the detail, when denied
	}{
		{name: "empty rule admits any verified token"},
		{name: "role any-of", spec: idp.RuleSpec{Roles: any("Admin", "Score.Invoke")}},
		{name: "role any-of missing", spec: idp.RuleSpec{Roles: any("Score.Admin")},
			want: idp.ReasonMissingRole, detail: "token lacks a required app role (one of: Score.Admin)"},
		{name: "roles are case-sensitive", spec: idp.RuleSpec{Roles: any("score.invoke")}, want: idp.ReasonMissingRole},
		{name: "role all-of", spec: idp.RuleSpec{Roles: all("Score.Invoke", "Reader")}},
		{name: "role all-of incomplete", spec: idp.RuleSpec{Roles: all("Score.Invoke", "Writer")},
			want: idp.ReasonMissingRole, detail: "all of: Score.Invoke, Writer"},
		{name: "role any-of and all-of both hold", spec: idp.RuleSpec{Roles: idp.Match{AnyOf: []string{"X", "Reader"}, AllOf: []string{"Score.Invoke"}}}},
		{name: "role any-of holds, all-of fails", spec: idp.RuleSpec{Roles: idp.Match{AnyOf: []string{"Reader"}, AllOf: []string{"Writer"}}},
			want: idp.ReasonMissingRole, detail: "one of: Reader; and all of: Writer"},
		{name: "no roles claim", spec: idp.RuleSpec{Roles: any("Score.Invoke")}, claims: func(c *idp.Claims) { c.Roles = nil },
			want: idp.ReasonMissingRole},
		{name: "scope from scp", spec: idp.RuleSpec{Scopes: any("user_impersonation")}},
		{name: "scope all-of", spec: idp.RuleSpec{Scopes: all("user_impersonation", "Score.Invoke")}},
		{name: "scope missing", spec: idp.RuleSpec{Scopes: any("Score.Admin")},
			want: idp.ReasonMissingScope, detail: "token lacks a required scope (one of: Score.Admin)"},
		{name: "app-only token has no scopes", spec: idp.RuleSpec{Scopes: any("Score.Invoke")},
			claims: func(c *idp.Claims) { c.Scopes = nil }, want: idp.ReasonMissingScope},
		{name: "app by appid/azp", spec: idp.RuleSpec{Apps: any(fakeaad.ClientAppID)}},
		{name: "app GUID in upper case", spec: idp.RuleSpec{Apps: any(strings.ToUpper(fakeaad.ClientAppID))}},
		{name: "app not allowed", spec: idp.RuleSpec{Apps: any(user2)}, want: idp.ReasonAppNotAllowed, detail: "appid/azp"},
		{name: "app missing", spec: idp.RuleSpec{Apps: any(fakeaad.ClientAppID)}, claims: func(c *idp.Claims) { c.AppID = "" },
			want: idp.ReasonAppNotAllowed},
		{name: "non-GUID app id (generic OIDC) exact", spec: idp.RuleSpec{Apps: any("MyClient")},
			claims: func(c *idp.Claims) { c.AppID = "MyClient" }},
		{name: "non-GUID app id is case-sensitive", spec: idp.RuleSpec{Apps: any("MyClient")},
			claims: func(c *idp.Claims) { c.AppID = "myclient" }, want: idp.ReasonAppNotAllowed},
		{name: "user by oid", spec: idp.RuleSpec{Users: any(user2, fakeaad.UserObjectID)}},
		{name: "user not allowed", spec: idp.RuleSpec{Users: any(user2)}, want: idp.ReasonUserNotAllowed},
		{name: "user all-of one value", spec: idp.RuleSpec{Users: all(fakeaad.UserObjectID)}},
		{name: "user with no oid", spec: idp.RuleSpec{Users: any(fakeaad.UserObjectID)}, claims: func(c *idp.Claims) { c.ObjectID = "" },
			want: idp.ReasonUserNotAllowed},
		{name: "upn is never consulted", spec: idp.RuleSpec{Users: any(user2)},
			claims: func(c *idp.Claims) { c.Name = user2; c.Subject = user2 }, want: idp.ReasonUserNotAllowed},
		{name: "tenant allowed", spec: idp.RuleSpec{Tenants: any(fakeaad.OtherTenantID, fakeaad.TenantID)}},
		{name: "tenant not allowed", spec: idp.RuleSpec{Tenants: any(fakeaad.OtherTenantID)}, want: idp.ReasonTenantNotAllowed},
		{name: "group member", spec: idp.RuleSpec{Groups: any(group2, group1)}},
		{name: "group GUID in upper case", spec: idp.RuleSpec{Groups: any(strings.ToUpper(group1))}},
		{name: "not in group", spec: idp.RuleSpec{Groups: any(group2)}, want: idp.ReasonNotInGroup},
		{name: "groups all-of incomplete", spec: idp.RuleSpec{Groups: all(group1, group2)}, want: idp.ReasonNotInGroup},
		{name: "groups overage is unknown, not empty", spec: idp.RuleSpec{Groups: any(group1)},
			claims: func(c *idp.Claims) { c.Groups, c.GroupsOverage = nil, true },
			want:   idp.ReasonGroupsUnknown, detail: "groups are unknown: the token carries a group overage claim (_claim_names.groups)"},
		{name: "groups overage all-of", spec: idp.RuleSpec{Groups: all(group1)},
			claims: func(c *idp.Claims) { c.Groups, c.GroupsOverage = nil, true }, want: idp.ReasonGroupsUnknown},
		{name: "groups overage with a visible match admits", spec: idp.RuleSpec{Groups: any(group1)},
			claims: func(c *idp.Claims) { c.GroupsOverage = true }},
		{name: "groups overage does not affect role rules", spec: idp.RuleSpec{Roles: any("Reader")},
			claims: func(c *idp.Claims) { c.Groups, c.GroupsOverage = nil, true }},
		{name: "combined: all hold", spec: idp.RuleSpec{
			Roles: any("Score.Invoke"), Scopes: any("Score.Invoke"), Groups: any(group1),
			Users: any(fakeaad.UserObjectID), Apps: any(fakeaad.ClientAppID), Tenants: any(fakeaad.TenantID)}},
		{name: "combined: first failing constraint reported (tenant before role)", spec: idp.RuleSpec{
			Roles: any("Nope"), Tenants: any(fakeaad.OtherTenantID)}, want: idp.ReasonTenantNotAllowed},
		{name: "combined: app before user", spec: idp.RuleSpec{
			Users: any(user2), Apps: any(user2)}, want: idp.ReasonAppNotAllowed},
		{name: "combined: role before groups", spec: idp.RuleSpec{
			Roles: any("Nope"), Groups: any(group2)}, want: idp.ReasonMissingRole},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := idp.CompileRule(tt.spec)
			if err != nil {
				t.Fatalf("CompileRule: %v", err)
			}
			c := base()
			if tt.claims != nil {
				tt.claims(c)
			}
			ok, reason, detail := r.Evaluate(c)
			if ok != (tt.want == "") || reason != tt.want {
				t.Fatalf("Evaluate = %v, %q, %q; want reason %q", ok, reason, detail, tt.want)
			}
			if tt.want != "" && detail == "" {
				t.Error("denied without a detail")
			}
			if !strings.Contains(detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", detail, tt.detail)
			}
			for _, id := range []string{user2, group2, fakeaad.OtherTenantID} {
				if strings.Contains(detail, id) {
					t.Errorf("detail %q lists an allowed id", detail)
				}
			}
		})
	}
}

// TestRuleOnVerifiedTokens runs rules on claims from real tokens, so that
// the claim mapping (scp splitting, appid vs azp, overage) is covered end
// to end.
func TestRuleOnVerifiedTokens(t *testing.T) {
	e := newEnv(t)
	p := e.provider(t, nil)
	a := e.aad
	apps, _ := idp.CompileRule(idp.RuleSpec{Apps: idp.Match{AnyOf: []string{fakeaad.ClientAppID}}})
	scopes, _ := idp.CompileRule(idp.RuleSpec{Scopes: idp.Match{AllOf: []string{"Score.Invoke", "Extra"}}})
	groups, _ := idp.CompileRule(idp.RuleSpec{Groups: idp.Match{AnyOf: []string{group1}}})
	upn, _ := idp.CompileRule(idp.RuleSpec{Users: idp.Match{AnyOf: []string{user2}}})

	v1 := a.V1Claims("", fakeaad.APIAppIDURI)
	v1["scp"] = "Extra Score.Invoke"
	v2 := a.V2Claims("", fakeaad.APIClientID)
	v2["appid"] = user2 // a v2 token's appid is not its client: azp is
	v2over := a.V2Claims("", fakeaad.APIClientID)
	v2over["_claim_names"] = map[string]string{"groups": "src1"}
	v1upn := a.V1Claims("", fakeaad.APIAppIDURI)
	v1upn["upn"], v1upn["unique_name"], v1upn["preferred_username"] = user2, user2, user2
	v2azp := a.V2Claims("", fakeaad.APIClientID)
	v2azp["azp"] = user2
	v2azp["appid"] = fakeaad.ClientAppID

	tests := []struct {
		name   string
		rule   *idp.Rule
		claims map[string]any
		want   idp.Reason
	}{
		{"v1 app via appid", apps, v1, ""},
		{"v2 app via azp, appid ignored", apps, v2, ""},
		{"v2 azp not allowed despite appid", apps, v2azp, idp.ReasonAppNotAllowed},
		{"scp split on spaces", scopes, v1, ""},
		{"scp incomplete", scopes, v2, idp.ReasonMissingScope},
		{"overage token on a groups rule", groups, v2over, idp.ReasonGroupsUnknown},
		{"no groups claim, no overage", groups, v2, idp.ReasonNotInGroup},
		{"upn equal to an allowed oid is not a user match", upn, v1upn, idp.ReasonUserNotAllowed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := p.Verify(context.Background(), a.Mint(tt.claims))
			if err != nil {
				t.Fatal(err)
			}
			ok, reason, detail := tt.rule.Evaluate(c)
			if ok != (tt.want == "") || reason != tt.want {
				t.Errorf("Evaluate = %v, %q, %q; want %q", ok, reason, detail, tt.want)
			}
		})
	}
}

func TestCompileRuleErrors(t *testing.T) {
	tests := []struct {
		name string
		spec idp.RuleSpec
		want []string
	}{
		{"empty value", idp.RuleSpec{Roles: idp.Match{AnyOf: []string{""}}}, []string{"roles.any_of[0]: empty value"}},
		{"space in scope", idp.RuleSpec{Scopes: idp.Match{AllOf: []string{"a b"}}}, []string{"scopes.all_of[0]", "white space"}},
		{"upn as user", idp.RuleSpec{Users: idp.Match{AnyOf: []string{"alice@contoso.com"}}}, []string{"users.any_of[0]", "never by upn"}},
		{"user not a GUID", idp.RuleSpec{Users: idp.Match{AnyOf: []string{"alice"}}}, []string{"not an object id"}},
		{"tenant not a GUID", idp.RuleSpec{Tenants: idp.Match{AnyOf: []string{"contoso.onmicrosoft.com"}}}, []string{"tenants.any_of[0]", "not a tenant id"}},
		{"users all-of two values", idp.RuleSpec{Users: idp.Match{AllOf: []string{fakeaad.UserObjectID, user2}}}, []string{"users.all_of", "use any_of"}},
		{"apps all-of two values", idp.RuleSpec{Apps: idp.Match{AllOf: []string{"a", "b"}}}, []string{"apps.all_of"}},
		{"every problem reported", idp.RuleSpec{
			Roles:   idp.Match{AnyOf: []string{""}},
			Tenants: idp.Match{AllOf: []string{"x"}},
		}, []string{"roles.any_of[0]", "tenants.all_of[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := idp.CompileRule(tt.spec)
			if err == nil {
				t.Fatalf("CompileRule accepted it: %+v", r)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
	// Duplicates in all-of of a single-valued claim are one value.
	if _, err := idp.CompileRule(idp.RuleSpec{Users: idp.Match{AllOf: []string{fakeaad.UserObjectID, strings.ToUpper(fakeaad.UserObjectID)}}}); err != nil {
		t.Errorf("duplicate user: %v", err)
	}
}

func TestEvaluateDoesNotAllocate(t *testing.T) {
	r, err := idp.CompileRule(idp.RuleSpec{
		Roles: idp.Match{AnyOf: []string{"Score.Invoke"}}, Groups: idp.Match{AllOf: []string{group1}},
		Apps: idp.Match{AnyOf: []string{fakeaad.ClientAppID}}, Scopes: idp.Match{AnyOf: []string{"Nope"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := &idp.Claims{Roles: []string{"Score.Invoke"}, Groups: []string{group1}, AppID: fakeaad.ClientAppID}
	if n := testing.AllocsPerRun(100, func() { r.Evaluate(c) }); n != 0 {
		t.Errorf("Evaluate allocates %v times", n)
	}
}
