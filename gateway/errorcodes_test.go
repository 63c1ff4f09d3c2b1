package gateway

import (
	"slices"
	"testing"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/metrics"
	"github.com/modelgate/modelgate/policy"
	"github.com/modelgate/modelgate/proxy"
)

// TestErrorCodesAreCounted: every error code the gateway can end a request
// with is one request_errors_total counts by name, not as "other". The
// list names the constants themselves, so renaming one breaks this build;
// a new constant must be added here and to metrics.ErrorCodes.
func TestErrorCodesAreCounted(t *testing.T) {
	codes := []string{
		policy.CodeMissingCredential, policy.CodeInvalidCredential, policy.CodeForbidden, policy.CodeProviderUnavailable,
		proxy.CodeNoRoute, proxy.CodeBadPath, proxy.CodeBodyTooLarge, proxy.CodeBadRequest, proxy.CodeRequestTimeout,
		proxy.CodeUpstreamUnavailable, proxy.CodeUpstreamTimeout, proxy.CodeUpstreamRejectedCred,
		proxy.CodeRateLimited, proxy.CodeLimitsUnavailable, proxy.CodeClientClosedRequest, proxy.CodeUpstreamAborted,
		proxy.CodeMethodNotAllowed, proxy.CodeCORSOriginNotAllowed,
		credential.CodeUnavailable,
	}
	for _, c := range codes {
		if !slices.Contains(metrics.ErrorCodes, c) {
			t.Errorf("error code %q is not in metrics.ErrorCodes: it would be counted as %q", c, metrics.ErrorCodeOther)
		}
	}
	for _, c := range metrics.ErrorCodes {
		if !slices.Contains(codes, c) {
			t.Errorf("metrics.ErrorCodes holds %q, which no constant defines", c)
		}
	}
}
