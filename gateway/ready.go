package gateway

import (
	"github.com/modelgate/modelgate/credential"
)

// Readiness is the /readyz report. It names each component and its state
// and never contains a credential.
type Readiness struct {
	Ready       bool                `json:"ready"`
	Credentials []credential.Status `json:"upstream_credentials"`
}

// Readiness reports whether the snapshot can serve every route: every
// upstream credential is valid (and, with identity providers, every provider
// has keys).
func (s *Snapshot) Readiness() Readiness {
	rep := Readiness{Ready: true, Credentials: []credential.Status{}}
	for _, src := range s.sources {
		st := src.Status()
		rep.Credentials = append(rep.Credentials, st)
		if !st.Ready {
			rep.Ready = false
		}
	}
	return rep
}
