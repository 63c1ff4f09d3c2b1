package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
)

// TestWatchUsage: usage is found in a JSON answer and in the last SSE data
// event that carries it, however the body is split into reads, and the
// body reaches the reader unchanged.
func TestWatchUsage(t *testing.T) {
	usage := `"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`
	tests := []struct {
		name, ctype, body string
		want              int64
	}{
		{"json", "application/json; charset=utf-8", `{"id":"x",` + usage + `}`, 7},
		{"json without usage", "application/json", `{"id":"x"}`, 0},
		{"json usage null", "application/json", `{"usage":null}`, 0},
		{"sse last event", "text/event-stream", "data: {\"a\":1}\n\ndata: {\"choices\":[]," + usage + "}\n\ndata: [DONE]\n\n", 7},
		{"sse crlf", "text/event-stream", "data: {\"a\":1}\r\n\r\ndata: {" + usage + "}\r\n\r\n", 7},
		{"sse no final newline", "text/event-stream", "data: {" + usage + "}", 7},
		{"sse usage null mid-stream", "text/event-stream", "data: {\"usage\":null}\n\ndata: {\"x\":1}\n\n", 0},
		{"sse comment mentioning usage", "text/event-stream", ": \"usage\" {" + usage + "}\n\n", 0},
		{"sse line too long", "text/event-stream", "data: {\"pad\":\"" + strings.Repeat("x", maxUsageBytes) + "\"," + usage + "}\n\n", 0},
		{"text", "text/plain", usage, 0},
	}
	for _, tt := range tests {
		for _, oneByte := range []bool{false, true} {
			st := &reqState{tok: &tokenState{}}
			res := &http.Response{Header: http.Header{"Content-Type": {tt.ctype}}, Body: io.NopCloser(strings.NewReader(tt.body))}
			watchUsage(res, st)
			var r io.Reader = res.Body
			if oneByte && len(tt.body) < 10000 {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(r)
			if err != nil || string(got) != tt.body {
				t.Errorf("%s: body changed or failed: %v", tt.name, err)
			}
			if st.tok.usage.TotalTokens != tt.want {
				t.Errorf("%s (one byte at a time: %v): total %d, want %d", tt.name, oneByte, st.tok.usage.TotalTokens, tt.want)
			}
		}
	}
}

// TestInjectStreamUsage: only a buffered JSON body asking for a stream
// without stream_options gains include_usage; the rest is unchanged.
func TestInjectStreamUsage(t *testing.T) {
	tests := []struct{ name, ctype, body, want string }{
		{"streamed chat", "application/json", `{"model":"m","stream":true,"messages":[]}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[]}`},
		{"leading space", "application/json; charset=utf-8", ` { "stream": true }`, ` {"stream_options":{"include_usage":true}, "stream": true }`},
		{"not streamed", "application/json", `{"stream":false}`, `{"stream":false}`},
		{"no stream field", "application/json", `{"messages":[]}`, `{"messages":[]}`},
		{"has stream_options", "application/json", `{"stream":true,"stream_options":{"include_usage":false}}`, `{"stream":true,"stream_options":{"include_usage":false}}`},
		{"not json", "text/plain", `{"stream":true}`, `{"stream":true}`},
		{"invalid json", "application/json", `{"stream":true`, `{"stream":true`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _ := http.NewRequest("POST", "http://x/", strings.NewReader(tt.body))
			r.Header.Set("Content-Type", tt.ctype)
			injectStreamUsage(r)
			got, _ := io.ReadAll(r.Body)
			if string(got) != tt.want || r.ContentLength != int64(len(tt.want)) {
				t.Errorf("body %s (length %d), want %s", got, r.ContentLength, tt.want)
			}
			if again, _ := r.GetBody(); again != nil {
				if b, _ := io.ReadAll(again); string(b) != tt.want {
					t.Errorf("GetBody gives %s", b)
				}
			}
		})
	}
}

// TestWatchUsageForSpansOnly: where only a span wants the usage (no token
// limit), a JSON answer is kept only up to traceUsageBytes, so large
// scoring answers are not buffered for it; an LLM answer's usage is still
// found.
func TestWatchUsageForSpansOnly(t *testing.T) {
	usage := `"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}`
	for _, tt := range []struct {
		name, body string
		want       int64
	}{
		{"small llm answer", `{"choices":[],` + usage + `}`, 7},
		{"large scoring answer", `{"scores":"` + strings.Repeat("9", 100<<10) + `",` + usage + `}`, 0},
	} {
		st := &reqState{tok: &tokenState{spanOnly: true}}
		res := &http.Response{Header: http.Header{"Content-Type": {"application/json"}}, Body: io.NopCloser(strings.NewReader(tt.body))}
		watchUsage(res, st)
		body := res.Body.(*usageBody)
		maxBuf := 0
		for {
			var p [4096]byte
			_, err := body.Read(p[:])
			maxBuf = max(maxBuf, cap(body.buf))
			if err != nil {
				break
			}
		}
		if st.tok.usage.TotalTokens != tt.want {
			t.Errorf("%s: total %d, want %d", tt.name, st.tok.usage.TotalTokens, tt.want)
		}
		if maxBuf > 2*traceUsageBytes {
			t.Errorf("%s: kept up to %d bytes for a span, want at most about %d", tt.name, maxBuf, traceUsageBytes)
		}
	}
}
