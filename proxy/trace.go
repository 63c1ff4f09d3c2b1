package proxy

import (
	"encoding/hex"
	"math/rand/v2"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/): a valid
// client-sent traceparent is forwarded unchanged (with its tracestate) and
// its trace id logged; a missing or invalid one is replaced by a fresh
// traceparent, and tracestate, meaningless without it, is dropped. So every
// call can be followed from the client's log, through the gateway's, to the
// model's.

const headerTraceparent = "Traceparent"
const headerTracestate = "Tracestate"

// parseTraceparent returns the trace id of a version-00 traceparent value,
// or ok=false when it is malformed or uses the all-zero ids the spec
// forbids.
func parseTraceparent(v string) (traceID string, ok bool) {
	// 00-<32 hex>-<16 hex>-<2 hex>
	if len(v) != 55 || v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return "", false
	}
	if !lowerHex(v[3:35]) || !lowerHex(v[36:52]) || !lowerHex(v[53:55]) {
		return "", false
	}
	if allZero(v[3:35]) || allZero(v[36:52]) {
		return "", false
	}
	return v[3:35], true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func allZero(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] != '0' {
			return false
		}
	}
	return true
}

// newTraceparent makes a sampled version-00 traceparent with random ids.
// Trace ids need to be unique, not secret, so math/rand/v2's generator does.
func newTraceparent() (header, traceID string) {
	var b [24]byte
	for i := 0; i < len(b); i += 8 {
		u := rand.Uint64() | 1 // never all zero
		for j := range 8 {
			b[i+j] = byte(u >> (8 * j))
		}
	}
	var out [55]byte
	copy(out[:], "00-")
	hex.Encode(out[3:35], b[:16])
	out[35] = '-'
	hex.Encode(out[36:52], b[16:24])
	copy(out[52:], "-01")
	s := string(out[:])
	return s, s[3:35]
}
