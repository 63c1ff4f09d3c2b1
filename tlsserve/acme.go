package tlsserve

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/caddyserver/certmagic"
)

// startACME sets up certmagic with its own cache and configuration (never
// certmagic's package-level defaults, which other code in the process could
// share) and starts managing o.Domains.
func (m *Manager) startACME(ctx context.Context, o Options) error {
	zl := newZapLogger(m.log.Handler())

	var magic *certmagic.Config
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		// Every certificate in this cache is managed by this one config.
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) {
			return magic, nil
		},
		RenewCheckInterval: o.RenewCheckInterval,
		Logger:             zl,
	})
	magic = certmagic.New(m.cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: o.Storage},
		Logger:  zl,
		// Clients without SNI (health checks by IP) get the first domain's
		// certificate instead of a handshake failure.
		DefaultServerName: o.Domains[0],
	})
	m.issuer = certmagic.NewACMEIssuer(magic, certmagic.ACMEIssuer{
		CA:                      o.CA,
		Email:                   o.Email,
		Agreed:                  true,
		DisableHTTPChallenge:    o.DisableHTTPChallenge,
		DisableTLSALPNChallenge: o.DisableTLSALPNChallenge,
		AltHTTPPort:             o.AltHTTPPort,
		AltTLSALPNPort:          o.AltTLSALPNPort,
		TrustedRoots:            o.TrustedRoots,
		Logger:                  zl,
	})
	magic.Issuers = []certmagic.Issuer{m.issuer}
	m.magic = magic
	m.domains = o.Domains
	m.alpnACME = !o.DisableTLSALPNChallenge
	m.getCert = magic.GetCertificate

	m.log.Info("tls: managing certificates over ACME",
		slog.Any("domains", o.Domains), slog.String("ca", o.CA), slog.String("storage", o.Storage),
		slog.Bool("http_01", !o.DisableHTTPChallenge), slog.Bool("tls_alpn_01", !o.DisableTLSALPNChallenge))
	if err := magic.ManageAsync(ctx, o.Domains); err != nil {
		m.cache.Stop()
		return fmt.Errorf("tls: managing %v: %w", o.Domains, err)
	}
	// certmagic's own goroutines stop on ctx and cache.Stop; none of ours
	// to wait for.
	close(m.done)
	return nil
}
