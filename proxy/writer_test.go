package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestStatusWriter: the logged status is the first final one (1xx answers
// do not count), a bare Write or Flush means 200, bytes are counted, and
// Flush reaches the underlying writer.
func TestStatusWriter(t *testing.T) {
	tests := []struct {
		name   string
		do     func(w *statusWriter)
		status int
		bytes  int64
	}{
		{name: "write only", do: func(w *statusWriter) { _, _ = w.Write([]byte("abc")) }, status: 200, bytes: 3},
		{name: "header then write", do: func(w *statusWriter) { w.WriteHeader(404); _, _ = w.Write([]byte("no")) }, status: 404, bytes: 2},
		{name: "informational first", do: func(w *statusWriter) { w.WriteHeader(http.StatusEarlyHints); w.WriteHeader(201) }, status: 201},
		{name: "second header ignored", do: func(w *statusWriter) { w.WriteHeader(502); w.WriteHeader(200) }, status: 502},
		{name: "flush", do: func(w *statusWriter) { w.Flush() }, status: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			w := &statusWriter{ResponseWriter: rec}
			tt.do(w)
			if w.status != tt.status || w.bytes != tt.bytes {
				t.Errorf("status %d, %d bytes; want %d, %d", w.status, w.bytes, tt.status, tt.bytes)
			}
			if tt.name == "flush" && !rec.Flushed {
				t.Error("Flush did not reach the underlying writer")
			}
		})
	}
	if err := (&statusWriter{ResponseWriter: struct{ http.ResponseWriter }{httptest.NewRecorder()}}).FlushError(); err != http.ErrNotSupported {
		t.Errorf("FlushError on a writer that cannot flush = %v, want ErrNotSupported", err)
	}
}
