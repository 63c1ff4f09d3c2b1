package jsonline

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"
)

// TestMatchesEncodingJSON: every string round-trips through encoding/json
// to what encoding/json itself would decode, for hostile inputs too.
func TestMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "ctl \x00\x01\x1f\x7f", "nl\nret\rtab\t",
		"utf8 é 漢字 🙂", "bad \xff\xfe utf8", "sep \u2028 \u2029", `</script><b>`} {
		var buf bytes.Buffer
		l := New(&buf, slog.LevelInfo)
		ln := l.Begin(time.Unix(0, 0).UTC(), slog.LevelInfo, "m")
		ln.Str("k", s)
		ln.Int("n", -5)
		ln.Bool("b", true)
		ln.Millis("d", 1500*time.Microsecond)
		l.Write(ln)
		var got map[string]any
		if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
			t.Fatalf("%q: invalid JSON %s: %v", s, buf.Bytes(), err)
		}
		want, _ := json.Marshal(s)
		var wantS string
		_ = json.Unmarshal(want, &wantS)
		if got["k"] != wantS || got["n"] != -5.0 || got["b"] != true || got["d"] != 1.5 || got["msg"] != "m" || got["level"] != "INFO" {
			t.Errorf("%q: got %v", s, got)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("a\"b\\c\x00\xff\u2028")
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%q → invalid JSON %q", s, b)
		}
		want, _ := json.Marshal(s)
		var wantS string
		_ = json.Unmarshal(want, &wantS)
		if got != wantS {
			t.Fatalf("%q: decoded %q, want %q", s, got, wantS)
		}
	})
}

func BenchmarkLine(b *testing.B) {
	l := New(io.Discard, slog.LevelInfo)
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		ln := l.Begin(now, slog.LevelInfo, "request")
		ln.Str("request_id", "5cf808db7718-2")
		ln.Str("route", "fraud")
		ln.Str("identity", "key:partners/acme")
		ln.Int("status", 200)
		ln.Millis("duration_ms", 832*time.Microsecond)
		l.Write(ln)
	}
}
