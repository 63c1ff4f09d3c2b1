package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/modelgate/modelgate/internal/problem"
	"gopkg.in/yaml.v3"
)

// MaxFileBytes bounds a configuration file; anything larger is refused.
const MaxFileBytes = 4 << 20

// Load reads, decodes and validates the configuration file at path.
// lookupEnv resolves ${NAME} references; pass os.LookupEnv in production.
// The error, when not nil, joins every problem found (see FieldError).
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	return LoadWith(path, LoadOptions{LookupEnv: lookupEnv})
}

// LoadOptions tunes LoadWith.
type LoadOptions struct {
	// LookupEnv resolves ${NAME} references; nil resolves none.
	LookupEnv func(string) (string, bool)
	// AllowUnset lets a ${NAME} whose variable is not set load as a
	// placeholder instead of failing, and records it (see Unset). Only for
	// offline tools such as `gateway explain`, which need the secrets of
	// what they explain and nothing else; never for serving.
	AllowUnset bool
}

// LoadWith is Load with options.
func LoadWith(path string, o LoadOptions) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("config %s is larger than %d bytes: is it the right file?", path, MaxFileBytes)
	}
	return parse(path, data, o)
}

// Parse decodes and validates configuration bytes; name is used in errors.
func Parse(name string, data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return parse(name, data, LoadOptions{LookupEnv: lookupEnv})
}

func parse(name string, data []byte, o LoadOptions) (*Config, error) {
	lookupEnv := o.LookupEnv
	if lookupEnv == nil {
		lookupEnv = func(string) (string, bool) { return "", false }
	}
	d := &decoder{file: name, env: lookupEnv, lines: map[string]int{}, secret: map[string]bool{}, allowUnset: o.AllowUnset, unset: map[string]string{}}

	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &FieldError{File: name, Msg: "the file is empty: see config.example.yaml for a starting point"}
		}
		return nil, &FieldError{File: name, Line: yamlErrLine(err), Msg: "not valid YAML: " + yamlErrMsg(err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, &FieldError{File: name, Line: extra.Line, Msg: "the file holds more than one YAML document: keep one"}
	}
	cfg := &Config{File: name, lines: d.lines, unset: d.unset}
	defer func() { cfg.secretFiles, cfg.secretValues = d.files, d.secretValues }()
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	d.decode(root, reflect.ValueOf(cfg).Elem(), "")
	if d.aliases > maxAliasExpansions {
		// What was decoded is cut short; validating it would only add noise.
		return nil, errors.Join(d.errs...)
	}
	v := &validator{d: d, cfg: cfg}
	v.validate()
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return cfg, nil
}

// yaml.v3 reports syntax errors as "yaml: line N: message". Scanner errors
// count lines from 1; parser errors ("did not find expected ...") give the
// 0-based line where the unfinished list or mapping began (go-yaml/yaml#205),
// so those are moved to the line people count.
func yamlErrLine(err error) int {
	var line int
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		fmt.Sscanf(s[i:], "line %d", &line)
		if strings.Contains(s[i:], ": did not find expected ") && !strings.HasSuffix(s, "node content") {
			line++
		}
	}
	return line
}

func yamlErrMsg(err error) string {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if i := strings.Index(s, ": "); i >= 0 && strings.HasPrefix(s, "line ") {
		s = s[i+2:]
	}
	return s
}

// SecretFiles lists the files ${file:...} references read, so that a
// watcher can reload when a mounted secret rotates.
func (c *Config) SecretFiles() []string { return c.secretFiles }

// Unset lists the fields whose ${NAME} variable was not set when the
// configuration was loaded with AllowUnset, as field path → variable name.
// Such fields hold a placeholder that matches no real secret.
func (c *Config) Unset() map[string]string { return c.unset }

// Locate turns the problems in err (see package internal/problem), whose
// paths are full field paths such as "server.tls.domains[0]", into
// FieldErrors naming this file and the line each field was written on (or
// the nearest enclosing field's). Other errors are kept as they are, after
// the file name. Locate(nil) is nil.
func (c *Config) Locate(err error) error {
	if err == nil {
		return nil
	}
	var out []error
	for _, e := range problem.Flatten(err) {
		var pe *problem.Error
		if errors.As(e, &pe) {
			out = append(out, &FieldError{File: c.File, Line: lineOf(c.lines, pe.Path), Path: pe.Path, Msg: scrub(c.secretValues, pe.Msg)})
			continue
		}
		out = append(out, &FieldError{File: c.File, Msg: scrub(c.secretValues, e.Error())})
	}
	return errors.Join(out...)
}
