// Package telemetry sets up the gateway's OpenTelemetry traces: which
// collector they go to, over which OTLP protocol, how many are sampled and
// under which service name, from the configuration's telemetry section and
// the standard OTEL_* environment variables.
//
// Traces are off unless the configuration or the environment names a
// collector. The tracer provider lives as long as the process: a reload
// that changes the section is reported (Settings.Equal), and takes effect
// on restart.
package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/internal/problem"
	"github.com/modelgate/modelgate/internal/redact"
)

// OTLP protocols.
const (
	ProtocolHTTP = "http/protobuf"
	ProtocolGRPC = "grpc"
)

// DefaultServiceName is service.name when neither the configuration nor
// OTEL_SERVICE_NAME sets one.
const DefaultServiceName = "modelgate"

// Settings is the resolved trace export: the configuration's values, with
// the environment's where the configuration is silent.
type Settings struct {
	// Endpoint is the URL spans are sent to. For OTLP/HTTP it ends in
	// the signal's path: /v1/traces is added to OTEL_EXPORTER_OTLP_ENDPOINT
	// (as the specification says) and to telemetry.traces.endpoint unless
	// it already ends so; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it
	// is. For gRPC only its scheme, host and port count.
	Endpoint string
	// Protocol is ProtocolHTTP or ProtocolGRPC.
	Protocol string
	// Headers go with every export. Configured headers replace
	// OTEL_EXPORTER_OTLP_(TRACES_)HEADERS, which the exporter reads itself
	// when none are configured.
	Headers map[string]redact.Secret
	// Sampler names the sampling rule, as OTEL_TRACES_SAMPLER spells it.
	Sampler string
	// Ratio is the traceidratio samplers' share, 0 to 1.
	Ratio float64
	// ServiceName is service.name ("" leaves it to OTEL_SERVICE_NAME or
	// DefaultServiceName).
	ServiceName string
	// From says where the endpoint came from: telemetry.traces.endpoint or
	// the variable's name.
	From string
}

// Equal reports whether s and o export the same way; a reload compares
// them to tell the operator that a change waits for a restart.
func (s *Settings) Equal(o *Settings) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.Endpoint == o.Endpoint && s.Protocol == o.Protocol && s.Sampler == o.Sampler && s.Ratio == o.Ratio &&
		s.ServiceName == o.ServiceName && s.From == o.From &&
		maps.EqualFunc(s.Headers, o.Headers, func(a, b redact.Secret) bool { return a.Equal(b) })
}

// String describes the export for `gateway check` and the start-up log,
// without header values.
func (s *Settings) String() string {
	if s == nil {
		return "off"
	}
	out := fmt.Sprintf("traces over OTLP %s to %s (from %s), sampler %s", s.Protocol, s.Endpoint, s.From, s.Sampler)
	if strings.HasSuffix(s.Sampler, "traceidratio") {
		out += " " + strconv.FormatFloat(s.Ratio, 'g', -1, 64)
	}
	if len(s.Headers) > 0 {
		out += ", headers " + strings.Join(slices.Sorted(maps.Keys(s.Headers)), ", ")
	}
	return out
}

// samplers are the OTEL_TRACES_SAMPLER values the gateway understands.
var samplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// Resolve validates the telemetry section and merges the environment
// (lookupEnv; nil means none). It returns nil when traces are off: no
// section, no OTLP endpoint variable, or OTEL_SDK_DISABLED=true or
// OTEL_TRACES_EXPORTER=none. Problems carry field paths below
// "telemetry", or name the environment variable at fault.
func Resolve(t config.Telemetry, lookupEnv func(string) (string, bool)) (*Settings, error) {
	env := func(names ...string) (string, string) {
		for _, n := range names {
			if lookupEnv == nil {
				break
			}
			if v, ok := lookupEnv(n); ok && strings.TrimSpace(v) != "" {
				return strings.TrimSpace(v), n
			}
		}
		return "", ""
	}
	var errs problem.List
	if v, _ := env("OTEL_SDK_DISABLED"); strings.EqualFold(v, "true") {
		return nil, nil
	}
	switch v, name := env("OTEL_TRACES_EXPORTER"); strings.ToLower(v) {
	case "", "otlp":
	case "none":
		return nil, nil
	default:
		return nil, fmt.Errorf("%s=%q: the gateway exports traces over OTLP only: set it to otlp or none", name, v)
	}
	tc := t.Traces
	ep, from := env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
	if tc == nil && ep == "" {
		return nil, nil
	}
	if tc == nil {
		tc = &config.Traces{}
	}
	s := &Settings{Headers: tc.Headers, ServiceName: tc.ServiceName, From: from}
	if s.ServiceName == "" {
		s.ServiceName, _ = env("OTEL_SERVICE_NAME")
	}
	s.Protocol = tc.Protocol
	if s.Protocol == "" {
		v, name := env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
		switch v {
		case "", ProtocolHTTP:
			s.Protocol = ProtocolHTTP
		case ProtocolGRPC:
			s.Protocol = ProtocolGRPC
		default:
			return nil, fmt.Errorf("%s=%q: the gateway speaks %s or %s", name, v, ProtocolHTTP, ProtocolGRPC)
		}
	} else if s.Protocol != ProtocolHTTP && s.Protocol != ProtocolGRPC {
		errs.Add("traces.protocol", "%q is not an OTLP protocol the gateway speaks: write %s or %s", s.Protocol, ProtocolHTTP, ProtocolGRPC)
	}
	var base bool // the endpoint is a base URL, to which OTLP/HTTP adds /v1/traces
	if tc.Endpoint != "" {
		s.From = "telemetry.traces.endpoint"
		if msg := checkEndpoint(tc.Endpoint); msg != "" {
			errs.Add("traces.endpoint", "%q %s", shown(tc.Endpoint), msg)
		}
		s.Endpoint = tc.Endpoint
		base = !strings.HasSuffix(strings.TrimSuffix(tc.Endpoint, "/"), "/v1/traces")
	} else if ep != "" {
		if msg := checkEndpoint(ep); msg != "" {
			return nil, fmt.Errorf("%s=%q %s", from, shown(ep), msg)
		}
		s.Endpoint, base = ep, from == "OTEL_EXPORTER_OTLP_ENDPOINT"
	} else {
		errs.Add("traces.endpoint", "is required: name the collector's OTLP URL (http://collector:4318 for http/protobuf, :4317 for grpc), or set OTEL_EXPORTER_OTLP_ENDPOINT")
	}
	if base && s.Protocol == ProtocolHTTP {
		if u, err := url.Parse(s.Endpoint); err == nil {
			u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
			u.RawPath = ""
			s.Endpoint = u.String()
		}
	}

	for _, k := range slices.Sorted(maps.Keys(tc.Headers)) {
		if k == "" || strings.ContainsAny(k, " \t\r\n:") {
			errs.Add("traces.headers", "%q is not a header name", k)
		}
		if strings.ContainsAny(tc.Headers[k].Reveal(), "\r\n") {
			errs.Add("traces.headers."+k, "the value contains a line break")
		}
	}

	if tc.SampleRatio != nil {
		r := *tc.SampleRatio
		if r < 0 || r > 1 || r != r {
			errs.Add("traces.sample_ratio", "%v is not a share from 0 to 1 (0.1 records one new trace in ten)", r)
		}
		s.Sampler, s.Ratio = "parentbased_traceidratio", r
	} else {
		v, name := env("OTEL_TRACES_SAMPLER")
		s.Sampler, s.Ratio = "parentbased_always_on", 1
		if v != "" {
			if !slices.Contains(samplers, v) {
				return nil, fmt.Errorf("%s=%q: the gateway understands %s", name, v, strings.Join(samplers, ", "))
			}
			s.Sampler = v
		}
		if strings.HasSuffix(s.Sampler, "traceidratio") {
			if a, aname := env("OTEL_TRACES_SAMPLER_ARG"); a != "" {
				r, err := strconv.ParseFloat(a, 64)
				if err != nil || r < 0 || r > 1 {
					return nil, fmt.Errorf("%s=%q is not a share from 0 to 1", aname, a)
				}
				s.Ratio = r
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, problem.Under("telemetry", err)
	}
	return s, nil
}

// shown is a collector URL as an error may quote it: without a user,
// password, query or fragment, which could carry a credential.
func shown(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#@"); i >= 0 {
			return raw[:i] + "…"
		}
		return raw
	}
	if u.User == nil && u.RawQuery == "" && u.Fragment == "" && !strings.ContainsAny(raw, "?#") {
		return raw
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String() + "…"
}

// checkEndpoint says what is wrong with a collector URL, or "".
func checkEndpoint(raw string) string {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "is not a URL: write http://collector:4318"
	case u.Scheme != "http" && u.Scheme != "https":
		return "needs the scheme http:// or https://"
	case u.Host == "":
		return "has no host"
	case u.User != nil:
		return "must not carry a user or password: put credentials in telemetry.traces.headers"
	case u.RawQuery != "" || u.Fragment != "" || strings.ContainsAny(raw, "?#"):
		return "must not carry a query or fragment: put credentials in telemetry.traces.headers"
	}
	return ""
}

// sampler builds the sampling rule s names.
func (s *Settings) sampler() sdktrace.Sampler {
	var root sdktrace.Sampler
	switch strings.TrimPrefix(s.Sampler, "parentbased_") {
	case "always_off":
		root = sdktrace.NeverSample()
	case "traceidratio":
		root = sdktrace.TraceIDRatioBased(s.Ratio)
	default:
		root = sdktrace.AlwaysSample()
	}
	if strings.HasPrefix(s.Sampler, "parentbased_") {
		return sdktrace.ParentBased(root)
	}
	return root
}

// Tracing is the process's tracer provider and its exporter.
type Tracing struct {
	tp       *sdktrace.TracerProvider
	settings *Settings
}

// Options tunes Start.
type Options struct {
	// Version is service.version.
	Version string
	// Logger receives export failures, at most one line a minute.
	Logger *slog.Logger
	// BatchTimeout is the longest a span waits to be exported; zero means
	// the SDK's default (OTEL_BSP_SCHEDULE_DELAY, else 5 s).
	BatchTimeout time.Duration
}

// Start builds the exporter and the tracer provider for s. It does not
// connect: spans are sent in batches in the background, and dropped (never
// waited for) when the collector cannot keep up.
func Start(ctx context.Context, s *Settings, o Options) (*Tracing, error) {
	var client otlptrace.Client
	hdrs := map[string]string{}
	for k, v := range s.Headers {
		hdrs[k] = v.Reveal()
	}
	switch s.Protocol {
	case ProtocolGRPC:
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpointURL(s.Endpoint)}
		if len(hdrs) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(hdrs))
		}
		client = otlptracegrpc.NewClient(opts...)
	default:
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(s.Endpoint)}
		if len(hdrs) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(hdrs))
		}
		client = otlptracehttp.NewClient(opts...)
	}
	exp, err := otlptrace.New(ctx, client)
	if err != nil {
		return nil, fmt.Errorf("start the OTLP trace exporter (%s): %w", s, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", DefaultServiceName)} // OTEL_SERVICE_NAME: Resolve
	if o.Version != "" {
		attrs = append(attrs, attribute.String("service.version", o.Version))
	}
	res, err := resource.Merge(resource.NewSchemaless(attrs...), resource.Environment())
	if err != nil {
		res = resource.NewSchemaless(attrs...)
	}
	if s.ServiceName != "" {
		res, _ = resource.Merge(res, resource.NewSchemaless(attribute.String("service.name", s.ServiceName)))
	}
	var bopts []sdktrace.BatchSpanProcessorOption
	if o.BatchTimeout > 0 {
		bopts = append(bopts, sdktrace.WithBatchTimeout(o.BatchTimeout))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, bopts...),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(s.sampler()),
	)
	if o.Logger != nil {
		otel.SetErrorHandler(&errorLog{log: o.Logger})
	}
	return &Tracing{tp: tp, settings: s}, nil
}

// Provider returns the tracer provider.
func (t *Tracing) Provider() trace.TracerProvider { return t.tp }

// Settings returns what the provider was started with; nil for a nil
// Tracing (traces off).
func (t *Tracing) Settings() *Settings {
	if t == nil {
		return nil
	}
	return t.settings
}

// Shutdown exports the spans still queued, within ctx, and stops.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if err := t.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("flush traces: %w", err)
	}
	return nil
}

// errorLog turns the SDK's export errors into log lines, at most one a
// minute, so a collector that is down does not flood the log.
type errorLog struct {
	log     *slog.Logger
	mu      sync.Mutex
	last    time.Time
	dropped int
}

func (e *errorLog) Handle(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := time.Now()
	if !e.last.IsZero() && now.Sub(e.last) < time.Minute {
		e.dropped++
		return
	}
	e.log.Warn("trace export failed; spans are dropped until the collector answers",
		slog.String("error", err.Error()), slog.Int("similar_errors_since_last_line", e.dropped))
	e.last, e.dropped = now, 0
}
