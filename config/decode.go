package config

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"gopkg.in/yaml.v3"
)

// FieldError is one problem found in a configuration file. It names the file,
// the line and the field path (for example routes[0].allow[1].roles) so that a
// reader can go straight to it.
type FieldError struct {
	File string
	Line int
	Path string
	Msg  string
}

func (e *FieldError) Error() string {
	s := e.File
	if e.Line > 0 {
		s += ":" + strconv.Itoa(e.Line)
	}
	if e.Path != "" {
		s += ": " + oneLine(e.Path)
	}
	return s + ": " + oneLine(e.Msg)
}

// oneLine escapes control characters, so that a key or value written in
// the file can neither break an error into lines nor forge a line of its
// own ("gw.yaml:1: ..."): each error is one line.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

// scalarDecoder is implemented by types that parse themselves from one YAML
// scalar (durations, sizes, timestamps). The string has had ${ENV} expanded.
type scalarDecoder interface {
	decodeScalar(s string) error
}

// nodeDecoder is implemented by types that accept more than one YAML shape
// (for example a claim match written as a list or as {any_of, all_of}).
type nodeDecoder interface {
	decodeNode(d *decoder, n *yaml.Node, path string)
}

// decoder walks a yaml.Node tree into Go values by reflection. Unlike
// yaml.v3's own decoder it keeps going after an error, so every problem in a
// file is reported at once, and it remembers the line of every field so that
// later semantic checks can point at the right place.
type decoder struct {
	file   string
	env    func(string) (string, bool)
	errs   []error
	lines  map[string]int
	secret map[string]bool // paths whose value came from the environment

	allowUnset bool              // LoadOptions.AllowUnset
	unset      map[string]string // path → variable that was not set
	files      []string          // files read by ${file:...}
	aliases    int               // alias expansions so far

	// secretValues are the values that came from the environment or a
	// file; scrub removes them from every message.
	secretValues []string
}

// maxAliasExpansions bounds how many aliases (*name) one file may expand.
const maxAliasExpansions = 1000

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	line := 0
	if n != nil {
		line = n.Line
	}
	d.errs = append(d.errs, &FieldError{File: d.file, Line: line, Path: path, Msg: scrub(d.secretValues, fmt.Sprintf(format, args...))})
}

// scrub replaces every secret value in msg, as written or quoted, with a
// note of its origin: a value from the environment or a file is never
// quoted back, whatever message quotes the field (a listen address, a URL,
// a path that holds one).
func scrub(secrets []string, msg string) string {
	for _, v := range secrets {
		if q := strconv.Quote(v); strings.Contains(msg, q[1:len(q)-1]) {
			msg = strings.ReplaceAll(msg, q[1:len(q)-1], "(value from the environment)")
		}
		if strings.Contains(msg, v) {
			msg = strings.ReplaceAll(msg, v, "(value from the environment)")
		}
	}
	return msg
}

// scalar returns the node's value with ${NAME} references expanded.
func (d *decoder) scalar(n *yaml.Node, path string) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a single value, got %s", kindName(n))
		return "", false
	}
	// Quoted or plain, the value is expanded; a tag like !!binary is not ours.
	env := func(name string) (string, bool) {
		if v, ok := d.env(name); ok {
			return v, true
		}
		if !d.allowUnset {
			return "", false
		}
		d.unset[path] = name
		// Long enough for every length rule, and no real secret.
		return "unset-" + name + "-0000000000000000", true
	}
	s, fromEnv, err := expandEnv(n.Value, env, d.readSecretFile)
	if err != nil {
		d.errorf(n, path, "%v", err)
		return "", false
	}
	if fromEnv {
		d.secret[path] = true
		// Values shorter than 8 bytes are not scrubbed: they would eat
		// ordinary words, and no secret that short is accepted anyway.
		if len(s) >= 8 && !slices.Contains(d.secretValues, s) {
			d.secretValues = append(d.secretValues, s)
		}
	}
	return s, true
}

// shown renders a value for an error message, unless it came from the
// environment (it may be a secret) in which case only its origin is named.
func (d *decoder) shown(path, s string) string {
	if d.secret[path] {
		return "(value from the environment)"
	}
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strconv.Quote(s)
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return "a single value"
	case yaml.AliasNode:
		return "an alias"
	}
	return "nothing"
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Tag == "!!null"
}

var (
	scalarDecoderType = reflect.TypeFor[scalarDecoder]()
	nodeDecoderType   = reflect.TypeFor[nodeDecoder]()
)

// decode fills v (addressable) from n.
func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		// Each alias walks its anchor's tree again; nested aliases would
		// make a small file take exponential time ("billion laughs").
		if d.aliases++; d.aliases > maxAliasExpansions {
			if d.aliases == maxAliasExpansions+1 {
				d.errorf(n, path, "more than %d alias expansions: write the values out instead of nesting aliases", maxAliasExpansions)
			}
			return
		}
		n = n.Alias
	}
	d.lines[path] = n.Line
	if v.CanAddr() {
		pv := v.Addr()
		if pv.Type().Implements(nodeDecoderType) {
			pv.Interface().(nodeDecoder).decodeNode(d, n, path)
			return
		}
		if pv.Type().Implements(scalarDecoderType) {
			if isNull(n) {
				return
			}
			s, ok := d.scalar(n, path)
			if !ok {
				return
			}
			if err := pv.Interface().(scalarDecoder).decodeScalar(s); err != nil {
				d.errorf(n, path, "%s: %v", d.shown(path, s), err)
			}
			return
		}
	}
	if isNull(n) {
		return // an empty value leaves the zero value (and its default)
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.String:
		if s, ok := d.scalar(n, path); ok {
			v.SetString(s)
		}
	case reflect.Bool:
		if s, ok := d.scalar(n, path); ok {
			switch s {
			case "true":
				v.SetBool(true)
			case "false":
				v.SetBool(false)
			default:
				d.errorf(n, path, "%s is not a boolean: write true or false", d.shown(path, s))
			}
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		if s, ok := d.scalar(n, path); ok {
			i, err := strconv.ParseInt(s, 10, 64)
			if err != nil || i > math.MaxInt32 || i < math.MinInt32 {
				d.errorf(n, path, "%s is not a whole number", d.shown(path, s))
				return
			}
			v.SetInt(i)
		}
	case reflect.Float64:
		if s, ok := d.scalar(n, path); ok {
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				d.errorf(n, path, "%s is not a number", d.shown(path, s))
				return
			}
			v.SetFloat(f)
		}
	default:
		panic("config: unsupported field kind " + v.Kind().String())
	}
}

type fieldInfo struct {
	index int
	name  string
}

func structFields(t reflect.Type) []fieldInfo {
	var out []fieldInfo
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		out = append(out, fieldInfo{index: i, name: strings.Split(tag, ",")[0]})
	}
	return out
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping of fields, got %s", kindName(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Value == "<<" {
			d.errorf(k, path, "YAML merge keys (<<) are not supported: write the fields out")
			continue
		}
		fp := join(path, k.Value)
		if seen[k.Value] {
			d.errorf(k, fp, "field appears twice: keep one")
			continue
		}
		seen[k.Value] = true
		idx := slices.IndexFunc(fields, func(f fieldInfo) bool { return f.name == k.Value })
		if idx < 0 {
			names := make([]string, 0, len(fields))
			for _, f := range fields {
				names = append(names, f.name)
			}
			sort.Strings(names)
			d.errorf(k, fp, "unknown field %q%s (known fields: %s)", k.Value, suggest(k.Value, names), strings.Join(names, ", "))
			continue
		}
		d.lines[fp] = k.Line
		d.decode(val, v.Field(fields[idx].index), fp)
		d.lines[fp] = k.Line
	}
}

// suggest offers the closest known name for a misspelt field.
func suggest(got string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if dd := editDistance(got, n); dd < bestD {
			best, bestD = n, dd
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping of names, got %s", kindName(n))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMap(v.Type()))
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			d.errorf(k, path, "names here must be non-empty strings")
			continue
		}
		if k.Value == "<<" {
			d.errorf(k, path, "YAML merge keys (<<) are not supported: write the entries out")
			continue
		}
		fp := join(path, k.Value)
		if v.MapIndex(reflect.ValueOf(k.Value)).IsValid() {
			d.errorf(k, fp, "name appears twice: names must be unique")
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.lines[fp] = k.Line
		d.decode(val, elem, fp)
		d.lines[fp] = k.Line
		v.SetMapIndex(reflect.ValueOf(k.Value), elem)
	}
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

// errInvalidEnvRef is wrapped by expansion errors.
var errInvalidEnvRef = errors.New("invalid environment reference")

// MaxSecretFileBytes bounds a file read by ${file:/path}.
const MaxSecretFileBytes = 64 << 10

// readSecretFile reads a ${file:path} reference: the file's content with
// surrounding white space trimmed. A relative path is relative to the
// configuration file's directory. Errors name the path, never the content.
func (d *decoder) readSecretFile(path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("${file:} needs a path, like ${file:/var/run/secrets/modelgate/upstream-key}")
	}
	if !filepath.IsAbs(path) {
		path = filepath.Join(filepath.Dir(d.file), path)
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("secret file %s cannot be read: %w (check the path and the mount)", path, errors.Unwrap(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return "", fmt.Errorf("secret file %s is a directory: name the file inside it", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSecretFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("secret file %s cannot be read: %w", path, err)
	}
	if len(b) > MaxSecretFileBytes {
		return "", fmt.Errorf("secret file %s is larger than %d bytes: is it the right file?", path, MaxSecretFileBytes)
	}
	if !slices.Contains(d.files, path) {
		d.files = append(d.files, path)
	}
	return strings.TrimSpace(string(b)), nil
}

// expandEnv replaces ${NAME} with the variable's value and ${file:path}
// with the file's content (see readSecretFile). "$$" stands for a
// literal "$". A variable that is not set is an error, never an empty string:
// a forgotten secret must stop the load, not open a route.
func expandEnv(s string, lookup func(string) (string, bool), readFile func(string) (string, error)) (out string, fromEnv bool, err error) {
	if !strings.Contains(s, "$") {
		return s, false, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' {
			b.WriteByte(c)
			continue
		}
		if i+1 < len(s) && s[i+1] == '$' {
			b.WriteByte('$')
			i++
			continue
		}
		if i+1 >= len(s) || s[i+1] != '{' {
			b.WriteByte('$')
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", false, fmt.Errorf("%w: unclosed ${ (write ${NAME}, or $$ for a literal $)", errInvalidEnvRef)
		}
		name := s[i+2 : i+2+end]
		if file, ok := strings.CutPrefix(name, "file:"); ok {
			val, err := readFile(file)
			if err != nil {
				return "", false, err
			}
			b.WriteString(val)
			fromEnv = true
			i += 2 + end
			continue
		}
		if !validEnvName(name) {
			return "", false, fmt.Errorf("%w: %q is not a variable name (letters, digits and _; not starting with a digit)", errInvalidEnvRef, name)
		}
		val, ok := lookup(name)
		if !ok {
			return "", false, fmt.Errorf("environment variable %s is not set: set it, or remove the reference", name)
		}
		b.WriteString(val)
		fromEnv = true
		i += 2 + end
	}
	return b.String(), fromEnv, nil
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
