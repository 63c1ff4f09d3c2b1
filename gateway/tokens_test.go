package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/modelgate/modelgate/internal/jsonline"
	"github.com/modelgate/modelgate/internal/redistest"
	"github.com/modelgate/modelgate/metrics"
)

// fakeLLM answers /json with a JSON completion and /sse with a stream whose
// last data event carries usage when the request asked for it
// (stream_options.include_usage); each reports 60 tokens (45 + 15).
func fakeLLM(t *testing.T) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		usage := `"usage":{"prompt_tokens":45,"completion_tokens":15,"total_tokens":60}`
		switch {
		case strings.HasSuffix(r.URL.Path, "/sse"):
			body, _ := io.ReadAll(r.Body)
			if !strings.HasPrefix(string(body), `{"stream_options":{"include_usage":true},"stream":true`) {
				usage = `"usage":null`
			}
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 3 {
				fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"w%d\"}}]}\n\n", i)
				w.(http.Flusher).Flush()
			}
			fmt.Fprintf(w, "data: {\"choices\":[],%s}\n\ndata: [DONE]\n\n", usage)
		case strings.HasSuffix(r.URL.Path, "/nousage"):
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"choices":[]}`)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"choices":[{"message":{"content":"hi"}}],%s}`, usage)
		}
	}))
	t.Cleanup(up.Close)
	return up
}

// TestTokenLimit: admission checks use so far, the answer's usage (JSON or
// the last SSE event with usage) is charged after it, 429 with Retry-After
// once the minute is used up; headers, audit fields and metrics follow; in
// memory and in the store.
func TestTokenLimit(t *testing.T) {
	srv := redistest.Start(t)
	up := fakeLLM(t)
	for _, mode := range []string{"memory", "redis"} {
		t.Run(mode, func(t *testing.T) {
			y := `
key_sets:
  s:
    - { id: a, sha256: "` + sha(keyA) + `" }
upstreams:
  u: { url: "` + up.URL + `", auth: { type: none } }
routes:
  - name: chat-` + mode + `
    path: /
    upstream: u
    allow: [{ key_set: s }]
    token_limit: { per_minute: 100, per_day: 1000, inject_stream_usage: true }
`
			if mode == "redis" {
				y += "limits:\n  store: { type: redis, url: \"" + srv.URL() + "\" }\n"
			}
			// Mid-minute, so the requests share one window.
			now := time.Now().Truncate(time.Minute).Add(20 * time.Second)
			var audit bytes.Buffer
			m := metrics.New("test")
			snap, err := Build(context.Background(), parse(t, y), Deps{Now: func() time.Time { return now }, Metrics: m,
				Audit: jsonline.New(&audit, slog.LevelInfo)})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(snap.Close)
			call := func(path string) *httptest.ResponseRecorder {
				req := httptest.NewRequest("POST", path, strings.NewReader(`{"stream":true}`))
				req.Header.Set("Authorization", "Bearer "+keyA)
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				snap.Handler.ServeHTTP(rec, req)
				return rec
			}
			rec := call("/v1/json")
			if rec.Code != 200 || rec.Header().Get("X-Ratelimit-Limit-Tokens") != "100" || rec.Header().Get("X-Ratelimit-Remaining-Tokens") != "100" {
				t.Fatalf("first: %d %v", rec.Code, rec.Header())
			}
			rec = call("/v1/sse")
			if rec.Code != 200 || rec.Header().Get("X-Ratelimit-Remaining-Tokens") != "40" {
				t.Fatalf("second (60 used): %d remaining %q", rec.Code, rec.Header().Get("X-Ratelimit-Remaining-Tokens"))
			}
			if !strings.Contains(rec.Body.String(), "w2") || !strings.Contains(rec.Body.String(), "[DONE]") {
				t.Errorf("stream not passed through: %q", rec.Body)
			}
			rec = call("/v1/json")
			if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "40" || rec.Header().Get("X-Ratelimit-Remaining-Tokens") != "0" {
				t.Errorf("third (120 of 100 used): %d Retry-After %q %v", rec.Code, rec.Header().Get("Retry-After"), rec.Header())
			}
			now = now.Add(time.Minute)
			if rec := call("/v1/nousage"); rec.Code != 200 {
				t.Errorf("next minute: %d", rec.Code)
			}

			var lines []map[string]any
			for _, l := range strings.Split(strings.TrimSpace(audit.String()), "\n") {
				var v map[string]any
				if err := json.Unmarshal([]byte(l), &v); err != nil {
					t.Fatalf("audit line %q: %v", l, err)
				}
				lines = append(lines, v)
			}
			if len(lines) != 4 || lines[0]["total_tokens"] != float64(60) || lines[1]["prompt_tokens"] != float64(45) || lines[1]["completion_tokens"] != float64(15) {
				t.Errorf("audit lines lack usage: %v", lines)
			}
			if _, ok := lines[3]["total_tokens"]; ok {
				t.Errorf("an answer without usage has tokens in its audit line: %v", lines[3])
			}
			route := "chat-" + mode
			scrape := httptest.NewRecorder()
			m.Handler().ServeHTTP(scrape, httptest.NewRequest("GET", "/metrics", nil))
			for _, want := range []string{
				`modelgate_tokens_total{kind="total",route="` + route + `"} 120`,
				`modelgate_tokens_total{kind="prompt",route="` + route + `"} 90`,
				`modelgate_token_usage_missing_total{route="` + route + `"} 1`,
			} {
				if !strings.Contains(scrape.Body.String(), want) {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}
