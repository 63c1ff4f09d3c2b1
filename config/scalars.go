package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Duration is a Go duration written as a string ("30s", "5m", "1h30m").
type Duration time.Duration

func (d *Duration) decodeScalar(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return errors.New(`not a duration: write a number with a unit, like "30s" or "5m"`)
	}
	if v < 0 {
		return errors.New("a duration here cannot be negative")
	}
	*d = Duration(v)
	return nil
}

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Size is a byte count written as a number with an optional unit: 512, 64KiB,
// 10MiB, 1GiB (binary) or 10KB, 10MB (decimal).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

func (z *Size) decodeScalar(s string) error {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return errors.New(`not a size: write a whole number of bytes with an optional unit, like "512KiB" or "10MiB"`)
	}
	if n > math.MaxInt64/mult {
		return errors.New("size is too large")
	}
	*z = Size(n * mult)
	return nil
}

// Time is an RFC 3339 timestamp such as 2027-01-01T00:00:00Z.
type Time struct{ time.Time }

func (t *Time) decodeScalar(s string) error {
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return errors.New("not a timestamp: write RFC 3339, like 2027-01-01T00:00:00Z")
	}
	t.Time = v
	return nil
}

// Match is a claim condition. Written as a list it means "any of these"; as a
// mapping it may say any_of, all_of, or both (both must then hold):
//
//	roles: [Score.Invoke, Score.Admin]          # any of
//	roles: { all_of: [Score.Invoke, Tier.Gold] } # every one
type Match struct {
	AnyOf []string `yaml:"any_of"`
	AllOf []string `yaml:"all_of"`
	set   bool
}

// IsSet reports whether the condition was written at all.
func (m Match) IsSet() bool { return m.set }

func (m *Match) decodeNode(d *decoder, n *yaml.Node, path string) {
	if isNull(n) {
		return
	}
	m.set = true
	switch n.Kind {
	case yaml.SequenceNode:
		var list []string
		d.decode(n, reflect.ValueOf(&list).Elem(), path)
		m.AnyOf = list
	case yaml.MappingNode:
		type plain struct {
			AnyOf []string `yaml:"any_of"`
			AllOf []string `yaml:"all_of"`
		}
		var p plain
		d.decodeStruct(n, reflect.ValueOf(&p).Elem(), path)
		m.AnyOf, m.AllOf = p.AnyOf, p.AllOf
	default:
		d.errorf(n, path, "expected a list (any of) or a mapping with any_of / all_of, got %s", kindName(n))
		return
	}
	if len(m.AnyOf) == 0 && len(m.AllOf) == 0 {
		d.errorf(n, path, "condition lists no values: list at least one, or remove the field")
	}
	for _, v := range append(append([]string(nil), m.AnyOf...), m.AllOf...) {
		if strings.TrimSpace(v) == "" {
			d.errorf(n, path, "empty value in the list: remove it")
			break
		}
	}
}

func (m Match) String() string {
	var parts []string
	if len(m.AnyOf) > 0 {
		parts = append(parts, fmt.Sprintf("any of %v", m.AnyOf))
	}
	if len(m.AllOf) > 0 {
		parts = append(parts, fmt.Sprintf("all of %v", m.AllOf))
	}
	return strings.Join(parts, " and ")
}
