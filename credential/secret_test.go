package credential_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/modelgate/modelgate/credential"
)

const canary = "canary-value-9fK2xQ"

func TestSecretRedacts(t *testing.T) {
	s := credential.Secret(canary)
	c := credential.Credential{Value: s, Label: "primary key", Generation: 3}
	holder := struct {
		Key  credential.Secret
		Cred credential.Credential
		Ptr  *credential.Secret
	}{s, c, &s}

	var outputs []string
	for _, verb := range []string{"%v", "%s", "%+v", "%#v", "%q", "%x", "%X", "%d", "%10s", "%T"} {
		outputs = append(outputs,
			fmt.Sprintf(verb, s), fmt.Sprintf(verb, c), fmt.Sprintf(verb, holder), fmt.Sprintf(verb, &c))
	}
	outputs = append(outputs, fmt.Sprint(s), fmt.Sprintln(c), s.String(), s.GoString(),
		fmt.Errorf("wrapped: %v", s).Error(), fmt.Errorf("wrapped: %w", errors.New(s.String())).Error())

	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(js))

	for _, h := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		l := slog.New(h(&b))
		l.Info("x", "secret", s, "cred", c, slog.Any("any", s), slog.Group("g", "k", s))
		outputs = append(outputs, b.String())
	}

	for _, out := range outputs {
		if strings.Contains(out, canary) || strings.Contains(out, fmt.Sprintf("%x", canary)) {
			t.Errorf("secret leaked: %s", out)
		}
		if !strings.Contains(out, "[REDACTED]") && !strings.HasPrefix(out, "credential.") && !strings.HasPrefix(out, "redact.") && !strings.HasPrefix(out, "*credential.") && !strings.HasPrefix(out, "struct") {
			t.Errorf("no redaction marker in %q", out)
		}
	}
	if s.Reveal() != canary || !s.Equal(canary) || s.Equal("other") || s.IsZero() {
		t.Error("Reveal/Equal/IsZero broken")
	}
}

// TestStatusHasNoSecrets marshals every source's Status to JSON, as /readyz
// does, and checks that no credential value or client secret is in it, nor
// in the logs.
func TestStatusHasNoSecrets(t *testing.T) {
	w := newWorld(t)
	w.aml.AddService(sub, rg, wsName, "svc")
	dEp := w.aml.AddEndpoint(sub, rg, wsName, "ep")
	key, err := credential.NewKey(credential.KeyOptions{Name: "k", Primary: canary, Secondary: canary + "-2"})
	if err != nil {
		t.Fatal(err)
	}
	svc, err := credential.NewAMLServiceToken(credential.AMLServiceTokenOptions{Name: "svc", Credential: w.cred, Workspace: w.ws, Service: "svc", HTTPClient: w.amlClient, Logger: w.logger})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := credential.NewAMLEndpointToken(credential.AMLEndpointTokenOptions{Name: "ep", Credential: w.cred, Workspace: w.ws, Endpoint: "ep", HTTPClient: w.amlClient, Logger: w.logger})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := credential.NewAMLKeys(credential.AMLKeysOptions{Name: "keys", Credential: w.cred, Workspace: w.ws, Endpoint: "ep", HTTPClient: w.amlClient, Logger: w.logger})
	if err != nil {
		t.Fatal(err)
	}
	aad, err := credential.NewAADToken(credential.AADTokenOptions{Name: "aad", Credential: w.cred, Logger: w.logger})
	if err != nil {
		t.Fatal(err)
	}
	sources := []credential.ManagedSource{key, svc, ep, keys, aad}
	var secrets []string
	for _, s := range sources {
		s.Start()
		defer s.Close()
		c := mustCredential(t, s)
		secrets = append(secrets, c.Value.Reveal())
		// A failure afterwards puts an error into Status too.
		s.Rejected(context.Background(), c)
	}
	p, sk := dEp.Keys()
	secrets = append(secrets, p, sk, spSecret)

	statuses := make([]credential.Status, 0, len(sources))
	for _, s := range sources {
		st := s.Status()
		if !st.Ready || st.Name == "" || st.Type == "" || st.Label == "" {
			t.Errorf("status %+v: want ready with name, type and label", st)
		}
		statuses = append(statuses, st)
	}
	js, err := json.Marshal(statuses)
	if err != nil {
		t.Fatal(err)
	}
	for _, sec := range secrets {
		if strings.Contains(string(js), sec) {
			t.Errorf("status JSON contains a credential: %s", js)
		}
	}
	w.assertNotLogged(secrets...)
	t.Logf("%s", js)
}

// TestHandedOutCredentialRedacts: a credential as a source hands it out
// carries its Authorization header value precomputed; printing it with any
// verb, or logging it, still shows no key.
func TestHandedOutCredentialRedacts(t *testing.T) {
	src, err := credential.NewKey(credential.KeyOptions{Name: "m", Primary: canary})
	if err != nil {
		t.Fatal(err)
	}
	c, err := src.Credential(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Header() != "Bearer "+canary {
		t.Fatalf("Header() = %q", c.Header())
	}
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "cred", c)
	for _, out := range []string{fmt.Sprintf("%v", c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), b.String()} {
		if strings.Contains(out, canary) {
			t.Errorf("the key shows: %s", out)
		}
	}
}
