// Package azcloud names the Azure clouds the gateway knows: one table for
// the identity providers (login host, v1 token issuer) and the gateway's
// own Azure identities (azidentity's authority host).
package azcloud

import "strings"

// Cloud is one Azure cloud's Azure AD endpoints.
type Cloud struct {
	// Authority is the Azure AD login host, scheme and host only, e.g.
	// https://login.microsoftonline.com.
	Authority string
	// V1Issuer prefixes the tenant id in v1 access tokens' iss claim, e.g.
	// https://sts.windows.net/.
	V1Issuer string
}

// Names lists the accepted cloud names, for messages.
const Names = "public, usgovernment or china"

// Lookup returns the cloud named name (case-insensitive; "" is public).
func Lookup(name string) (Cloud, bool) {
	switch strings.ToLower(name) {
	case "", "public":
		return Cloud{"https://login.microsoftonline.com", "https://sts.windows.net/"}, true
	case "usgovernment":
		return Cloud{"https://login.microsoftonline.us", "https://sts.windows.net/"}, true
	case "china":
		return Cloud{"https://login.chinacloudapi.cn", "https://sts.chinacloudapi.cn/"}, true
	}
	return Cloud{}, false
}
