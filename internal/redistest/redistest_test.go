package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/redistest"
)

// TestLifecycle starts a server, kills, restarts, pauses and resumes it, and
// checks what a client sees at each step.
func TestLifecycle(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ping := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return c.Ping(ctx).Err()
	}
	if err := ping(time.Second); err != nil {
		t.Fatalf("PING after Start: %v", err)
	}
	if s.PID() == 0 {
		t.Fatal("PID is 0 while running")
	}

	s.Kill()
	if err := ping(200 * time.Millisecond); err == nil {
		t.Fatal("PING answered after Kill")
	}
	s.Restart(t)
	if err := ping(time.Second); err != nil {
		t.Fatalf("PING after Restart: %v", err)
	}

	s.Pause()
	start := time.Now()
	if err := ping(100 * time.Millisecond); err == nil {
		t.Fatal("PING answered while paused")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("PING to a paused server took %v despite a 100ms deadline", d)
	}
	s.Resume()
	deadline := time.Now().Add(5 * time.Second)
	for ping(200*time.Millisecond) != nil {
		if time.Now().After(deadline) {
			t.Fatal("no PING answer after Resume")
		}
	}
}
