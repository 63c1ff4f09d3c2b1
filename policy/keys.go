package policy

import (
	"github.com/modelgate/modelgate/internal/strhash"
	"time"
)

// KeyIndex holds every static API key the gateway accepts, across all key
// sets, indexed by the SHA-256 of the key.
//
// Lookup hashes the presented key and looks the digest up in a map; the
// plaintext is never compared byte by byte, so the time taken says nothing
// about how close a guess was, and no plaintext key needs to be kept in
// memory. A KeyIndex is immutable after construction and safe for concurrent
// use.
type KeyIndex struct {
	keys map[[32]byte]keyEntry
}

type keyEntry struct {
	set      string
	id       string
	notAfter time.Time // zero: no expiry
	ident    *Identity // shared, read-only: built once at load
}

// KeySpec describes one key for NewKeyIndex.
type KeySpec struct {
	Set      string
	ID       string
	Hash     [32]byte
	NotAfter time.Time
}

// NewKeyIndex builds the index. Specs with the same hash keep the first.
func NewKeyIndex(specs []KeySpec) *KeyIndex {
	ki := &KeyIndex{keys: make(map[[32]byte]keyEntry, len(specs))}
	for _, s := range specs {
		if _, dup := ki.keys[s.Hash]; dup {
			continue
		}
		ident := &Identity{Method: MethodKey, KeySet: s.Set, KeyID: s.ID}
		ident.key = ident.computeKey()
		ki.keys[s.Hash] = keyEntry{set: s.Set, id: s.ID, notAfter: s.NotAfter, ident: ident}
	}
	return ki
}

// Len returns the number of keys.
func (ki *KeyIndex) Len() int { return len(ki.keys) }

// lookup finds the presented key. ok is false for an unknown key; expired
// reports a known key past its not_after.
func (ki *KeyIndex) lookup(key string, now time.Time) (e keyEntry, ok, expired bool) {
	if ki == nil || len(key) > maxKeyLen {
		return keyEntry{}, false, false
	}
	e, ok = ki.keys[strhash.SHA256(key)]
	if !ok {
		return keyEntry{}, false, false
	}
	if !e.notAfter.IsZero() && !now.Before(e.notAfter) {
		return e, false, true
	}
	return e, true, false
}

// maxKeyLen bounds what is hashed as a key; longer values are refused.
const maxKeyLen = 1024
