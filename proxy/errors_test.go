package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/credential"
)

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestClassify(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		code   string
	}{
		{name: "refused", err: &net.OpError{Op: "dial", Err: errors.New("connection refused")}, status: 502, code: CodeUpstreamUnavailable},
		{name: "timeout", err: &net.OpError{Op: "read", Err: timeoutErr{}}, status: 504, code: CodeUpstreamTimeout},
		{name: "deadline", err: fmt.Errorf("x: %w", context.DeadlineExceeded), status: 504, code: CodeUpstreamTimeout},
		{name: "client went away", err: context.Canceled, status: StatusClientClosedRequest, code: CodeClientClosedRequest},
		{name: "body too large", err: &http.MaxBytesError{Limit: 10}, status: 413, code: CodeBodyTooLarge},
		{name: "credential unavailable", err: &errCredentialUnavailable{err: errors.New("down")}, status: 503, code: credential.CodeUnavailable},
		{name: "rejected after replay", err: &errUpstreamRejected{replayed: true}, status: 502, code: CodeUpstreamRejectedCred},
		{name: "rejected, no other key", err: &errUpstreamRejected{}, status: 502, code: CodeUpstreamRejectedCred},
		{name: "rejected, too large", err: &errUpstreamRejected{tooLarge: true}, status: 502, code: CodeUpstreamRejectedCred},
		{name: "anything else", err: io.ErrUnexpectedEOF, status: 502, code: CodeUpstreamUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, code, msg := classify(tt.err)
			if status != tt.status || code != tt.code {
				t.Errorf("classify = %d %s, want %d %s", status, code, tt.status, tt.code)
			}
			if msg == "" || strings.Contains(msg, tt.err.Error()) && tt.code != CodeClientClosedRequest {
				t.Errorf("message %q is empty or repeats the internal error", msg)
			}
		})
	}
}
