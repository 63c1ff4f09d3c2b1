package gateway

import (
	"context"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/idp"
)

// Readiness is the /readyz report. It names each component and its state
// and never contains a credential.
type Readiness struct {
	Ready             bool                `json:"ready"`
	IdentityProviders []idp.Status        `json:"identity_providers"`
	Credentials       []credential.Status `json:"upstream_credentials"`
	// TLS is "ready", what the certificate manager still waits for, or
	// absent without TLS.
	TLS string `json:"tls,omitempty"`
}

// Readiness reports whether the snapshot can serve every route: every
// upstream credential is valid (and, with identity providers, every provider
// has keys).
func (s *Snapshot) Readiness() Readiness {
	rep := Readiness{Ready: true, Credentials: []credential.Status{}, IdentityProviders: []idp.Status{}}
	for _, name := range sortedNames(s.providers) {
		st := s.providers[name].Status()
		rep.IdentityProviders = append(rep.IdentityProviders, st)
		if !st.Ready {
			rep.Ready = false
		}
	}
	for _, name := range sortedNames(s.sources) {
		st := s.sources[name].Status()
		rep.Credentials = append(rep.Credentials, st)
		if !st.Ready {
			rep.Ready = false
		}
	}
	return rep
}

// WaitIdentityProviders waits until every identity provider has keys, or ctx
// ends.
func (s *Snapshot) WaitIdentityProviders(ctx context.Context) error {
	for _, p := range s.providers {
		if err := p.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}
