package pool_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/pool"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestParseRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   time.Duration
		ok     bool
	}{
		{"none", nil, 0, false},
		{"seconds", http.Header{"Retry-After": {"30"}}, 30 * time.Second, true},
		{"zero seconds", http.Header{"Retry-After": {"0"}}, 0, true},
		{"seconds with blanks", http.Header{"Retry-After": {" 12\t"}}, 12 * time.Second, true},
		{"IMF-fixdate", http.Header{"Retry-After": {"Sun, 01 Mar 2026 12:02:00 GMT"}}, 2 * time.Minute, true},
		{"RFC 850 date", http.Header{"Retry-After": {"Sunday, 01-Mar-26 12:00:10 GMT"}}, 10 * time.Second, true},
		{"asctime date", http.Header{"Retry-After": {"Sun Mar  1 12:00:05 2026"}}, 5 * time.Second, true},
		{"date in the past", http.Header{"Retry-After": {"Sun, 01 Mar 2026 11:00:00 GMT"}}, 0, true},
		{"retry-after-ms", http.Header{"Retry-After-Ms": {"1500"}}, 1500 * time.Millisecond, true},
		{"x-ms-retry-after-ms", http.Header{"X-Ms-Retry-After-Ms": {"250"}}, 250 * time.Millisecond, true},
		{"retry-after-ms before x-ms", http.Header{"Retry-After-Ms": {"100"}, "X-Ms-Retry-After-Ms": {"900"}}, 100 * time.Millisecond, true},
		{"ms before seconds", http.Header{"Retry-After": {"3"}, "X-Ms-Retry-After-Ms": {"2500"}}, 2500 * time.Millisecond, true},
		{"garbage ms falls through", http.Header{"Retry-After-Ms": {"abc"}, "Retry-After": {"4"}}, 4 * time.Second, true},
		{"negative ms falls through", http.Header{"X-Ms-Retry-After-Ms": {"-100"}, "Retry-After": {"4"}}, 4 * time.Second, true},
		{"negative seconds", http.Header{"Retry-After": {"-5"}}, 0, false},
		{"fractional seconds", http.Header{"Retry-After": {"1.5"}}, 0, false},
		{"fractional ms", http.Header{"Retry-After-Ms": {"1.5"}}, 0, false},
		{"plus sign", http.Header{"Retry-After": {"+5"}}, 0, false},
		{"empty", http.Header{"Retry-After": {""}}, 0, false},
		{"garbage", http.Header{"Retry-After": {"soon"}}, 0, false},
		{"bad date", http.Header{"Retry-After": {"Sun, 32 Mar 2026 12:00:00 GMT"}}, 0, false},
		{"huge seconds saturate", http.Header{"Retry-After": {"99999999999999999999999"}}, time.Duration(1<<63 - 1), true},
		{"huge ms saturate", http.Header{"Retry-After-Ms": {"99999999999999999999999"}}, time.Duration(1<<63 - 1), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := pool.ParseRetryAfter(tt.header, now)
			if got != tt.want || ok != tt.ok {
				t.Errorf("ParseRetryAfter = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestParseRetryAfterDoesNotAllocate(t *testing.T) {
	h := http.Header{"Retry-After": {"Sun, 01 Mar 2026 12:02:00 GMT"}, "X-Ms-Retry-After-Ms": {"x"}}
	if n := testing.AllocsPerRun(100, func() { pool.ParseRetryAfter(h, now) }); n != 0 {
		t.Errorf("ParseRetryAfter allocates %v times, want 0", n)
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "30", " 7 ", "-1", "1.5", "Sun, 01 Mar 2026 12:02:00 GMT",
		"Sunday, 01-Mar-26 12:00:10 GMT", "Sun Mar  1 12:00:05 2026", "99999999999999999999", "soon"} {
		f.Add(s, "", "")
		f.Add("", s, "")
		f.Add("", "", s)
	}
	f.Fuzz(func(t *testing.T, ra, ms, xms string) {
		h := http.Header{}
		set := func(k, v string) {
			if v != "" {
				h.Set(k, v)
			}
		}
		set("Retry-After", ra)
		set("Retry-After-Ms", ms)
		set("X-Ms-Retry-After-Ms", xms)
		d, ok := pool.ParseRetryAfter(h, now)
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("ParseRetryAfter(%q, %q, %q) = %v, %v", ra, ms, xms, d, ok)
		}
		digits := func(s string) bool {
			s = strings.Trim(s, " \t")
			return s != "" && strings.Trim(s, "0123456789") == ""
		}
		if (digits(ms) || digits(xms) || digits(ra)) && !ok {
			t.Fatalf("a digits-only value was ignored: %q, %q, %q", ra, ms, xms)
		}
		if d2, ok2 := pool.ParseRetryAfter(h, now); d2 != d || ok2 != ok {
			t.Fatal("not deterministic")
		}
	})
}

func TestResponseOutcome(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header http.Header
		want   pool.Outcome
	}{
		{"200", 200, nil, pool.Outcome{Status: 200}},
		{"429 with wait", 429, http.Header{"Retry-After": {"3"}}, pool.Outcome{Cond: pool.Status429, Status: 429, RetryAfter: 3 * time.Second, HasRetryAfter: true}},
		{"503 without", 503, nil, pool.Outcome{Cond: pool.Status503, Status: 503}},
		{"502 ignores Retry-After", 502, http.Header{"Retry-After": {"3"}}, pool.Outcome{Cond: pool.Status502, Status: 502}},
		{"501 is no condition", 501, nil, pool.Outcome{Status: 501}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pool.Response(tt.status, tt.header, now); got != tt.want {
				t.Errorf("Response = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestConditionNames(t *testing.T) {
	for _, s := range []string{"connect_error", "credential_unavailable", "timeout", "429", "500", "502", "503", "504"} {
		c, ok := pool.ParseCondition(s)
		if !ok || c.String() != s {
			t.Errorf("ParseCondition(%q) = %v, %v", s, c, ok)
		}
	}
	if got := (pool.ConnectError | pool.Status503).String(); got != "connect_error|503" {
		t.Errorf("String = %q", got)
	}
	if _, ok := pool.ParseCondition("404"); ok {
		t.Error("404 parsed as a condition")
	}
}
