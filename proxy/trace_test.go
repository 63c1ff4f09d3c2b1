package proxy

import "testing"

func TestParseTraceparent(t *testing.T) {
	tests := []struct {
		name, in, want string
		ok             bool
	}{
		{"valid", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736", true},
		{"unsampled", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "4bf92f3577b34da6a3ce929d0e0e4736", true},
		{"upper case", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "", false},
		{"zero trace id", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", "", false},
		{"zero parent id", "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "", false},
		{"other version", "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", false},
		{"short", "00-4bf92f35-00f067aa0ba902b7-01", "", false},
		{"garbage", "not a traceparent", "", false},
		{"empty", "", "", false},
	}
	for _, tt := range tests {
		got, ok := parseTraceparent(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: parseTraceparent = %q, %v", tt.name, got, ok)
		}
	}
}

func TestNewTraceparent(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		h, id := newTraceparent()
		got, ok := parseTraceparent(h)
		if !ok || got != id {
			t.Fatalf("newTraceparent = %q (%q) does not parse", h, id)
		}
		if seen[id] {
			t.Fatal("trace id repeated")
		}
		seen[id] = true
	}
}
