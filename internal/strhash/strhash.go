// Package strhash computes the SHA-256 of a string without copying it into
// a fresh []byte: crypto/sha256.Sum256([]byte(s)) allocates a copy of s on
// every call (the digest is used through an interface, so the conversion
// escapes), which for a 1 KiB bearer token on every request is most of the
// gateway's per-request garbage. Digests and scratch buffers are pooled.
package strhash

import (
	"crypto/sha256"
	"hash"
	"sync"
)

type state struct {
	h   hash.Hash
	buf [1024]byte
	sum []byte
}

var pool = sync.Pool{New: func() any {
	return &state{h: sha256.New(), sum: make([]byte, 0, sha256.Size)}
}}

// SHA256 returns the SHA-256 digest of s. It is safe for concurrent use and
// does not allocate in the steady state.
func SHA256(s string) [sha256.Size]byte {
	st := pool.Get().(*state)
	st.h.Reset()
	for len(s) > 0 {
		n := copy(st.buf[:], s)
		st.h.Write(st.buf[:n])
		s = s[n:]
	}
	var out [sha256.Size]byte
	copy(out[:], st.h.Sum(st.sum[:0]))
	pool.Put(st)
	return out
}
