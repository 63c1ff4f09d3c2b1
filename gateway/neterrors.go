package gateway

import (
	"bytes"
	"encoding/json"
	"net"
	"strconv"
)

// jsonErrorListener wraps the plain-HTTP public listener so that the few
// answers net/http writes itself, before any handler runs, follow the
// gateway's JSON error contract too: a malformed request line or header, a
// missing Host (400), headers over the limit (431), an unknown HTTP version
// (505) or transfer coding (501), an unsupported Expect (417).
//
// net/http writes each of them in one Write on the raw connection, as
// "HTTP/1.1 <status>\r\nContent-Type: text/plain; charset=utf-8\r\n
// Connection: close\r\n\r\n<text>" (net/http's errorHeaders). Nothing the
// handler writes looks like that: its answers always carry X-Request-Id
// first, and it writes them through a buffered writer. Over TLS the
// connection below is encrypted, so this applies to plain HTTP only (the
// common case behind a load balancer that terminates TLS).
type jsonErrorListener struct{ net.Listener }

func (l jsonErrorListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &jsonErrorConn{Conn: c}, nil
}

type jsonErrorConn struct{ net.Conn }

var netHTTPErrorHeaders = []byte("\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n")

// netHTTPErrorCodes names net/http's own refusals in the error contract.
var netHTTPErrorCodes = map[int]struct{ code, msg string }{
	400: {"bad_request", "the request line or a header is malformed, or Host is missing: send a well-formed HTTP/1.1 request"},
	417: {"expectation_failed", "only Expect: 100-continue is supported"},
	431: {"headers_too_large", "the request headers are larger than the gateway accepts (64 KiB): send fewer or shorter headers"},
	501: {"not_implemented", "the transfer coding is not supported: send the body with Content-Length or chunked"},
	505: {"http_version_not_supported", "use HTTP/1.1 or HTTP/2"},
}

func (c *jsonErrorConn) Write(p []byte) (int, error) {
	if len(p) < 16 || !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		return c.Conn.Write(p)
	}
	i := bytes.Index(p, netHTTPErrorHeaders)
	if i < 12 || bytes.IndexByte(p[:i], '\n') >= 0 {
		return c.Conn.Write(p)
	}
	status, err := strconv.Atoi(string(p[9:12]))
	e, ok := netHTTPErrorCodes[status]
	if err != nil || !ok {
		return c.Conn.Write(p)
	}
	body, _ := json.Marshal(map[string]map[string]string{"error": {"code": e.code, "message": e.msg}})
	body = append(body, '\n')
	out := make([]byte, 0, i+128+len(body))
	out = append(out, p[:i]...) // "HTTP/1.1 400 Bad Request"
	out = append(out, "\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: "...)
	out = strconv.AppendInt(out, int64(len(body)), 10)
	out = append(out, "\r\n\r\n"...)
	out = append(out, body...)
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
