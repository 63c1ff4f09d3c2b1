// Package guid recognises GUIDs, the form of Azure AD tenant, object and
// application ids. The config loader, the token verifier and the test fakes
// share it so they can never disagree on what an id looks like.
package guid

// Valid reports whether s is a GUID in 8-4-4-4-12 hex form (any case).
func Valid(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
				return false
			}
		}
	}
	return true
}
