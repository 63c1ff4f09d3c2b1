package ratelimit

import (
	"strconv"
	"testing"
	"time"
)

// TestTokensMemoryBounded: in memory (no store, or on_error local) the
// token counters of one day stay bounded however many identities call, as
// the request limiter's do: memory never grows past DefaultMaxIdentities.
func TestTokensMemoryBounded(t *testing.T) {
	l, err := NewTokens(TokenOptions{PerDay: 1000}, nil, "chat")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for i := range DefaultMaxIdentities + 1000 {
		l.memCharge("id-"+strconv.Itoa(i), 1, now)
	}
	if n := len(l.mem); n > DefaultMaxIdentities {
		t.Errorf("%d identities kept, want at most %d", n, DefaultMaxIdentities)
	}
}
