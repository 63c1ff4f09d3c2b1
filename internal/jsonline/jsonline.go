// Package jsonline writes the gateway's one audit line per request. Its fast
// path writes one JSON object per line in the shape of log/slog's
// JSONHandler ({"time":...,"level":"INFO","msg":...,fields...}) at a
// fraction of slog's cost: fields are appended straight into a pooled buffer
// and written with one Write call (no Attr slices, no reflection, no
// per-line allocation). A Logger made with NewHandler hands the same fields
// to an slog.Handler instead, for the text format and for a main log shared
// with other lines; callers write a line the same way either way.
package jsonline

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Logger writes lines to an io.Writer or an slog.Handler. It is safe for
// concurrent use; each line is one Write call (or one Handle call), so lines
// never interleave.
type Logger struct {
	mu    sync.Mutex
	w     io.Writer
	level slog.Level
	h     slog.Handler // when not nil, lines go to h instead of w
}

// New returns a Logger that writes JSON lines at level and above to w.
func New(w io.Writer, level slog.Level) *Logger { return &Logger{w: w, level: level} }

// NewHandler returns a Logger that hands each line to h as one slog record
// (without a source location), for any format and level h implements. It
// allocates per line where New does not.
func NewHandler(h slog.Handler) *Logger { return &Logger{h: h} }

// Enabled reports whether a line at level would be written.
func (l *Logger) Enabled(ctx context.Context, level slog.Level) bool {
	if l.h != nil {
		return l.h.Enabled(ctx, level)
	}
	return level >= l.level
}

var pool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &Line{buf: b} }}

// Line is one line being built. Get one from Begin and hand it to Write; do
// not keep it.
type Line struct {
	buf []byte

	// For a Logger made with NewHandler: the record being built.
	toHandler bool
	time      time.Time
	level     slog.Level
	msg       string
	attrs     []slog.Attr
}

// Begin starts a line with time, level and msg.
func (l *Logger) Begin(t time.Time, level slog.Level, msg string) *Line {
	ln := pool.Get().(*Line)
	if l.h != nil {
		ln.toHandler, ln.time, ln.level, ln.msg = true, t, level, msg
		if ln.attrs == nil {
			ln.attrs = make([]slog.Attr, 0, 20) // room for a request line's fields
		}
		return ln
	}
	ln.toHandler = false
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
	if ln.toHandler {
		ln.attrs = append(ln.attrs, slog.String(k, v))
		return
	}
	ln.key(k)
	ln.buf = appendString(ln.buf, v)
}

// Int adds an integer field.
func (ln *Line) Int(k string, v int64) {
	if ln.toHandler {
		ln.attrs = append(ln.attrs, slog.Int64(k, v))
		return
	}
	ln.key(k)
	ln.buf = strconv.AppendInt(ln.buf, v, 10)
}

// Millis adds a duration as fractional milliseconds (microsecond precision).
func (ln *Line) Millis(k string, d time.Duration) {
	ms := float64(d.Microseconds()) / 1000
	if ln.toHandler {
		ln.attrs = append(ln.attrs, slog.Float64(k, ms))
		return
	}
	ln.key(k)
	ln.buf = strconv.AppendFloat(ln.buf, ms, 'f', -1, 64)
}

// Bool adds a boolean field.
func (ln *Line) Bool(k string, v bool) {
	if ln.toHandler {
		ln.attrs = append(ln.attrs, slog.Bool(k, v))
		return
	}
	ln.key(k)
	ln.buf = strconv.AppendBool(ln.buf, v)
}

func (ln *Line) key(k string) {
	ln.buf = append(ln.buf, ',')
	ln.buf = appendString(ln.buf, k)
	ln.buf = append(ln.buf, ':')
}

// Write ends the line and writes it; ctx reaches the slog.Handler of a
// Logger made with NewHandler. Write errors are dropped, as slog does.
func (l *Logger) Write(ctx context.Context, ln *Line) {
	if ln.toHandler {
		r := slog.NewRecord(ln.time, ln.level, ln.msg, 0)
		r.AddAttrs(ln.attrs...)
		_ = l.h.Handle(ctx, r)
		clear(ln.attrs) // keep no request data in the pool
		ln.attrs = ln.attrs[:0]
		pool.Put(ln)
		return
	}
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
