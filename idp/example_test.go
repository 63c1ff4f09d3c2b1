package idp_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/modelgate/modelgate/idp"
	"github.com/modelgate/modelgate/test/fakeaad"
)

// ExampleNew verifies a token from the fake Azure AD and evaluates a rule
// on it, as the route policy does.
func ExampleNew() {
	aad, err := fakeaad.Start()
	if err != nil {
		panic(err)
	}
	defer aad.Close()

	p, err := idp.New(idp.Options{
		Name:          "contoso",
		Type:          idp.TypeAzureAD,
		TenantID:      fakeaad.TenantID,
		AuthorityHost: aad.URL(),    // the fake instead of login.microsoftonline.com
		HTTPClient:    aad.Client(), // trusts the fake's certificate
		Audiences:     []string{fakeaad.APIAppIDURI, fakeaad.APIClientID},
	})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	p.Start(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		panic(err)
	}

	rule, err := idp.CompileRule(idp.RuleSpec{Roles: idp.Match{AnyOf: []string{"Score.Invoke"}}})
	if err != nil {
		panic(err)
	}

	claims := aad.V1Claims("", fakeaad.APIAppIDURI)
	c, err := p.Verify(ctx, aad.Mint(claims))
	if err != nil {
		panic(err)
	}
	ok, reason, detail := rule.Evaluate(c)
	fmt.Println(c.Version, c.ObjectID == fakeaad.UserObjectID, ok, reason, detail)

	claims["roles"] = []string{"Score.Invoke"}
	c, _ = p.Verify(ctx, aad.Mint(claims))
	ok, _, _ = rule.Evaluate(c)
	fmt.Println(ok)

	claims["aud"] = "api://someone-else"
	_, err = p.Verify(ctx, aad.Mint(claims))
	var e *idp.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status(), e.Reason)
		fmt.Println(e.Detail)
	}
	// Output:
	// 1.0 true false missing_role token lacks a required app role (one of: Score.Invoke)
	// true
	// 401 wrong_audience
	// token audience is not accepted by this gateway: request a token for the gateway's App ID URI or client id
}

// The fake's default tenant is a GUID, as Azure AD's are.
func TestExampleConstants(t *testing.T) {
	for _, id := range []string{fakeaad.TenantID, fakeaad.OtherTenantID, fakeaad.UserObjectID, fakeaad.ClientAppID, fakeaad.APIClientID} {
		if _, err := idp.CompileRule(idp.RuleSpec{Tenants: idp.Match{AnyOf: []string{id}}}); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}
