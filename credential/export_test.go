package credential

// Waiters returns how many callers of s are blocked waiting for a fetch, so
// that tests can make sure a crowd has gathered before letting the fetch
// finish.
func Waiters(s Source) int64 {
	switch s := s.(type) {
	case *TokenSource:
		return s.r.waiters.Load()
	case *AMLKeysSource:
		return s.r.waiters.Load()
	}
	return 0
}
