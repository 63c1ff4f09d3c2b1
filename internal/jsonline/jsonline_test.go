package jsonline

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"strings"
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
		l.Write(context.Background(), ln)
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

// TestHandlerMatchesFast: a line written through an slog.Handler carries
// the same fields as the fast path, and honours the handler's level and
// format.
func TestHandlerMatchesFast(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 5e8, time.UTC)
	write := func(l *Logger) {
		ln := l.Begin(at, slog.LevelWarn, "request")
		ln.Str("s", "a \"b\"")
		ln.Int("n", 502)
		ln.Bool("b", true)
		ln.Millis("d", 1234567*time.Microsecond)
		l.Write(context.Background(), ln)
	}
	var fast, viaSlog, text bytes.Buffer
	write(New(&fast, slog.LevelInfo))
	write(NewHandler(slog.NewJSONHandler(&viaSlog, nil)))
	write(NewHandler(slog.NewTextHandler(&text, nil)))
	var a, b map[string]any
	if err := json.Unmarshal(fast.Bytes(), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(viaSlog.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("fast %s\nslog %s", fast.Bytes(), viaSlog.Bytes())
	}
	const wantText = `time=2025-03-01T12:00:00.500Z level=WARN msg=request s="a \"b\"" n=502 b=true d=1234.567` + "\n"
	if text.String() != wantText {
		t.Errorf("text line\n%s want\n%s", text.String(), wantText)
	}

	quiet := NewHandler(slog.NewJSONHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelError}))
	if quiet.Enabled(context.Background(), slog.LevelWarn) || !quiet.Enabled(context.Background(), slog.LevelError) {
		t.Error("Enabled does not follow the handler's level")
	}
	if l := New(io.Discard, slog.LevelWarn); l.Enabled(context.Background(), slog.LevelInfo) || !l.Enabled(context.Background(), slog.LevelWarn) {
		t.Error("Enabled does not follow the level")
	}
	if strings.Count(fast.String(), "\n") != 1 {
		t.Errorf("fast path wrote %q, want one line", fast.String())
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
		l.Write(context.Background(), ln)
	}
}
