package proxy

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"strings"
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
	if len(v) != 55 || v[:3] != "00-" || v[35] != '-' || v[52] != '-' {
		return "", false
	}
	traceID, spanID := v[3:35], v[36:52]
	if !lowerHex(traceID) || !lowerHex(spanID) || !lowerHex(v[53:]) || allZero(traceID) || allZero(spanID) {
		return "", false
	}
	return traceID, true
}

func lowerHex(s string) bool { return strings.TrimLeft(s, "0123456789abcdef") == "" }

func allZero(s string) bool { return strings.TrimLeft(s, "0") == "" }

// newTraceparent makes a sampled version-00 traceparent with random ids.
// Trace ids need to be unique, not secret, so math/rand/v2's generator does.
func newTraceparent() (header, traceID string) {
	var b [24]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rand.Uint64()|1) // never all zero
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
