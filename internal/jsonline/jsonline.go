// Package jsonline writes one JSON object per line, fast: fields are
// appended straight into a pooled buffer and written with one Write call.
// It produces the same shape as log/slog's JSONHandler
// ({"time":...,"level":"INFO","msg":...,fields...}) for the gateway's
// per-request audit line, at a fraction of slog's cost (no Attr slices, no
// reflection, no per-record allocation).
package jsonline

import (
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Logger writes lines to an io.Writer. It is safe for concurrent use; each
// line is one Write call, so lines never interleave.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	level slog.Level
}

// New returns a Logger that writes lines at level and above to w.
func New(w io.Writer, level slog.Level) *Logger { return &Logger{w: w, level: level} }

// Enabled reports whether a line at level would be written.
func (l *Logger) Enabled(level slog.Level) bool { return level >= l.level }

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &Line{buf: b} }}

// Line is one JSON object being built. Get one from Begin and hand it to
// Write; do not keep it.
type Line struct{ buf []byte }

// Begin starts a line with time, level and msg.
func (l *Logger) Begin(t time.Time, level slog.Level, msg string) *Line {
	ln := pool.Get().(*Line)
	ln.buf = append(ln.buf[:0], `{"time":"`...)
	ln.buf = t.AppendFormat(ln.buf, time.RFC3339Nano)
	ln.buf = append(ln.buf, `","level":"`...)
	ln.buf = append(ln.buf, level.String()...)
	ln.buf = append(ln.buf, `","msg":`...)
	ln.buf = appendString(ln.buf, msg)
	return ln
}

// Str adds a string field.
func (ln *Line) Str(k, v string) {
	ln.key(k)
	ln.buf = appendString(ln.buf, v)
}

// Int adds an integer field.
func (ln *Line) Int(k string, v int64) {
	ln.key(k)
	ln.buf = strconv.AppendInt(ln.buf, v, 10)
}

// Millis adds a duration as fractional milliseconds (microsecond precision).
func (ln *Line) Millis(k string, d time.Duration) {
	ln.key(k)
	ln.buf = strconv.AppendFloat(ln.buf, float64(d.Microseconds())/1000, 'f', -1, 64)
}

// Bool adds a boolean field.
func (ln *Line) Bool(k string, v bool) {
	ln.key(k)
	ln.buf = strconv.AppendBool(ln.buf, v)
}

func (ln *Line) key(k string) {
	ln.buf = append(ln.buf, ',')
	ln.buf = appendString(ln.buf, k)
	ln.buf = append(ln.buf, ':')
}

// Write ends the line and writes it. Write errors are dropped, as slog does.
func (l *Logger) Write(ln *Line) {
	ln.buf = append(ln.buf, '}', '\n')
	l.mu.Lock()
	_, _ = l.w.Write(ln.buf)
	l.mu.Unlock()
	if cap(ln.buf) <= 16<<10 {
		pool.Put(ln)
	}
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string, escaping as encoding/json does
// for ", \, control characters, invalid UTF-8 (as U+FFFD) and U+2028/2029.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
