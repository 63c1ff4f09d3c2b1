package credential

import (
	"context"
	"testing"
)

// TestHeader: every source hands out credentials whose Authorization header
// was built once, when the source obtained the credential, so the proxy's
// per-request Credential + Header allocates nothing; a Credential built
// elsewhere still yields the right header.
func TestHeader(t *testing.T) {
	ctx := context.Background()
	keys, err := NewKey(KeyOptions{Name: "k", Primary: "primary-key-0123456789", Secondary: "secondary-key-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := NewTokenSource(TokenSourceOptions{Name: "t", Fetch: func(context.Context) (Token, error) {
		return Token{Value: "token-0123456789"}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tokens.Close() })
	tests := []struct {
		name string
		src  Source
		want string
	}{
		{name: "key", src: keys, want: "Bearer primary-key-0123456789"},
		{name: "token", src: tokens, want: "Bearer token-0123456789"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.src.Credential(ctx)
			if err != nil || c.Header() != tt.want {
				t.Fatalf("Credential().Header() = %q, %v; want %q", c.Header(), err, tt.want)
			}
			allocs := testing.AllocsPerRun(100, func() {
				c, _ := tt.src.Credential(ctx)
				_ = c.Header()
			})
			if allocs != 0 {
				t.Errorf("Credential + Header allocate %.0f times per call", allocs)
			}
		})
	}
	if got := (Credential{Value: "elsewhere"}).Header(); got != "Bearer elsewhere" {
		t.Errorf("Header of a hand-built credential = %q", got)
	}
}

// TestHeaderFollowsRejection: after the upstream rejects the primary key,
// the next credential carries the secondary's header, and a late report
// about the primary neither switches back nor denies the replay.
func TestHeaderFollowsRejection(t *testing.T) {
	ctx := context.Background()
	src, err := NewKey(KeyOptions{Name: "k", Primary: "key-a", Secondary: "key-b"})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := src.Credential(ctx)
	if !src.Rejected(ctx, first) {
		t.Fatal("Rejected(primary) = false with a secondary configured")
	}
	second, _ := src.Credential(ctx)
	if second.Header() != "Bearer key-b" || second.Generation == first.Generation {
		t.Fatalf("after rejection: %q gen %d (was %d)", second.Header(), second.Generation, first.Generation)
	}
	if !src.Rejected(ctx, first) {
		t.Fatal("stale Rejected said no replay although a different key is in use")
	}
	if c, _ := src.Credential(ctx); c.Header() != "Bearer key-b" {
		t.Fatalf("stale Rejected switched keys: %q", c.Header())
	}
}
