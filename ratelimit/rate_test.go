package ratelimit

import (
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"
)

func TestParseRate(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Rate
		wantErr string // substring of the error; "" means success
	}{
		{name: "per second", in: "5/s", want: Rate{5, time.Second}},
		{name: "per minute", in: "100/m", want: Rate{100, time.Minute}},
		{name: "per hour", in: "10/h", want: Rate{10, time.Hour}},
		{name: "one", in: "1/s", want: Rate{1, time.Second}},
		{name: "surrounding spaces", in: "  7/m\t", want: Rate{7, time.Minute}},
		{name: "leading zeros", in: "007/s", want: Rate{7, time.Second}},
		{name: "max", in: "1000000000/s", want: Rate{MaxEvents, time.Second}},

		{name: "empty", in: "", wantErr: "empty"},
		{name: "blank", in: "   ", wantErr: "empty"},
		{name: "no unit", in: "5", wantErr: `missing "/unit"`},
		{name: "empty unit", in: "5/", wantErr: `unit "" is not one of s, m, h`},
		{name: "long unit", in: "5/sec", wantErr: `unit "sec" is not one of s, m, h`},
		{name: "upper unit", in: "5/S", wantErr: `unit "S"`},
		{name: "day", in: "5/d", wantErr: `unit "d"`},
		{name: "duration unit", in: "5/100ms", wantErr: `unit "100ms"`},
		{name: "inner space", in: "5 / s", wantErr: `unit " s"`},
		{name: "zero", in: "0/s", wantErr: "at least 1"},
		{name: "negative", in: "-1/s", wantErr: `"-1" is not a whole number`},
		{name: "plus", in: "+1/s", wantErr: `"+1" is not a whole number`},
		{name: "fraction", in: "1.5/s", wantErr: `"1.5" is not a whole number`},
		{name: "no number", in: "/s", wantErr: `"" is not a whole number`},
		{name: "words", in: "five/s", wantErr: "not a whole number"},
		{name: "too many", in: "1000000001/s", wantErr: "more than the maximum"},
		{name: "overflow", in: "99999999999999999999999/s", wantErr: "more than the maximum"},
		{name: "two slashes", in: "5/s/s", wantErr: `unit "s/s"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRate(tt.in)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("ParseRate(%q) = %v, want error containing %q", tt.in, got, tt.wantErr)
				}
				if !errors.Is(err, ErrInvalidRate) {
					t.Errorf("ParseRate(%q) error %v does not wrap ErrInvalidRate", tt.in, err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("ParseRate(%q) error = %q, want it to contain %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRate(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseRate(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRateLimitBurstString(t *testing.T) {
	tests := []struct {
		in        string
		limit     rate.Limit
		burst     int
		formatted string
	}{
		{"5/s", 5, 5, "5/s"},
		{"1/s", 1, 1, "1/s"},
		{"100/m", rate.Limit(100.0 / 60), 2, "100/m"},
		{"60/m", 1, 1, "60/m"},
		{"61/m", rate.Limit(61.0 / 60), 2, "61/m"},
		{"10/h", rate.Limit(10.0 / 3600), 1, "10/h"},
		{"7200/h", 2, 2, "7200/h"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRate(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Limit(); got != tt.limit {
				t.Errorf("Limit() = %v, want %v", got, tt.limit)
			}
			if got := r.DefaultBurst(); got != tt.burst {
				t.Errorf("DefaultBurst() = %d, want %d", got, tt.burst)
			}
			if got := r.String(); got != tt.formatted {
				t.Errorf("String() = %q, want %q", got, tt.formatted)
			}
		})
	}
	if got := (Rate{}).String(); got != "none" {
		t.Errorf("zero Rate String() = %q, want none", got)
	}
	if got := (Rate{}).Limit(); got != 0 {
		t.Errorf("zero Rate Limit() = %v, want 0", got)
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want int
	}{
		{-time.Second, 1},
		{0, 1},
		{1, 1},
		{200 * time.Millisecond, 1},
		{time.Second, 1},
		{time.Second + 1, 2},
		{59*time.Second + 500*time.Millisecond, 60},
		{time.Hour, 3600},
		{time.Duration(1<<63 - 1), 1<<31 - 1},
	}
	for _, tt := range tests {
		if got := RetryAfterSeconds(tt.d); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tt.d, got, tt.want)
		}
	}
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"5/s", "100/m", "10/h", "0/s", "-1/s", "1.5/s", "5", "/", "5/sec", " 3/h ", "1000000001/s", "007/m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRate(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRate) {
				t.Fatalf("ParseRate(%q) error %v does not wrap ErrInvalidRate", s, err)
			}
			return
		}
		if r.Events < 1 || r.Events > MaxEvents {
			t.Fatalf("ParseRate(%q) = %+v: events out of range", s, r)
		}
		if r.Per != time.Second && r.Per != time.Minute && r.Per != time.Hour {
			t.Fatalf("ParseRate(%q) = %+v: unexpected period", s, r)
		}
		if b := r.DefaultBurst(); b < 1 || b > MaxEvents {
			t.Fatalf("ParseRate(%q).DefaultBurst() = %d", s, b)
		}
		// String must round-trip.
		again, err := ParseRate(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRate(%q) = %+v; String() %q parses to %+v, %v", s, r, r.String(), again, err)
		}
	})
}
