package gateway

import (
	"context"
	"log/slog"
	"sync"

	"github.com/modelgate/modelgate/credential"
)

// TEMPORARY until credential.NewKeySource lands.
type tmpKeySource struct {
	name string
	mu   sync.Mutex
	keys []credential.Secret
	cur  int
	gen  uint64
}

func newTmpKeySource(name string, primary, secondary credential.Secret, _ *slog.Logger) *tmpKeySource {
	s := &tmpKeySource{name: name, keys: []credential.Secret{primary}, gen: 1}
	if secondary != "" {
		s.keys = append(s.keys, secondary)
	}
	return s
}

func (s *tmpKeySource) Credential(context.Context) (credential.Credential, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return credential.Credential{Value: s.keys[s.cur], Generation: s.gen}, nil
}

func (s *tmpKeySource) Rejected(_ context.Context, c credential.Credential) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) < 2 {
		return false
	}
	if c.Generation == s.gen {
		s.cur = 1 - s.cur
		s.gen++
	}
	return true
}

func (s *tmpKeySource) Status() credential.Status {
	return credential.Status{Name: s.name, Type: "key", Ready: true}
}
func (s *tmpKeySource) Start()       {}
func (s *tmpKeySource) Close() error { return nil }
