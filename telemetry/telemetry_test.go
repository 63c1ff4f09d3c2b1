package telemetry

import (
	"strings"
	"testing"

	"github.com/modelgate/modelgate/config"
	"github.com/modelgate/modelgate/internal/redact"
)

func ratio(f float64) *float64 { return &f }

func TestResolve(t *testing.T) {
	tests := []struct {
		name    string
		cfg     config.Telemetry
		env     map[string]string
		want    string // Settings.String(); "off" for nil
		wantErr string
	}{
		{name: "nothing set: off", want: "off"},
		{name: "generic endpoint variable", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"},
			want: "traces over OTLP http/protobuf to http://otel:4318/v1/traces (from OTEL_EXPORTER_OTLP_ENDPOINT), sampler parentbased_always_on"},
		{name: "traces endpoint variable wins over the generic one", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://b:4318/custom"},
			want: "traces over OTLP http/protobuf to http://b:4318/custom (from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), sampler parentbased_always_on"},
		{name: "grpc and a ratio sampler from the environment", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.05"},
			want: "traces over OTLP grpc to http://otel:4317 (from OTEL_EXPORTER_OTLP_ENDPOINT), sampler parentbased_traceidratio 0.05"},
		{name: "the section wins over the environment",
			cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "https://collector.example.com", Protocol: "grpc", SampleRatio: ratio(0.1),
				Headers: map[string]redact.Secret{"api-key": "header-secret-canary"}}},
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_TRACES_SAMPLER": "always_off"},
			want: "traces over OTLP grpc to https://collector.example.com (from telemetry.traces.endpoint), sampler parentbased_traceidratio 0.1, headers api-key"},
		{name: "disabled by OTEL_SDK_DISABLED", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "http://otel:4318"}},
			env: map[string]string{"OTEL_SDK_DISABLED": "true"}, want: "off"},
		{name: "disabled by OTEL_TRACES_EXPORTER=none", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_EXPORTER": "none"}, want: "off"},
		{name: "section without endpoint", cfg: config.Telemetry{Traces: &config.Traces{}}, wantErr: "telemetry.traces.endpoint: is required"},
		{name: "endpoint with credentials", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "http://user:pw-canary@otel:4318"}},
			wantErr: "must not carry a user or password"},
		{name: "endpoint with a query", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "https://otel.example.com/v1/traces?token=q-canary"}},
			wantErr: "must not carry a query or fragment"},
		{name: "endpoint variable with a fragment", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318#frag"},
			wantErr: "must not carry a query or fragment"},
		{name: "a configured endpoint with a path gets the signal path", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "https://otel.example.com/otlp/"}},
			want: "traces over OTLP http/protobuf to https://otel.example.com/otlp/v1/traces (from telemetry.traces.endpoint), sampler parentbased_always_on"},
		{name: "a configured endpoint that names the signal path keeps it", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "http://otel:4318/v1/traces"}},
			want: "traces over OTLP http/protobuf to http://otel:4318/v1/traces (from telemetry.traces.endpoint), sampler parentbased_always_on"},
		{name: "the generic variable gets the signal path after its own", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/base"},
			want: "traces over OTLP http/protobuf to http://otel:4318/base/v1/traces (from OTEL_EXPORTER_OTLP_ENDPOINT), sampler parentbased_always_on"},
		{name: "the traces variable wins over the generic protocol", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4317",
			"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
			want: "traces over OTLP grpc to http://otel:4317 (from OTEL_EXPORTER_OTLP_ENDPOINT), sampler parentbased_always_on"},
		{name: "endpoint without scheme", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "otel:4318"}}, wantErr: "needs the scheme"},
		{name: "ratio out of range", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "http://otel:4318", SampleRatio: ratio(1.5)}},
			wantErr: "telemetry.traces.sample_ratio: 1.5 is not a share from 0 to 1"},
		{name: "unknown protocol", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "http://otel:4318", Protocol: "http/json"}},
			wantErr: `telemetry.traces.protocol: "http/json" is not an OTLP protocol`},
		{name: "header with a line break", cfg: config.Telemetry{Traces: &config.Traces{Endpoint: "http://otel:4318",
			Headers: map[string]redact.Secret{"k": "a\r\nInjected: 1"}}}, wantErr: "telemetry.traces.headers.k: the value contains a line break"},
		{name: "unknown exporter", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_EXPORTER": "zipkin"},
			wantErr: `OTEL_TRACES_EXPORTER="zipkin": the gateway exports traces over OTLP only`},
		{name: "unknown protocol variable", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"},
			wantErr: `OTEL_EXPORTER_OTLP_PROTOCOL="thrift"`},
		{name: "unknown sampler", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_SAMPLER": "jaeger_remote"},
			wantErr: `OTEL_TRACES_SAMPLER="jaeger_remote"`},
		{name: "bad sampler argument", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "ten"},
			wantErr: `OTEL_TRACES_SAMPLER_ARG="ten" is not a share`},
		{name: "bad endpoint variable", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "ftp://otel"}, wantErr: `OTEL_EXPORTER_OTLP_ENDPOINT="ftp://otel" needs the scheme`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			s, err := Resolve(tt.cfg, lookup)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), "canary") || strings.Contains(err.Error(), "Injected") || strings.Contains(err.Error(), "#frag") {
					t.Errorf("the error shows a header value: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.String(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if strings.Contains(s.String(), "canary") {
				t.Errorf("String shows a header value")
			}
		})
	}
}

func TestSettingsEqual(t *testing.T) {
	a := &Settings{Endpoint: "http://a", Protocol: ProtocolHTTP, Headers: map[string]redact.Secret{"k": "v1"}}
	b := *a
	b.Headers = map[string]redact.Secret{"k": "v2"}
	switch {
	case !a.Equal(a), (*Settings)(nil).Equal(a), !(*Settings)(nil).Equal(nil):
		t.Error("Equal is wrong on identity or nil")
	case a.Equal(&b):
		t.Error("a changed header value must count as a change")
	}
}
