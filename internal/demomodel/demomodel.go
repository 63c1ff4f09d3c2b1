// Package demomodel is a tiny stand-in for an Azure ML scoring endpoint,
// used by `gateway demo`. It accepts only its own key (as an ACI or AKS
// service with key auth does), answers POST /score with a JSON prediction,
// and streams server-sent events for ?stream=1.
package demomodel

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Handler returns the fake model. key is the only credential it accepts
// (as "Authorization: Bearer <key>"); callerHeader names the header in which
// the gateway passes the caller's identity.
func Handler(name, key, callerHeader string) http.Handler {
	want := []byte("Bearer " + key)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintln(w, `{"error":"the model endpoint wants its own key"}`)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if r.URL.Query().Get("stream") == "1" {
			stream(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"model":          name,
			"path":           r.URL.Path,
			"fraud_score":    0.07,
			"received_bytes": len(body),
			"caller":         r.Header.Get(callerHeader),
		})
	})
}

func stream(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("events"))
	if n <= 0 || n > 100 {
		n = 5
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	words := []string{"this", "answer", "streams", "token", "by", "token"}
	for i := range n {
		fmt.Fprintf(w, "data: {\"index\":%d,\"token\":%q}\n\n", i, words[i%len(words)])
		_ = rc.Flush()
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
	fmt.Fprint(w, "event: done\ndata: {}\n\n")
}
