package gateway

import (
	"context"
	"fmt"
	"sync/atomic"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/credential"
)

// sourceAuth adapts a credential.Source to the proxy's UpstreamAuth. It keeps
// the "Bearer <value>" header string of the current generation so the hot
// path does not build it again for every request.
type sourceAuth struct {
	src  credential.Source
	last atomic.Pointer[authValue]
}

type authValue struct {
	cred   credential.Credential
	header string
}

func (a *sourceAuth) Authorization(ctx context.Context) (string, uint64, error) {
	c, err := a.src.Credential(ctx)
	if err != nil {
		return "", 0, err
	}
	if v := a.last.Load(); v != nil && v.cred.Generation == c.Generation && v.cred.Value.Equal(c.Value) {
		return v.header, c.Generation, nil
	}
	v := &authValue{cred: c, header: "Bearer " + c.Value.Reveal()}
	a.last.Store(v)
	return v.header, c.Generation, nil
}

func (a *sourceAuth) Rejected(ctx context.Context, gen uint64) bool {
	c := credential.Credential{Generation: gen}
	if v := a.last.Load(); v != nil && v.cred.Generation == gen {
		c = v.cred
	}
	return a.src.Rejected(ctx, c)
}

// upstreamSource builds the credential source for an upstream's auth
// section; nil for auth type none. The caller starts and closes it.
func upstreamSource(_ context.Context, name string, u *config.Upstream, deps Deps) (credential.ManagedSource, error) {
	switch u.Auth.Type {
	case config.AuthNone:
		return nil, nil
	case config.AuthKey:
		return newTmpKeySource(name, credential.Secret(u.Auth.Key.Reveal()), credential.Secret(u.Auth.SecondaryKey.Reveal()), deps.Logger), nil
	}
	return nil, fmt.Errorf("auth type %s is not supported yet", u.Auth.Type)
}
