package proxy

import (
	"net/http"
	"strconv"
	"strings"
)

// requestID honours a sane client-sent X-Request-Id and otherwise makes one
// from a per-process random prefix and a counter (unique, and cheap).
func (h *Handler) requestID(r *http.Request) string {
	if v := r.Header.Get(headerRequestID); v != "" && validRequestID(v) {
		return v
	}
	var b [32]byte
	n := copy(b[:], h.idPrefix)
	return string(strconv.AppendUint(b[:n], h.idCounter.Add(1), 36))
}

func validRequestID(s string) bool {
	return len(s) <= 128 && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:") == ""
}

// dropRequestID is the ReverseProxy's ModifyResponse: it removes the
// upstream's X-Request-Id from the answer, which already carries the
// gateway's (see reverseProxy).
func dropRequestID(res *http.Response) error {
	delete(res.Header, headerRequestID)
	return nil
}
