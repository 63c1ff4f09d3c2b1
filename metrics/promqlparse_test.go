package metrics

import (
	"fmt"
	"strings"
)

// A small PromQL parser over the lexer's pieces (promql_test.go), enough to
// tell which function or aggregation each selector sits in, what each
// aggregation groups by and what each binary operator matches on, so the
// dashboard checker can hold those to the metrics they apply to.

// promNode is one node of an expression.
type promNode struct {
	kind promKind
	// name is the function or aggregation name, or the binary operator.
	name string
	sel  promSelector // of a selector
	// args are a call's arguments, or a binary operator's two sides.
	args []*promNode
	// grouping is an aggregation's by or without list (without when
	// without is set); grouped says whether there was one.
	grouping         []string
	grouped, without bool
	// matching is a binary operator's on or ignoring list (ignoring when
	// ignoring is set); matched says whether there was one. group is
	// group_left or group_right, with its labels in include.
	matching          []string
	matched, ignoring bool
	group             string
	include           []string
}

type promKind int

const (
	promScalar promKind = iota // a number, string, or Grafana variable
	promSel
	promCall
	promAgg
	promBinary
)

var promAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
	"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

// Binary operators by precedence, lowest first.
var promPrecedence = map[string]int{
	"or": 1, "and": 2, "unless": 2,
	"==": 3, "!=": 3, "<=": 3, ">=": 3, "<": 3, ">": 3,
	"+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6,
}

// parsePromQL parses expr into a tree.
func parsePromQL(expr string) (*promNode, error) {
	l := &promLexer{s: expr}
	n, err := l.parseExpr(0)
	if err != nil {
		return nil, err
	}
	l.skipSpace()
	if l.i < len(l.s) {
		return nil, fmt.Errorf("unexpected %q at offset %d", l.s[l.i], l.i)
	}
	return n, nil
}

// binaryOp returns the binary operator at l.i, or "".
func (l *promLexer) binaryOp() string {
	l.skipSpace()
	for _, op := range []string{"==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "^"} {
		if strings.HasPrefix(l.s[l.i:], op) {
			return op
		}
	}
	end := l.i
	for end < len(l.s) && isIdent(l.s[end]) {
		end++
	}
	if w := strings.ToLower(l.s[l.i:end]); w == "and" || w == "or" || w == "unless" || w == "atan2" {
		return w
	}
	return ""
}

// word consumes w (case-insensitive) when it is the next word.
func (l *promLexer) word(w string) bool {
	l.skipSpace()
	end := l.i
	for end < len(l.s) && isIdent(l.s[end]) {
		end++
	}
	if strings.EqualFold(l.s[l.i:end], w) {
		l.i = end
		return true
	}
	return false
}

func (l *promLexer) parseExpr(minPrec int) (*promNode, error) {
	lhs, err := l.parseUnary()
	if err != nil {
		return nil, err
	}
	for {
		op := l.binaryOp()
		prec, ok := promPrecedence[op]
		if !ok || prec < minPrec {
			return lhs, nil
		}
		l.i += len(op)
		n := &promNode{kind: promBinary, name: op}
		l.word("bool")
		switch {
		case l.word("on"):
			n.matched = true
		case l.word("ignoring"):
			n.matched, n.ignoring = true, true
		}
		if n.matched {
			if n.matching, err = l.labelList(false); err != nil {
				return nil, err
			}
			for _, g := range []string{"group_left", "group_right"} {
				if l.word(g) {
					n.group = g
					if n.include, err = l.labelList(true); err != nil {
						return nil, err
					}
				}
			}
		}
		next := prec + 1
		if op == "^" {
			next = prec // right-associative
		}
		rhs, err := l.parseExpr(next)
		if err != nil {
			return nil, err
		}
		n.args = []*promNode{lhs, rhs}
		lhs = n
	}
}

func (l *promLexer) parseUnary() (*promNode, error) {
	l.skipSpace()
	if c := l.peek(0); c == '-' || c == '+' {
		l.i++
		return l.parseUnary()
	}
	n, err := l.parsePrimary()
	if err != nil {
		return nil, err
	}
	for { // ranges, subqueries, offset and @
		l.skipSpace()
		switch {
		case l.peek(0) == '[':
			if err := l.skipRange(); err != nil {
				return nil, err
			}
		case l.word("offset"):
			l.skipSpace()
			if l.peek(0) == '-' {
				l.i++
			}
			l.skipSpace()
			l.skipNumber()
		case l.peek(0) == '@':
			l.i++
			l.skipSpace()
			if w := l.ident(); w != "" {
				l.skipSpace()
				if l.peek(0) == '(' && l.peek(1) == ')' {
					l.i += 2
				}
			} else {
				l.skipNumber()
			}
		default:
			return n, nil
		}
	}
}

func (l *promLexer) parseArgs() ([]*promNode, error) {
	l.skipSpace()
	if l.peek(0) != '(' {
		return nil, fmt.Errorf("no ( at offset %d", l.i)
	}
	l.i++
	var args []*promNode
	for {
		l.skipSpace()
		if l.peek(0) == ')' {
			l.i++
			return args, nil
		}
		a, err := l.parseExpr(0)
		if err != nil {
			return nil, err
		}
		args = append(args, a)
		l.skipSpace()
		switch l.peek(0) {
		case ',':
			l.i++
		case ')':
		default:
			return nil, fmt.Errorf("unterminated arguments at offset %d", l.i)
		}
	}
}

func (l *promLexer) parseGrouping(n *promNode) error {
	switch {
	case l.word("by"):
	case l.word("without"):
		n.without = true
	default:
		return nil
	}
	if n.grouped {
		return fmt.Errorf("%s has two groupings", n.name)
	}
	n.grouped = true
	var err error
	n.grouping, err = l.labelList(false)
	return err
}

func (l *promLexer) parsePrimary() (*promNode, error) {
	l.skipSpace()
	c := l.peek(0)
	switch {
	case c == '(':
		l.i++
		n, err := l.parseExpr(0)
		if err != nil {
			return nil, err
		}
		l.skipSpace()
		if l.peek(0) != ')' {
			return nil, fmt.Errorf("unclosed ( at offset %d", l.i)
		}
		l.i++
		return n, nil
	case c == '"' || c == '\'' || c == '`':
		_, err := l.str()
		return &promNode{kind: promScalar}, err
	case c == '$':
		return &promNode{kind: promScalar}, l.skipVariable()
	case isDigit(c) || c == '.' && isDigit(l.peek(1)):
		l.skipNumber()
		return &promNode{kind: promScalar}, nil
	case c == '{':
		sel, err := l.selector("")
		return &promNode{kind: promSel, sel: sel}, err
	case isIdentStart(c):
		word := l.ident()
		lower := strings.ToLower(word)
		if lower == "inf" || lower == "nan" {
			return &promNode{kind: promScalar}, nil
		}
		if promAggregations[lower] {
			n := &promNode{kind: promAgg, name: lower}
			if err := l.parseGrouping(n); err != nil {
				return nil, err
			}
			args, err := l.parseArgs()
			if err != nil {
				return nil, err
			}
			n.args = args
			if len(args) == 0 {
				return nil, fmt.Errorf("%s without an argument", word)
			}
			return n, l.parseGrouping(n)
		}
		l.skipSpace()
		switch l.peek(0) {
		case '(':
			args, err := l.parseArgs()
			return &promNode{kind: promCall, name: word, args: args}, err
		case '{':
			sel, err := l.selector(word)
			return &promNode{kind: promSel, sel: sel}, err
		}
		return &promNode{kind: promSel, sel: promSelector{metric: word}}, nil
	}
	return nil, fmt.Errorf("unexpected %q at offset %d", c, l.i)
}

// vectorArg returns the argument of an aggregation or function that is
// the vector it works on: the last of an aggregation, the second of
// histogram_quantile, else the first that is not a scalar.
func (n *promNode) vectorArg() *promNode {
	switch {
	case len(n.args) == 0:
		return nil
	case n.kind == promAgg:
		return n.args[len(n.args)-1]
	case n.name == "histogram_quantile" && len(n.args) == 2:
		return n.args[1]
	}
	for _, a := range n.args {
		if a.kind != promScalar {
			return a
		}
	}
	return nil
}

// walk calls f on n and every node under it.
func (n *promNode) walk(f func(*promNode)) {
	f(n)
	for _, a := range n.args {
		a.walk(f)
	}
}
