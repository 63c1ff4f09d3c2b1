package metrics

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// A small PromQL lexer, enough to tell which metrics and labels an
// expression of the Grafana dashboard names (dashboard_test.go). It is not a
// parser: it walks the tokens, skipping string literals, numbers and
// durations, range and subquery brackets, Grafana variables ($name,
// ${name}, ${name:format}), operators and keywords, and records
//
//   - every selector: a metric name, with or without {matchers}, or a bare
//     {matchers} (named by __name__="..." or by a quoted name);
//   - the label names the matchers use;
//   - the label names of by, without, on, ignoring, group_left and
//     group_right lists.
//
// A name directly followed by "(" (spaces allowed), or by "by" or
// "without", is a function or an aggregation, not a metric. An expression with nothing but spaces and
// comments, unbalanced parentheses, an unterminated string, selector or
// range, or a character PromQL has no use for, is an error.

// promSelector is one selector of an expression.
type promSelector struct {
	// metric is the metric name; "" when the selector names none or names
	// it by a regular expression (__name__=~"...").
	metric string
	// labels are the label names its matchers use (not __name__).
	labels []string
	// matchers are those matchers, in order.
	matchers []promMatcher
}

// promMatcher is one label matcher: label op "value".
type promMatcher struct{ label, op, value string }

// promRefs is what an expression names.
type promRefs struct {
	selectors []promSelector
	// grouping are the label names of by, without, on, ignoring,
	// group_left and group_right.
	grouping []string
}

// metrics returns the metric names the selectors name, sorted and without
// duplicates.
func (r promRefs) metrics() []string {
	var out []string
	for _, s := range r.selectors {
		if s.metric != "" {
			out = append(out, s.metric)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Keywords followed by a list of label names; for group_left and
// group_right the list is optional.
var promGroupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// Keywords that are neither metrics nor functions.
var promKeywords = map[string]bool{
	"offset": true, "bool": true, "and": true, "or": true, "unless": true, "atan2": true, "inf": true, "nan": true,
}

type promLexer struct {
	s string
	i int
}

// lexPromQL returns the selectors and grouping labels expr names.
func lexPromQL(expr string) (promRefs, error) {
	l := &promLexer{s: expr}
	var refs promRefs
	depth, tokens := 0, 0
	for {
		l.skipSpace()
		if l.i >= len(l.s) {
			break
		}
		tokens++
		c := l.s[l.i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			if _, err := l.str(); err != nil {
				return promRefs{}, err
			}
		case c == '(':
			depth++
			l.i++
		case c == ')':
			if depth == 0 {
				return promRefs{}, fmt.Errorf("unbalanced ) at offset %d", l.i)
			}
			depth--
			l.i++
		case c == '[':
			if err := l.skipRange(); err != nil {
				return promRefs{}, err
			}
		case c == '{':
			sel, err := l.selector("")
			if err != nil {
				return promRefs{}, err
			}
			refs.selectors = append(refs.selectors, sel)
		case c == '$':
			if err := l.skipVariable(); err != nil {
				return promRefs{}, err
			}
		case isDigit(c) || c == '.' && isDigit(l.peek(1)):
			l.skipNumber()
		case isIdentStart(c):
			word := l.ident()
			lower := strings.ToLower(word)
			switch {
			case promGroupingKeywords[lower]:
				labels, err := l.labelList(lower == "group_left" || lower == "group_right")
				if err != nil {
					return promRefs{}, fmt.Errorf("%s: %w", word, err)
				}
				refs.grouping = append(refs.grouping, labels...)
			case promKeywords[lower]:
			default:
				l.skipSpace()
				if l.nextIsModifier() { // sum by (le) (...): an aggregation
					continue
				}
				switch l.peek(0) {
				case '(': // a function or an aggregation
				case '{':
					sel, err := l.selector(word)
					if err != nil {
						return promRefs{}, err
					}
					refs.selectors = append(refs.selectors, sel)
				default:
					refs.selectors = append(refs.selectors, promSelector{metric: word})
				}
			}
		case strings.IndexByte("+-*/%^=!<>,@", c) >= 0:
			l.i++
		default:
			return promRefs{}, fmt.Errorf("unexpected %q at offset %d", c, l.i)
		}
	}
	if tokens == 0 {
		return promRefs{}, fmt.Errorf("empty expression")
	}
	if depth != 0 {
		return promRefs{}, fmt.Errorf("%d unclosed (", depth)
	}
	return refs, nil
}

// promQLNames returns the metric names expr names.
func promQLNames(expr string) ([]string, error) {
	refs, err := lexPromQL(expr)
	if err != nil {
		return nil, err
	}
	return refs.metrics(), nil
}

func (l *promLexer) peek(n int) byte {
	if l.i+n < len(l.s) {
		return l.s[l.i+n]
	}
	return 0
}

// skipSpace skips white space and # comments.
func (l *promLexer) skipSpace() {
	for l.i < len(l.s) {
		switch c := l.s[l.i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			l.i++
		case c == '#':
			for l.i < len(l.s) && l.s[l.i] != '\n' {
				l.i++
			}
		default:
			return
		}
	}
}

func isDigit(c byte) bool {
	return '0' <= c && c <= '9'
}

// isIdentStart reports whether c starts a metric, label, function or
// keyword name (colons only appear in recording rule names).
func isIdentStart(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' || c == ':'
}

func isIdent(c byte) bool {
	return isIdentStart(c) || isDigit(c)
}

// nextIsModifier reports whether the next word is by or without (which,
// after a name, make the name an aggregation).
func (l *promLexer) nextIsModifier() bool {
	end := l.i
	for end < len(l.s) && isIdent(l.s[end]) {
		end++
	}
	w := strings.ToLower(l.s[l.i:end])
	return w == "by" || w == "without"
}

func (l *promLexer) ident() string {
	start := l.i
	for l.i < len(l.s) && isIdent(l.s[l.i]) {
		l.i++
	}
	return l.s[start:l.i]
}

// skipNumber skips a number or a duration: 1, 0.5, .5, 1e3, 0x1f, 5m, 1h30m.
// The sign of an exponent (1e-3) is lexed as an operator and a number.
func (l *promLexer) skipNumber() {
	for l.i < len(l.s) && (isIdent(l.s[l.i]) || l.s[l.i] == '.') {
		l.i++
	}
}

// str reads a string literal at l.i and returns its value.
func (l *promLexer) str() (string, error) {
	start := l.i
	q := l.s[l.i]
	rest := l.s[l.i+1:]
	if q == '`' {
		end := strings.IndexByte(rest, '`')
		if end < 0 {
			return "", fmt.Errorf("unterminated string at offset %d", start)
		}
		l.i += 1 + end + 1
		return rest[:end], nil
	}
	var b strings.Builder
	for {
		switch {
		case rest == "" || rest[0] == '\n':
			return "", fmt.Errorf("unterminated string at offset %d", start)
		case rest[0] == q:
			l.i = len(l.s) - len(rest) + 1
			return b.String(), nil
		}
		r, _, tail, err := strconv.UnquoteChar(rest, q)
		if err != nil {
			return "", fmt.Errorf("bad escape in string at offset %d", len(l.s)-len(rest))
		}
		b.WriteRune(r)
		rest = tail
	}
}

// skipRange skips a range or subquery: [5m], [$__rate_interval], [1h:5m].
func (l *promLexer) skipRange() error {
	start := l.i
	for l.i++; l.i < len(l.s); l.i++ {
		switch c := l.s[l.i]; {
		case c == ']':
			l.i++
			return nil
		case isIdent(c) || c == '$' || c == '{' || c == '}' || c == ' ' || c == '.':
		default:
			return fmt.Errorf("unexpected %q in range at offset %d", c, l.i)
		}
	}
	return fmt.Errorf("unterminated range at offset %d", start)
}

// skipVariable skips a Grafana variable: $name, ${name} or ${name:format}.
func (l *promLexer) skipVariable() error {
	start := l.i
	l.i++
	if l.peek(0) == '{' {
		end := strings.IndexByte(l.s[l.i:], '}')
		if end < 2 {
			return fmt.Errorf("bad variable at offset %d", start)
		}
		l.i += end + 1
		return nil
	}
	if l.ident() == "" {
		return fmt.Errorf("bad variable at offset %d", start)
	}
	return nil
}

// selector reads {matchers} at l.i, for metric name (which may be "").
func (l *promLexer) selector(name string) (promSelector, error) {
	start := l.i
	sel := promSelector{metric: name}
	l.i++ // {
	for {
		l.skipSpace()
		var label string
		switch c := l.peek(0); {
		case c == '}':
			l.i++
			return sel, nil
		case c == '"' || c == '\'' || c == '`':
			s, err := l.str()
			if err != nil {
				return promSelector{}, err
			}
			label = s
		case isIdentStart(c):
			label = l.ident()
		default:
			return promSelector{}, fmt.Errorf("unexpected %q in selector at offset %d", c, l.i)
		}
		l.skipSpace()
		var op string
		for _, o := range []string{"=~", "!~", "!=", "="} {
			if strings.HasPrefix(l.s[l.i:], o) {
				op = o
				break
			}
		}
		if op == "" { // a quoted metric name: {"name", label="value"}
			if label == "" || sel.metric != "" {
				return promSelector{}, fmt.Errorf("matcher without operator in selector at offset %d", start)
			}
			sel.metric = label
		} else {
			l.i += len(op)
			l.skipSpace()
			if c := l.peek(0); c != '"' && c != '\'' && c != '`' {
				return promSelector{}, fmt.Errorf("matcher %s%s without a string at offset %d", label, op, l.i)
			}
			value, err := l.str()
			if err != nil {
				return promSelector{}, err
			}
			switch {
			case label == "":
				return promSelector{}, fmt.Errorf("empty label name in selector at offset %d", start)
			case label != "__name__":
				sel.labels = append(sel.labels, label)
				sel.matchers = append(sel.matchers, promMatcher{label, op, value})
			case op == "=" && (sel.metric == "" || sel.metric == value):
				sel.metric = value
			default: // a regular expression or a second name: unknown
				sel.metric = ""
			}
		}
		l.skipSpace()
		switch l.peek(0) {
		case ',':
			l.i++
		case '}':
		default:
			return promSelector{}, fmt.Errorf("unterminated selector at offset %d", start)
		}
	}
}

// labelList reads (label, ...) after a grouping keyword; when optional, a
// keyword without a list (group_left) is fine.
func (l *promLexer) labelList(optional bool) ([]string, error) {
	l.skipSpace()
	if l.peek(0) != '(' {
		if optional {
			return nil, nil
		}
		return nil, fmt.Errorf("no label list at offset %d", l.i)
	}
	start := l.i
	l.i++
	labels := []string{}
	for {
		l.skipSpace()
		switch c := l.peek(0); {
		case c == ')':
			l.i++
			return labels, nil
		case c == '"' || c == '\'' || c == '`':
			s, err := l.str()
			if err != nil {
				return nil, err
			}
			if s == "" {
				return nil, fmt.Errorf("empty label name at offset %d", start)
			}
			labels = append(labels, s)
		case isIdentStart(c):
			labels = append(labels, l.ident())
		default:
			return nil, fmt.Errorf("unexpected %q in label list at offset %d", c, l.i)
		}
		l.skipSpace()
		switch l.peek(0) {
		case ',':
			l.i++
		case ')':
		default:
			return nil, fmt.Errorf("unterminated label list at offset %d", start)
		}
	}
}

func TestLexPromQL(t *testing.T) {
	tests := []struct {
		name     string
		expr     string
		metrics  []string
		labels   []string // of the selectors, in order
		grouping []string
		err      bool
	}{
		{name: "bare metric", expr: "up", metrics: []string{"up"}},
		{name: "recording rule name", expr: "job:http_requests:rate5m", metrics: []string{"job:http_requests:rate5m"}},
		{name: "function is not a metric", expr: "rate(x_total[5m])", metrics: []string{"x_total"}},
		{name: "function with a space before (", expr: "abs (x)", metrics: []string{"x"}},
		{name: "matchers", expr: `x{route=~"a|b", code!="5xx",}`, metrics: []string{"x"}, labels: []string{"route", "code"}},
		{name: "space before selector", expr: `x {route="a"}`, metrics: []string{"x"}, labels: []string{"route"}},
		{name: "metric-like text in strings", expr: `label_replace(x, "dst", "not_a_metric", "src", 'y{z="1"}')`, metrics: []string{"x"}},
		{name: "raw string with quote", expr: "x{path=~`a\"b`}", metrics: []string{"x"}, labels: []string{"path"}},
		{name: "escaped quote", expr: `x{a="b\"c{d}"}`, metrics: []string{"x"}, labels: []string{"a"}},
		{name: "grafana variables", expr: `sum(rate(x{route=~"$route"}[$__rate_interval])) * $scale + ${offset:raw}`, metrics: []string{"x"}, labels: []string{"route"}},
		{name: "range variable in braces", expr: `increase(x[${__range}])`, metrics: []string{"x"}},
		{name: "subquery", expr: `max_over_time(rate(x[5m])[1h:30s])`, metrics: []string{"x"}},
		{name: "offset and @", expr: `x offset 5m - x offset -1h30m @ start()`, metrics: []string{"x"}},
		{name: "on and group_left", expr: `a * on(instance, job) group_left(version) b`, metrics: []string{"a", "b"}, grouping: []string{"instance", "job", "version"}},
		{name: "group_left without list", expr: `a / ignoring(code) group_left b`, metrics: []string{"a", "b"}, grouping: []string{"code"}},
		{name: "bool and set operators", expr: `a > bool 1 and b or c unless d`, metrics: []string{"a", "b", "c", "d"}},
		{name: "keywords are case-insensitive", expr: `sum BY (route) (a) AND b`, metrics: []string{"a", "b"}, grouping: []string{"route"}},
		{name: "numbers", expr: `x * 1e3 + 0x1F - .5 + Inf - NaN`, metrics: []string{"x"}},
		{name: "exponent sign", expr: `x > 1e-3`, metrics: []string{"x"}},
		{name: "nested aggregations", expr: `topk(5, sum without (auth) (rate(x[5m]))) / scalar(count(y))`, metrics: []string{"x", "y"}, grouping: []string{"auth"}},
		{name: "by after the aggregation", expr: `sum(rate(x[5m])) by (route, code)`, metrics: []string{"x"}, grouping: []string{"route", "code"}},
		{name: "histogram quantile", expr: `histogram_quantile(0.99, sum by (le, route) (rate(x_bucket[5m])))`, metrics: []string{"x_bucket"}, grouping: []string{"le", "route"}},
		{name: "count_values label is a string", expr: `count_values("version", x)`, metrics: []string{"x"}},
		{name: "name matcher", expr: `{__name__="x", route="a"}`, metrics: []string{"x"}, labels: []string{"route"}},
		{name: "name regex names no metric", expr: `{__name__=~"x|y"}`, metrics: nil},
		{name: "quoted metric name", expr: `{"x.y", route="a"}`, metrics: []string{"x.y"}, labels: []string{"route"}},
		{name: "quoted grouping label", expr: `sum by ("a.b") (x)`, metrics: []string{"x"}, grouping: []string{"a.b"}},
		{name: "comment", expr: "x # y{z=\"1\"}\n+ w", metrics: []string{"w", "x"}},
		{name: "duplicates", expr: `a / a`, metrics: []string{"a"}},

		{name: "empty", expr: "", err: true},
		{name: "only space and comment", expr: " \n# x\n", err: true},
		{name: "unclosed paren", expr: "rate(x[5m]", err: true},
		{name: "extra paren", expr: "x)", err: true},
		{name: "unterminated string", expr: `x{a="b}`, err: true},
		{name: "unterminated selector", expr: `x{a="b"`, err: true},
		{name: "unterminated range", expr: `rate(x[5m)`, err: true},
		{name: "matcher without value", expr: `x{a=}`, err: true},
		{name: "matcher without operator", expr: `x{a}`, err: true},
		{name: "by without list", expr: `sum by x`, err: true},
		{name: "regex match outside selector", expr: `x =~ "a"`, err: true},
		{name: "bad variable", expr: `x * $`, err: true},
		{name: "bad escape", expr: `x{a="\q"}`, err: true},
		{name: "stray brace", expr: `x}`, err: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refs, err := lexPromQL(tt.expr)
			if tt.err {
				if err == nil {
					t.Fatalf("lexPromQL(%q) = %+v, want an error", tt.expr, refs)
				}
				return
			}
			if err != nil {
				t.Fatalf("lexPromQL(%q): %v", tt.expr, err)
			}
			if got := refs.metrics(); !slices.Equal(got, tt.metrics) {
				t.Errorf("metrics = %q, want %q", got, tt.metrics)
			}
			var labels []string
			for _, s := range refs.selectors {
				labels = append(labels, s.labels...)
			}
			if !slices.Equal(labels, tt.labels) {
				t.Errorf("matcher labels = %q, want %q", labels, tt.labels)
			}
			if !slices.Equal(refs.grouping, tt.grouping) {
				t.Errorf("grouping labels = %q, want %q", refs.grouping, tt.grouping)
			}
		})
	}
}

// FuzzPromQLNames feeds the lexer arbitrary text: it must never panic, and
// what it returns must be well formed: without string literals, every
// metric is one of the input's substrings, and no label name is empty.
func FuzzPromQLNames(f *testing.F) {
	for _, s := range []string{
		`histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route=~"$route"}[$__rate_interval])))`,
		`a * on(instance) group_left(version) b offset 5m`,
		`{__name__="x", "y"="z"}`, "x{a=`b`}", `label_values(x, route)`, `x # c`, `'\u00e9'`, `${a:raw}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		refs, err := lexPromQL(expr)
		if err != nil {
			return
		}
		names, err := promQLNames(expr)
		if err != nil || !slices.Equal(names, refs.metrics()) {
			t.Fatalf("promQLNames(%q) = %q, %v; lexPromQL names %q", expr, names, err, refs.metrics())
		}
		quoted := strings.ContainsAny(expr, "\"'`") // names may come from strings
		for _, s := range refs.selectors {
			if !quoted && !strings.Contains(expr, s.metric) {
				t.Errorf("metric %q is not in %q", s.metric, expr)
			}
			for _, l := range s.labels {
				if l == "" {
					t.Errorf("empty matcher label in %q", expr)
				}
			}
		}
		for _, l := range refs.grouping {
			if l == "" {
				t.Errorf("empty grouping label in %q", expr)
			}
		}
	})
}
