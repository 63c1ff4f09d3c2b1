package metrics

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/modelgate/modelgate/credential"
	"github.com/modelgate/modelgate/idp"
)

// These tests read the Grafana dashboard shipped in deploy/grafana and
// check it against the registry the gateway really builds: every metric an
// expression names is exported, and every label it matches or groups on is
// one of that metric's labels. A renamed metric or label then fails here,
// not on somebody's wall screen.

const dashboardPath = "../deploy/grafana/modelgate.json"

// The datasource every panel and target must use: the dashboard's
// datasource variable, so the dashboard imports into any Grafana.
var dashboardDatasource = grafanaRef{Type: "prometheus", UID: "${datasource}"}

type grafanaDashboard struct {
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	SchemaVersion int      `json:"schemaVersion"`
	Tags          []string `json:"tags"`
	Refresh       string   `json:"refresh"`
	Time          struct{ From, To string }
	Panels        []grafanaPanel `json:"panels"`
	Templating    struct{ List []grafanaVariable }
}

type grafanaRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type grafanaPanel struct {
	ID          *int                      `json:"id"`
	Type        string                    `json:"type"`
	Title       string                    `json:"title"`
	Datasource  *grafanaRef               `json:"datasource"`
	GridPos     *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets     []grafanaTarget           `json:"targets"`
	Panels      []grafanaPanel            `json:"panels"` // of a collapsed row
	FieldConfig struct {
		Defaults struct {
			Unit       string `json:"unit"`
			Thresholds struct {
				Steps []json.RawMessage `json:"steps"`
			} `json:"thresholds"`
			Custom struct {
				ThresholdsStyle struct {
					Mode string `json:"mode"`
				} `json:"thresholdsStyle"`
			} `json:"custom"`
			Mappings []struct {
				Type    string                     `json:"type"`
				Options map[string]json.RawMessage `json:"options"`
			} `json:"mappings"`
		} `json:"defaults"`
		Overrides []grafanaOverride `json:"overrides"`
	} `json:"fieldConfig"`
}

// grafanaOverride is a field override: a matcher and the properties it sets.
type grafanaOverride struct {
	Matcher struct {
		ID      string `json:"id"`
		Options string `json:"options"`
	} `json:"matcher"`
	Properties []grafanaProperty `json:"properties"`
}

type grafanaProperty struct {
	ID    string          `json:"id"`
	Value json.RawMessage `json:"value"`
}

type grafanaTarget struct {
	Datasource *grafanaRef `json:"datasource"`
	Expr       string      `json:"expr"`
	RefID      string      `json:"refId"`
}

type grafanaVariable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Datasource *grafanaRef     `json:"datasource"`
	Query      json.RawMessage `json:"query"` // a string, or {"query": "..."}
	Definition string          `json:"definition"`
	Multi      bool            `json:"multi"`
	IncludeAll bool            `json:"includeAll"`
}

// query returns the variable's query text.
func (v grafanaVariable) query() (string, error) {
	var s string
	if err := json.Unmarshal(v.Query, &s); err == nil {
		return s, nil
	}
	var o struct{ Query string }
	if err := json.Unmarshal(v.Query, &o); err != nil {
		return "", fmt.Errorf("variable %s: query is neither a string nor an object: %v", v.Name, err)
	}
	return o.Query, nil
}

// loadDashboard reads and parses the shipped dashboard.
func loadDashboard(t *testing.T) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// allPanels returns the dashboard's panels, rows and the panels of
// collapsed rows, in order.
func (d grafanaDashboard) allPanels() []grafanaPanel {
	var out []grafanaPanel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

// dashboardExpr is one PromQL expression of the dashboard and where it is.
type dashboardExpr struct{ where, expr string }

// exprs returns every expression of the dashboard: the panels' targets and
// the query variables' queries (label_values(selector, label) and
// query_result(expr) are unwrapped; the label of label_values is returned
// as a by list, so the checker holds it to the selector's metric).
func (d grafanaDashboard) exprs(t *testing.T) []dashboardExpr {
	t.Helper()
	var out []dashboardExpr
	for _, p := range d.allPanels() {
		for _, tg := range p.Targets {
			out = append(out, dashboardExpr{where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), expr: tg.Expr})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, err := v.query()
		if err != nil {
			t.Error(err)
			continue
		}
		if v.Definition != "" && v.Definition != q {
			t.Errorf("variable %s: definition %q is not its query %q", v.Name, v.Definition, q)
		}
		expr, err := variableExpr(q)
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		out = append(out, dashboardExpr{where: "variable " + v.Name, expr: expr})
	}
	return out
}

var (
	labelValuesRE = regexp.MustCompile(`^\s*label_values\(\s*(.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)
	queryResultRE = regexp.MustCompile(`^\s*query_result\((.+)\)\s*$`)
)

// variableExpr turns a Grafana Prometheus variable query into PromQL the
// checker can read: label_values(sel, label) becomes "max by (label) (sel)".
func variableExpr(q string) (string, error) {
	if m := labelValuesRE.FindStringSubmatch(q); m != nil {
		return "max by (" + m[2] + ") (" + m[1] + ")", nil
	}
	if m := queryResultRE.FindStringSubmatch(q); m != nil {
		return m[1], nil
	}
	return "", fmt.Errorf("query %q is not label_values(selector, label) or query_result(expr)", q)
}

// exportedMetrics is the names a scrape holds.
type exportedMetrics map[string]*exportedMetric

// exportedMetric is one name a scrape holds: its label names with the
// values they took, and whether it counts (a counter, or a histogram's or
// summary's _bucket, _sum or _count), so rate and increase apply.
type exportedMetric struct {
	labels   map[string]map[string]bool
	counting bool
}

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"instance", "job"}

// fixedLabels are the labels whose values the gateway fixes (not names
// from the configuration): a matcher's value must be one it exports.
var fixedLabels = map[string]bool{"code": true, "outcome": true, "state": true, "result": true, "kind": true, "auth": true}

// gatewayExports builds the registry the gateway builds, with every family
// present (a route with requests, errors and tokens; a pool with tries,
// health checks and a mirror; a credential, an identity provider, a reload,
// a limits store failure), and returns the names it exports: for a
// histogram its _bucket (with le), _sum and _count; for a summary its name
// (with quantile), _sum and _count.
func gatewayExports(t *testing.T) exportedMetrics {
	t.Helper()
	m := New("test")
	r := m.Route("r")
	r.Observe(200, "key", 30*time.Millisecond, 20*time.Millisecond, "")
	r.Observe(401, "", time.Millisecond, 0, "missing_credential")
	r.Observe(429, "token", time.Millisecond, 0, codeRateLimited)
	r.Observe(502, "public", 10*time.Millisecond, 9*time.Millisecond, "upstream_unavailable")
	r.Tokens(10, 5, 15)
	r.NoUsage()
	p := m.Pool("pool", []string{"a", "b"})
	p.Try(0, true, false)
	p.Try(1, false, true)
	m.HealthCheck("pool", "a", "up")
	m.HealthCheck("pool", "a", "down")
	m.HealthCheck("pool", "b", "skipped")
	m.LimitsStoreFailure()
	now := time.Now()
	m.SetState(func() State {
		return State{
			Credentials: []credential.Status{{
				Name: "pool/a", Type: "aml_endpoint_token", Ready: true, ValidUntil: now.Add(time.Hour), Refreshes: 2, Failures: 1,
			}},
			IdentityProviders: []idp.Status{{
				Name: "contoso", Type: "azure_ad", Ready: true, Keys: 2, LastSuccess: now.Add(-time.Minute),
				Sources: []idp.SourceStatus{{Name: "v2", Refreshes: 1}},
			}},
			ReloadsOK: 1, ReloadsFailed: 1,
			Backends: []BackendState{
				{Upstream: "pool", Backend: "a", Breaker: "open"},
				{Upstream: "pool", Backend: "b", Breaker: "closed", Available: true},
			},
			Mirrors: []MirrorState{{Upstream: "pool", Dropped: 1, InFlight: 1}},
		}
	})

	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	out := exportedMetrics{}
	add := func(name string, counting bool, labels map[string]map[string]bool, extra ...string) {
		if out[name] == nil {
			out[name] = &exportedMetric{labels: map[string]map[string]bool{}, counting: counting}
		}
		for l, vs := range labels {
			if out[name].labels[l] == nil {
				out[name].labels[l] = map[string]bool{}
			}
			for v := range vs {
				out[name].labels[l][v] = true
			}
		}
		for _, l := range append(extra, targetLabels...) {
			if out[name].labels[l] == nil {
				out[name].labels[l] = map[string]bool{}
			}
		}
	}
	for _, f := range fams {
		got[f.GetName()] = true
		labels := map[string]map[string]bool{}
		for _, mt := range f.GetMetric() {
			for _, l := range mt.GetLabel() {
				if labels[l.GetName()] == nil {
					labels[l.GetName()] = map[string]bool{}
				}
				labels[l.GetName()][l.GetValue()] = true
			}
		}
		name := f.GetName()
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			counting := f.GetType() == dto.MetricType_HISTOGRAM
			add(name+"_bucket", counting, labels, "le")
			add(name+"_sum", counting, labels)
			add(name+"_count", counting, labels)
		case dto.MetricType_SUMMARY:
			add(name, false, labels, "quantile")
			add(name+"_sum", true, labels)
			add(name+"_count", true, labels)
		default:
			add(name, f.GetType() == dto.MetricType_COUNTER, labels)
		}
	}

	// Every family the package describes must be in the scrape, or the
	// checks below would pass for want of data.
	descs := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range []prometheus.Collector{m.requests, m.gatewayTime, m.upstream, m.limited, m.denied, m.refused,
			m.tries, m.retries, m.probes, m.storeFails, m.tokens, m.noUsage, &stateCollector{m: m}} {
			c.Describe(descs)
		}
		close(descs)
	}()
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		n := fqName.FindStringSubmatch(d.String())
		if n == nil {
			t.Fatalf("no fqName in %s", d)
		}
		if !got[n[1]] {
			t.Errorf("the test registry has no %s: fill it in gatewayExports", n[1])
		}
	}
	if !got["modelgate_build_info"] {
		t.Error("the test registry has no modelgate_build_info")
	}
	return out
}

// check returns what is wrong with expr against the exported metrics: it
// does not lex, names no metric, names a metric that is not exported,
// matches on a label the metric does not have, or groups by (or joins on)
// a label none of its metrics has (checked only when all are exported).
func (e exportedMetrics) check(expr string) []string {
	refs, err := lexPromQL(expr)
	if err != nil {
		return []string{"cannot lex: " + err.Error()}
	}
	var problems []string
	if len(refs.selectors) == 0 {
		problems = append(problems, "names no metric")
	}
	union, known := map[string]bool{}, true
	for _, s := range refs.selectors {
		if s.metric == "" {
			problems = append(problems, "a selector names no single metric")
			continue
		}
		em, ok := e[s.metric]
		if !ok {
			problems = append(problems, fmt.Sprintf("metric %s is not exported", s.metric))
			known = false
			continue
		}
		for _, l := range s.labels {
			if em.labels[l] == nil {
				problems = append(problems, fmt.Sprintf("%s has no label %q", s.metric, l))
			}
		}
		for _, mt := range s.matchers {
			problems = append(problems, em.checkValue(s.metric, mt)...)
		}
		for l := range em.labels {
			union[l] = true
		}
	}
	for _, l := range refs.grouping {
		if known && !union[l] {
			problems = append(problems, fmt.Sprintf("grouping label %q is on none of %q", l, refs.metrics()))
		}
	}
	if len(problems) != 0 || !known {
		return problems
	}
	tree, err := parsePromQL(expr)
	if err != nil {
		return []string{"cannot parse: " + err.Error()}
	}
	tree.walk(func(n *promNode) { problems = append(problems, e.checkNode(n)...) })
	_, more := e.labelsOf(tree)
	return append(problems, more...)
}

// simpleAlternatives matches a regular expression that is only literal
// alternatives: a|b|c.
var simpleAlternatives = regexp.MustCompile(`^[A-Za-z0-9_.-]+(\|[A-Za-z0-9_.-]+)*$`)

// checkValue returns what is wrong with a matcher's value: on a label with
// a fixed value set, a value (or an alternative of a simple a|b regular
// expression) the metric never exports. Values with Grafana variables and
// other regular expressions are not checked.
func (em *exportedMetric) checkValue(metric string, mt promMatcher) []string {
	if !fixedLabels[mt.label] || em.labels[mt.label] == nil || mt.value == "" || strings.Contains(mt.value, "$") {
		return nil
	}
	values := []string{mt.value}
	if mt.op == "=~" || mt.op == "!~" {
		if !simpleAlternatives.MatchString(mt.value) {
			return nil
		}
		values = strings.Split(mt.value, "|")
	}
	var problems []string
	for _, v := range values {
		if !em.labels[mt.label][v] {
			problems = append(problems, fmt.Sprintf("%s{%s%s%q}: %s never has %s %q", metric, mt.label, mt.op, mt.value, metric, mt.label, v))
		}
	}
	return problems
}

// checkNode returns what is wrong with one node: rate, irate or increase
// over a metric that does not count; histogram_quantile over anything but
// an aggregation that keeps le, or over buckets some aggregation drops le
// from.
func (e exportedMetrics) checkNode(n *promNode) []string {
	var problems []string
	switch {
	case n.kind == promCall && (n.name == "rate" || n.name == "irate" || n.name == "increase"):
		if a := n.vectorArg(); a != nil && a.kind == promSel {
			if em := e[a.sel.metric]; em != nil && !em.counting {
				problems = append(problems, fmt.Sprintf("%s over %s, which is not a counter", n.name, a.sel.metric))
			}
		}
	case n.kind == promCall && n.name == "histogram_quantile":
		a := n.vectorArg()
		if a == nil || a.kind != promAgg || !keepsLabel(a, "le") {
			problems = append(problems, "histogram_quantile's argument is not an aggregation by le")
		}
		if a != nil {
			a.walk(func(in *promNode) {
				if in.kind != promAgg || keepsLabel(in, "le") {
					return
				}
				bucket := false
				in.walk(func(x *promNode) { bucket = bucket || x.kind == promSel && strings.HasSuffix(x.sel.metric, "_bucket") })
				if bucket {
					problems = append(problems, fmt.Sprintf("histogram_quantile over a %s that drops le", in.name))
				}
			})
		}
	}
	return problems
}

// selecting are the aggregations that select series, keeping their labels.
var selecting = map[string]bool{"topk": true, "bottomk": true, "limitk": true, "limit_ratio": true}

// keepsLabel reports whether aggregation n keeps label l.
func keepsLabel(n *promNode, l string) bool {
	if selecting[n.name] {
		return true
	}
	return n.grouped && slices.Contains(n.grouping, l) != n.without
}

// promLabels is what labels an expression's series carry: nil for a
// scalar; unknown when the checker cannot tell.
type promLabels struct {
	set     map[string]bool
	unknown bool
}

// labelsOf returns the labels every series of n carries, and what is wrong
// with n's groupings: a by label some metric inside the aggregation lacks,
// an on or ignoring label one side lacks, a group_left or group_right
// label the other side lacks.
func (e exportedMetrics) labelsOf(n *promNode) (promLabels, []string) {
	switch n.kind {
	case promScalar:
		return promLabels{}, nil
	case promSel:
		em := e[n.sel.metric]
		if em == nil {
			return promLabels{unknown: true}, nil
		}
		set := map[string]bool{}
		for l := range em.labels {
			set[l] = true
		}
		return promLabels{set: set}, nil
	case promAgg:
		in, problems := e.labelsOf(n.vectorArg())
		for _, a := range n.args[:len(n.args)-1] {
			_, more := e.labelsOf(a)
			problems = append(problems, more...)
		}
		if in.unknown {
			return in, problems
		}
		for _, l := range n.grouping {
			if !in.set[l] {
				problems = append(problems, fmt.Sprintf("%s %s label %q is not on every series of its argument", n.name, map[bool]string{false: "by", true: "without"}[n.without], l))
			}
		}
		if selecting[n.name] {
			return in, problems
		}
		out := map[string]bool{}
		if n.without {
			for l := range in.set {
				if !slices.Contains(n.grouping, l) {
					out[l] = true
				}
			}
		} else {
			for _, l := range n.grouping {
				out[l] = true
			}
		}
		return promLabels{set: out}, problems
	case promCall:
		var problems []string
		var out promLabels
		v := n.vectorArg()
		for _, a := range n.args {
			got, more := e.labelsOf(a)
			problems = append(problems, more...)
			if a == v {
				out = got
			}
		}
		switch n.name {
		case "histogram_quantile":
			if out.set != nil {
				out.set = maps.Clone(out.set)
				delete(out.set, "le")
			}
		case "vector":
			out = promLabels{set: map[string]bool{}}
		case "scalar", "time", "pi":
			out = promLabels{}
		case "label_replace", "label_join", "absent", "absent_over_time", "count_values":
			out = promLabels{unknown: true}
		}
		return out, problems
	}
	// A binary operator.
	lhs, problems := e.labelsOf(n.args[0])
	rhs, more := e.labelsOf(n.args[1])
	problems = append(problems, more...)
	switch {
	case lhs.unknown || rhs.unknown:
		return promLabels{unknown: true}, problems
	case lhs.set == nil:
		return rhs, problems
	case rhs.set == nil:
		return lhs, problems
	}
	for _, l := range n.matching {
		for side, set := range map[string]map[string]bool{"left": lhs.set, "right": rhs.set} {
			if !set[l] {
				problems = append(problems, fmt.Sprintf("%s label %q of %s is not on its %s side", map[bool]string{false: "on", true: "ignoring"}[n.ignoring], l, n.name, side))
			}
		}
	}
	one := rhs.set // the side group_left's labels come from
	if n.group == "group_right" {
		one = lhs.set
	}
	for _, l := range n.include {
		if !one[l] {
			problems = append(problems, fmt.Sprintf("%s label %q is not on the other side of %s", n.group, l, n.name))
		}
	}
	out := map[string]bool{}
	switch {
	case n.group == "group_left":
		maps.Copy(out, lhs.set)
		for _, l := range n.include {
			out[l] = true
		}
	case n.group == "group_right":
		maps.Copy(out, rhs.set)
		for _, l := range n.include {
			out[l] = true
		}
	case n.matched || n.name == "and" || n.name == "unless":
		maps.Copy(out, lhs.set)
	default: // one-to-one on all labels, or or: what both sides carry
		for l := range lhs.set {
			if rhs.set[l] {
				out[l] = true
			}
		}
	}
	return promLabels{set: out}, problems
}

func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID != "modelgate" || d.Title != "modelgate" {
		t.Errorf("uid, title = %q, %q; want modelgate, modelgate", d.UID, d.Title)
	}
	if d.SchemaVersion < 39 || d.SchemaVersion > 41 {
		t.Errorf("schemaVersion = %d, want 39 to 41 (Grafana 10.4 to 11)", d.SchemaVersion)
	}
	if len(d.Tags) == 0 || d.Refresh != "30s" || d.Time.From != "now-1h" || d.Time.To != "now" {
		t.Errorf("tags %q, refresh %q, time %s to %s; want tags, 30s, now-1h to now", d.Tags, d.Refresh, d.Time.From, d.Time.To)
	}

	vars := map[string]grafanaVariable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			t.Errorf("variable %s is defined twice", v.Name)
		}
		vars[v.Name] = v
		if v.Type == "query" && (v.Datasource == nil || *v.Datasource != dashboardDatasource) {
			t.Errorf("variable %s: datasource %v, want %v", v.Name, v.Datasource, dashboardDatasource)
		}
	}
	if ds := vars["datasource"]; ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		t.Errorf("variable datasource: type %q query %s, want a datasource variable of query prometheus", ds.Type, ds.Query)
	}
	for _, name := range []string{"instance", "route", "upstream"} {
		if v := vars[name]; v.Type != "query" || !v.Multi || !v.IncludeAll {
			t.Errorf("variable %s: type %q multi %v includeAll %v, want a multi-value query variable with All", name, v.Type, v.Multi, v.IncludeAll)
		}
	}
	if q, _ := vars["instance"].query(); q != "label_values(modelgate_build_info, instance)" {
		t.Errorf("variable instance: query %q, want label_values(modelgate_build_info, instance)", q)
	}
	if len(d.Templating.List) < 2 || d.Templating.List[1].Name != "instance" {
		t.Error("variable instance is not the first after datasource, so the others cannot follow it")
	}
	// Every query, the variables' too, follows the chosen instances.
	for _, x := range d.exprs(t) {
		if x.where == "variable instance" {
			continue
		}
		refs, err := lexPromQL(x.expr)
		if err != nil {
			continue // TestDashboardNamesExportedMetricsAndLabels reports it
		}
		for _, sel := range refs.selectors {
			if !slices.Contains(sel.matchers, promMatcher{"instance", "=~", "$instance"}) {
				t.Errorf("%s: %s is not filtered by instance=~\"$instance\": %s", x.where, sel.metric, x.expr)
			}
		}
	}

	ids := map[int]string{}
	units := []string{"reqps", "ops", "s", "percentunit", "short"}
	varRef := regexp.MustCompile(`\$\{?(\w+)`)
	for _, p := range d.allPanels() {
		name := fmt.Sprintf("panel %q", p.Title)
		switch {
		case p.Title == "":
			t.Errorf("a %s panel has no title", p.Type)
		case p.ID == nil || *p.ID <= 0:
			t.Errorf("%s has no id", name)
		case ids[*p.ID] != "":
			t.Errorf("%s has id %d, as has panel %q", name, *p.ID, ids[*p.ID])
		default:
			ids[*p.ID] = p.Title
		}
		if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v, want one inside the 24 columns", name, g)
		}
		if p.Datasource == nil || *p.Datasource != dashboardDatasource {
			t.Errorf("%s: datasource %v, want %v", name, p.Datasource, dashboardDatasource)
		}
		if p.Type == "row" {
			if len(p.Targets) != 0 {
				t.Errorf("row %q has targets", p.Title)
			}
			continue
		}
		if len(p.Panels) != 0 {
			t.Errorf("%s is not a row but has panels", name)
		}
		if !slices.Contains(units, p.FieldConfig.Defaults.Unit) {
			t.Errorf("%s: unit %q, want one of %q", name, p.FieldConfig.Defaults.Unit, units)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s has no targets", name)
		}
		refIDs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.RefID == "" || refIDs[tg.RefID] {
				t.Errorf("%s: refId %q is empty or repeated", name, tg.RefID)
			}
			refIDs[tg.RefID] = true
			if tg.Datasource == nil || *tg.Datasource != dashboardDatasource {
				t.Errorf("%s target %s: datasource %v, want %v", name, tg.RefID, tg.Datasource, dashboardDatasource)
			}
			for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
				if _, ok := vars[m[1]]; !ok && !strings.HasPrefix(m[1], "__") {
					t.Errorf("%s target %s uses $%s, which the dashboard does not define", name, tg.RefID, m[1])
				}
			}
			if strings.Contains(tg.Expr, "rate(") && !strings.Contains(tg.Expr, "$__rate_interval") {
				t.Errorf("%s target %s: a rate() without $__rate_interval: %s", name, tg.RefID, tg.Expr)
			}
		}
		checkPanelSemantics(t, name, p)
	}
}

// Gauges that are 1 when healthy: across replicas the worst is the min.
var healthGauges = map[string]bool{
	"modelgate_backend_available": true, "modelgate_upstream_credential_valid": true, "modelgate_identity_provider_ready": true,
}

// Counters of requests (or answers), which reqps describes; other rates
// (fetches, probes, store calls, tokens) are not requests.
var requestCounters = map[string]bool{
	"modelgate_requests_total": true, "modelgate_request_errors_total": true, "modelgate_denied_total": true,
	"modelgate_rate_limited_total": true, "modelgate_backend_requests_total": true, "modelgate_backend_retries_total": true,
	"modelgate_token_usage_missing_total": true,
}

// checkPanelSemantics holds a panel to what its queries mean: health
// gauges aggregate with min, reqps only for requests, request_errors_total
// is not all refusals, a rate and a gauge do not share an axis, thresholds
// show, a value mapping names every value.
func checkPanelSemantics(t *testing.T, name string, p grafanaPanel) {
	t.Helper()
	var rates, gauges []string // refIds
	for _, tg := range p.Targets {
		tree, err := parsePromQL(tg.Expr)
		if err != nil {
			continue // reported elsewhere
		}
		tree.walk(func(n *promNode) {
			if n.kind != promAgg || n.name == "min" {
				return
			}
			n.walk(func(in *promNode) {
				if in.kind == promSel && healthGauges[in.sel.metric] {
					t.Errorf("%s target %s: %s of %s hides a replica where it is 0; use min", name, tg.RefID, n.name, in.sel.metric)
				}
			})
		})
		names, _ := promQLNames(tg.Expr)
		for _, m := range names {
			if p.FieldConfig.Defaults.Unit == "reqps" && !requestCounters[m] {
				t.Errorf("%s: unit reqps over %s, which does not count requests", name, m)
			}
			if m == "modelgate_request_errors_total" && strings.Contains(strings.ToLower(p.Title), "refusal") {
				t.Errorf("%s: request_errors_total counts upstream failures and closed requests too, not only refusals", name)
			}
		}
		if strings.Contains(tg.Expr, "rate(") || strings.Contains(tg.Expr, "increase(") {
			rates = append(rates, tg.RefID)
		} else {
			gauges = append(gauges, tg.RefID)
		}
	}
	if p.Type == "timeseries" && len(rates) > 0 && len(gauges) > 0 {
		for _, ref := range gauges {
			ok := slices.ContainsFunc(p.FieldConfig.Overrides, func(o grafanaOverride) bool {
				return o.Matcher.ID == "byFrameRefID" && o.Matcher.Options == ref && slices.ContainsFunc(o.Properties, func(pr grafanaProperty) bool {
					return pr.ID == "custom.axisPlacement" && string(pr.Value) == `"right"`
				})
			})
			if !ok {
				t.Errorf("%s: target %s is a gauge beside rates %v on one axis; give it an override with custom.axisPlacement right", name, ref, rates)
			}
		}
	}
	if p.Type == "timeseries" && len(p.FieldConfig.Defaults.Thresholds.Steps) > 1 {
		if m := p.FieldConfig.Defaults.Custom.ThresholdsStyle.Mode; m == "" || m == "off" {
			t.Errorf("%s: thresholds that never show (thresholdsStyle %q)", name, m)
		}
	}
	if p.Title == "Breaker state" {
		var mapped []string
		for _, m := range p.FieldConfig.Defaults.Mappings {
			if m.Type == "value" {
				mapped = slices.AppendSeq(mapped, maps.Keys(m.Options))
			}
		}
		slices.Sort(mapped)
		if !slices.Equal(mapped, []string{"0", "1", "2"}) {
			t.Errorf("%s: value mappings for %q, want exactly 0, 1 and 2 (closed, half-open, open)", name, mapped)
		}
		for _, tg := range p.Targets {
			if tree, err := parsePromQL(tg.Expr); err == nil && (tree.kind != promAgg || tree.name != "max" || tree.vectorArg().kind != promBinary) {
				t.Errorf("%s target %s: want the worst (max) across replicas of each replica's 0, 1 or 2: %s", name, tg.RefID, tg.Expr)
			}
		}
	}
}

func TestDashboardNamesExportedMetricsAndLabels(t *testing.T) {
	d := loadDashboard(t)
	exported := gatewayExports(t)
	exprs := d.exprs(t)
	if len(exprs) < 30 {
		t.Fatalf("only %d expressions in the dashboard", len(exprs))
	}
	used := map[string]bool{}
	for _, x := range exprs {
		for _, p := range exported.check(x.expr) {
			t.Errorf("%s: %s\n\t%s", x.where, p, x.expr)
		}
		names, _ := promQLNames(x.expr)
		for _, n := range names {
			used[n] = true
		}
	}

	// Every metric of the gateway's own has a panel: a new metric without
	// one fails here.
	for name := range exported {
		if !strings.HasPrefix(name, namespace+"_") || used[name] {
			continue
		}
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, "_bucket"), "_sum"), "_count")
		if used[base+"_bucket"] || used[base+"_sum"] || used[base+"_count"] {
			continue
		}
		t.Errorf("no panel shows %s", name)
	}
}

// TestDashboardCheckerCatchesMistakes proves the checker above fails on
// the mistakes it is there for.
func TestDashboardCheckerCatchesMistakes(t *testing.T) {
	exported := gatewayExports(t)
	tests := []struct{ name, expr, want string }{
		{"misspelt metric", `rate(modelgate_request_total[5m])`, "metric modelgate_request_total is not exported"},
		{"misspelt matcher label", `rate(modelgate_requests_total{rout=~"$route"}[5m])`, `modelgate_requests_total has no label "rout"`},
		{"label of another metric", `modelgate_backend_available{route="r"}`, `modelgate_backend_available has no label "route"`},
		{"misspelt by label", `sum by (rout) (rate(modelgate_requests_total[5m]))`, `grouping label "rout"`},
		{"le on a histogram's _sum", `sum by (le) (rate(modelgate_gateway_duration_seconds_sum[5m]))`, `grouping label "le"`},
		{"misspelt on label", `modelgate_backend_available * on(upstream, backnd) modelgate_backend_breaker_state`, `grouping label "backnd"`},
		{"histogram without _bucket", `histogram_quantile(0.99, sum by (le) (rate(modelgate_upstream_duration_seconds[5m])))`, "modelgate_upstream_duration_seconds is not exported"},
		{"empty", ``, "cannot lex: empty expression"},
		{"unlexable", `rate(modelgate_requests_total[5m]`, "cannot lex"},
		{"no metric", `vector(1)`, "names no metric"},
		{"regex name", `{__name__=~"modelgate_.+"}`, "names no single metric"},
		{"quantile without le", `histogram_quantile(0.99, sum by (route) (rate(modelgate_gateway_duration_seconds_bucket[5m])))`, "not an aggregation by le"},
		{"quantile over no aggregation", `histogram_quantile(0.99, rate(modelgate_gateway_duration_seconds_bucket[5m]))`, "not an aggregation by le"},
		{"quantile over an aggregation dropping le", `histogram_quantile(0.99, sum by (le) (max by (route) (modelgate_gateway_duration_seconds_bucket)))`, "drops le"},
		{"rate of a gauge", `rate(modelgate_mirror_in_flight[5m])`, "rate over modelgate_mirror_in_flight, which is not a counter"},
		{"increase of a gauge", `sum(increase(modelgate_backend_available[1h]))`, "increase over modelgate_backend_available"},
		{"status class that is not exported", `sum(rate(modelgate_requests_total{code="500"}[5m]))`, `never has code "500"`},
		{"error code that is not exported", `modelgate_request_errors_total{code!="ratelimited"}`, `never has code "ratelimited"`},
		{"alternative that is not exported", `modelgate_backend_breaker_state{state=~"open|halfopen"}`, `never has state "halfopen"`},
		{"outcome of another metric", `modelgate_backend_requests_total{outcome="success"}`, `never has outcome "success"`},
		{"by label one side lacks", `sum by (auth) (modelgate_requests_total + modelgate_rate_limited_total)`, `by label "auth" is not on every series`},
		{"by label an inner aggregation dropped", `sum by (code) (sum by (route) (rate(modelgate_requests_total[5m])))`, `by label "code" is not on every series`},
		{"on label one side lacks", `modelgate_backend_available * on(upstream, backend) modelgate_mirror_in_flight`, `on label "backend" of * is not on its right side`},
		{"group_left label the other side lacks", `modelgate_backend_available * on(upstream) group_left(backend) modelgate_mirror_in_flight`, `group_left label "backend" is not on the other side`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			problems := exported.check(tt.expr)
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("check(%q) = %q, want a problem containing %q", tt.expr, problems, tt.want)
			}
		})
	}
	for _, ok := range []string{
		`histogram_quantile(0.99, sum by (le, route) (rate(modelgate_gateway_duration_seconds_bucket{route=~"$route"}[$__rate_interval])))`,
		`histogram_quantile(0.5, sum without (instance) (rate(modelgate_gateway_duration_seconds_bucket{instance=~"$instance"}[5m])))`,
		`max by (backend) (modelgate_backend_available * on(upstream) group_left modelgate_mirror_in_flight)`,
		`sum by (upstream) (rate(modelgate_mirror_dropped_total[5m])) / on(upstream) sum by (upstream) (modelgate_mirror_in_flight)`,
		`modelgate_backend_breaker_state{state=~"open|half-open", upstream!~".+"} == 1`,
		`sum by (code) (rate(modelgate_request_errors_total{code=~"$code|rate_limited"}[5m])) > 0`,
		`topk by (route) (3, sum by (route, code) (rate(modelgate_requests_total{code="5xx"}[5m])))`,
		`max by (version, goversion) (modelgate_build_info)`,
		`sum by (code) (rate(modelgate_request_errors_total{route="r", code="rate_limited"}[5m]))`,
		`rate(go_gc_duration_seconds_sum[5m]) / rate(go_gc_duration_seconds_count[5m])`,
		`go_gc_duration_seconds{quantile="0.5"}`,
	} {
		if problems := exported.check(ok); len(problems) != 0 {
			t.Errorf("check(%q) = %q, want none", ok, problems)
		}
	}
}

func TestVariableExpr(t *testing.T) {
	tests := []struct{ query, want string }{
		{"label_values(modelgate_requests_total, route)", "max by (route) (modelgate_requests_total)"},
		{`label_values(modelgate_requests_total{code="5xx"},route)`, `max by (route) (modelgate_requests_total{code="5xx"})`},
		{"query_result(topk(5, x))", "topk(5, x)"},
		{"label_values(route)", ""},
		{"metrics(modelgate_.*)", ""},
	}
	for _, tt := range tests {
		got, err := variableExpr(tt.query)
		if got != tt.want || (err != nil) != (tt.want == "") {
			t.Errorf("variableExpr(%q) = %q, %v; want %q", tt.query, got, err, tt.want)
		}
	}
}
