package idp

import (
	"errors"
	"fmt"
	"github.com/modelgate/modelgate/internal/guid"
	"slices"
	"strings"
)

// Match constrains one claim. AnyOf holds when the token carries at least
// one of its values; AllOf when it carries every one. When both are set,
// both must hold. A zero Match constrains nothing.
type Match struct {
	AnyOf []string
	AllOf []string
}

// IsZero reports whether m constrains nothing.
func (m Match) IsZero() bool { return len(m.AnyOf) == 0 && len(m.AllOf) == 0 }

// RuleSpec is one allow entry's claim constraints. All non-zero Matches must
// hold (AND); the route policy ORs entries. A zero RuleSpec admits every
// token its provider verifies.
//
//   - Roles match the roles claim (app roles, for users and applications).
//   - Scopes match the space-separated scp claim (delegated permissions).
//   - Groups match the groups claim (group object ids). A token with a
//     groups overage has unknown groups: a Groups constraint it does not
//     visibly satisfy is denied with ReasonGroupsUnknown.
//   - Users match oid, the principal's object id (a GUID). Names such as upn
//     or preferred_username are never matched: they can be reassigned and,
//     for guests, chosen by another tenant.
//   - Apps match the calling client: appid (v1 tokens) or azp (v2).
//   - Tenants match tid (GUIDs).
//
// GUIDs compare case-insensitively; other values exactly.
type RuleSpec struct {
	Roles, Scopes, Groups, Users, Apps, Tenants Match
}

// Rule is a compiled RuleSpec: immutable and safe for concurrent use.
type Rule struct {
	checks []check
}

type claimKind int

const (
	kindTenants claimKind = iota
	kindApps
	kindUsers
	kindRoles
	kindScopes
	kindGroups
)

// check is one compiled Match, with its denial precomputed.
type check struct {
	kind   claimKind
	any    map[string]struct{}
	all    []string
	reason Reason
	detail string // when the constraint fails
}

// CompileRule validates spec and compiles it. Every problem is reported,
// each naming its field (roles, scopes, groups, users, apps, tenants;
// any_of, all_of).
func CompileRule(spec RuleSpec) (*Rule, error) {
	r := &Rule{}
	var errs []error
	add := func(kind claimKind, field string, m Match) {
		if m.IsZero() {
			return
		}
		c := check{kind: kind}
		for _, part := range []struct {
			name string
			vals []string
		}{{"any_of", m.AnyOf}, {"all_of", m.AllOf}} {
			for i, v := range part.vals {
				if err := checkValue(kind, v); err != nil {
					errs = append(errs, fmt.Errorf("%s.%s[%d]: %w", field, part.name, i, err))
				}
			}
		}
		// Identifiers that Verify canonicalizes are canonicalized here too;
		// role and scope names are case-sensitive.
		canon := func(v string) string { return v }
		if kind != kindRoles && kind != kindScopes {
			canon = canonicalID
		}
		if len(m.AnyOf) > 0 {
			c.any = make(map[string]struct{}, len(m.AnyOf))
			for _, v := range m.AnyOf {
				c.any[canon(v)] = struct{}{}
			}
		}
		for _, v := range m.AllOf {
			if v = canon(v); !slices.Contains(c.all, v) {
				c.all = append(c.all, v)
			}
		}
		single := kind == kindUsers || kind == kindApps || kind == kindTenants
		if single && len(c.all) > 1 {
			errs = append(errs, fmt.Errorf("%s.all_of: lists %d different values, but a token carries only one: use any_of", field, len(c.all)))
		}
		c.reason, c.detail = denial(kind, m)
		r.checks = append(r.checks, c)
	}
	// Evaluation order, and so the reported reason when several fail:
	// who the caller is before what it may do.
	add(kindTenants, "tenants", spec.Tenants)
	add(kindApps, "apps", spec.Apps)
	add(kindUsers, "users", spec.Users)
	add(kindRoles, "roles", spec.Roles)
	add(kindScopes, "scopes", spec.Scopes)
	add(kindGroups, "groups", spec.Groups)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return r, nil
}

func checkValue(kind claimKind, v string) error {
	switch {
	case v == "":
		return errors.New("empty value")
	case strings.ContainsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == '\n' || r == '\r' }):
		return fmt.Errorf("%q contains white space; list each value separately", v)
	}
	switch kind {
	case kindUsers:
		if strings.Contains(v, "@") {
			return fmt.Errorf("%q looks like a user principal name: users are matched by object id (oid), a GUID, never by upn", v)
		}
		if !guid.Valid(v) {
			return fmt.Errorf("%q is not an object id (GUID)", v)
		}
	case kindTenants:
		if !guid.Valid(v) {
			return fmt.Errorf("%q is not a tenant id (GUID)", v)
		}
	}
	return nil
}

// denial precomputes a constraint's reason and client-safe detail. Role and
// scope names are listed (the client must know what to request); the ids of
// allowed users, apps, tenants and groups are not.
func denial(kind claimKind, m Match) (Reason, string) {
	list := func(what string) string {
		var parts []string
		if len(m.AnyOf) > 0 {
			parts = append(parts, "one of: "+strings.Join(m.AnyOf, ", "))
		}
		if len(m.AllOf) > 0 {
			parts = append(parts, "all of: "+strings.Join(m.AllOf, ", "))
		}
		return what + " (" + strings.Join(parts, "; and ") + ")"
	}
	switch kind {
	case kindRoles:
		return ReasonMissingRole, list("token lacks a required app role")
	case kindScopes:
		return ReasonMissingScope, list("token lacks a required scope")
	case kindGroups:
		return ReasonNotInGroup, "caller is not a member of the groups this route requires"
	case kindUsers:
		return ReasonUserNotAllowed, "caller (oid) is not allowed on this route"
	case kindApps:
		return ReasonAppNotAllowed, "calling application (appid/azp) is not allowed on this route"
	default:
		return ReasonTenantNotAllowed, "caller's tenant is not allowed on this route"
	}
}

// detailGroupsUnknown explains a groups overage denial and what to change.
const detailGroupsUnknown = "groups are unknown: the token carries a group overage claim (_claim_names.groups) instead of the caller's groups; " +
	"assign app roles to the groups and require roles instead, or limit the token's groups (groupMembershipClaims: ApplicationGroup)"

// Evaluate reports whether c satisfies the rule, and if not, the reason and
// a client-safe detail of the first constraint that fails (tenants, apps,
// users, roles, scopes, groups, in that order). It does not allocate.
func (r *Rule) Evaluate(c *Claims) (ok bool, reason Reason, detail string) {
	if c == nil {
		return false, ReasonTokenMalformed, detailEmpty
	}
	for i := range r.checks {
		ch := &r.checks[i]
		var pass bool
		switch ch.kind {
		case kindTenants:
			pass = ch.matchOne(c.TenantID)
		case kindApps:
			pass = ch.matchOne(c.AppID)
		case kindUsers:
			pass = ch.matchOne(c.ObjectID)
		case kindRoles:
			pass = ch.matchMany(c.Roles)
		case kindScopes:
			pass = ch.matchMany(c.Scopes)
		case kindGroups:
			pass = ch.matchMany(c.Groups)
			if !pass && c.GroupsOverage {
				return false, ReasonGroupsUnknown, detailGroupsUnknown
			}
		}
		if !pass {
			return false, ch.reason, ch.detail
		}
	}
	return true, "", ""
}

func (ch *check) matchOne(v string) bool { return v != "" && ch.matchMany([]string{v}) }

func (ch *check) matchMany(vals []string) bool {
	if ch.any != nil && !slices.ContainsFunc(vals, func(v string) bool { _, ok := ch.any[v]; return ok }) {
		return false
	}
	for _, want := range ch.all {
		if !slices.Contains(vals, want) {
			return false
		}
	}
	return true
}
