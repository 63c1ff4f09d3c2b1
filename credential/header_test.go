package credential

import (
	"context"
	"testing"
)

// TestHeaderAuthCachesAndRejects: the header is built once per credential,
// and Rejected passes the whole rejected credential to the source.
func TestHeaderAuthCachesAndRejects(t *testing.T) {
	src, err := NewKey(KeyOptions{Name: "u", Primary: "primary-key-0123456789", Secondary: "secondary-key-0123456789"})
	if err != nil {
		t.Fatal(err)
	}
	h := NewHeaderAuth(src)
	ctx := context.Background()
	v1, g1, err := h.Authorization(ctx)
	if err != nil || v1 != "Bearer primary-key-0123456789" {
		t.Fatalf("Authorization = %q, %v", v1, err)
	}
	if allocs := testing.AllocsPerRun(100, func() { _, _, _ = h.Authorization(ctx) }); allocs != 0 {
		t.Errorf("steady-state Authorization allocates %.0f times", allocs)
	}
	if !h.Rejected(ctx, g1) {
		t.Fatal("Rejected(primary) = false with a secondary configured")
	}
	v2, g2, _ := h.Authorization(ctx)
	if v2 != "Bearer secondary-key-0123456789" || g2 == g1 {
		t.Fatalf("after rejection: %q gen %d (was %d)", v2, g2, g1)
	}
}
