package fakeaad

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// signingKey is one published (or formerly published) RSA key.
type signingKey struct {
	kid  string // Azure AD uses the x5t thumbprint as kid
	x5t  string
	priv *rsa.PrivateKey
	der  []byte // x5c[0]
}

// jwk is an Azure-shaped key set entry.
type jwk struct {
	Kty    string   `json:"kty"`
	Use    string   `json:"use"`
	Kid    string   `json:"kid"`
	X5t    string   `json:"x5t"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	X5c    []string `json:"x5c"`
	Issuer string   `json:"issuer,omitempty"`
}

type jwks struct {
	Keys []jwk `json:"keys"`
}

func (s *Server) jwksLocked(issuer string) jwks {
	var set jwks
	for _, k := range s.publishedLocked() {
		set.Keys = append(set.Keys, k.jwk(issuer))
	}
	return set
}

func (k *signingKey) jwk(issuer string) jwk {
	pub := k.priv.PublicKey
	return jwk{
		Kty:    "RSA",
		Use:    "sig",
		Kid:    k.kid,
		X5t:    k.x5t,
		N:      base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		E:      base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
		X5c:    []string{base64.StdEncoding.EncodeToString(k.der)},
		Issuer: issuer,
	}
}

// newSigningKey generates a 2048-bit RSA key with a self-signed certificate
// like Azure AD's (CN=accounts.accesscontrol.windows.net). With
// negativeSerial, the certificate's serial number is rewritten to a negative
// value, which crypto/x509 has refused to parse since Go 1.23; old Azure AD
// certificates have such serials.
func newSigningKey(negativeSerial bool) (*signingKey, error) {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	const serial = 0x5a
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: "accounts.accesscontrol.windows.net"},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(5 * 365 * 24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, fmt.Errorf("create certificate: %w", err)
	}
	if negativeSerial {
		der, err = negateSerial(der, serial)
		if err != nil {
			return nil, err
		}
	}
	sum := sha1.Sum(der) // x5t is defined as the SHA-1 thumbprint (RFC 7517 §4.8)
	x5t := base64.RawURLEncoding.EncodeToString(sum[:])
	return &signingKey{kid: x5t, x5t: x5t, priv: priv, der: der}, nil
}

// negateSerial rewrites the one-byte serial INTEGER that follows the
// explicit version tag in the TBSCertificate to a negative number of the
// same length, so that no length field changes. The signature no longer
// matches, which does not matter: x509.ParseCertificate rejects the
// certificate before looking at it, and JWKS consumers never verify it.
func negateSerial(der []byte, serial byte) ([]byte, error) {
	// [0] EXPLICIT Version (a0 03 02 01 02) then INTEGER serial (02 01 xx).
	pat := []byte{0xa0, 0x03, 0x02, 0x01, 0x02, 0x02, 0x01, serial}
	i := bytes.Index(der, pat)
	if i < 0 {
		return nil, errors.New("fakeaad: serial number not found in certificate")
	}
	out := bytes.Clone(der)
	out[i+len(pat)-1] = 0x80 | serial // two's complement: negative
	if _, err := x509.ParseCertificate(out); err == nil {
		return nil, errors.New("fakeaad: crypto/x509 accepted a negative serial number; the legacy key is not legacy")
	}
	return out, nil
}
