package action

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/impersonator/impersonator/internal/config"
	"github.com/impersonator/impersonator/internal/ident"
	"github.com/impersonator/impersonator/internal/token"
)

// reasonField is the action form's field that carries the reason.
const reasonField = "Reason"

// accessField is the action form's field that chooses the scope, and its
// two choices.
const (
	accessField = "Access"
	accessRead  = "Read only"
	accessFull  = "Full access"
)

// accessScopes maps the Access field's choices to scopes.
var accessScopes = map[string]string{accessRead: token.ScopeRead, accessFull: token.ScopeFull}

// accessLabel is the Access choice of a scope.
func accessLabel(scope string) string {
	if scope == token.ScopeRead {
		return accessRead
	}
	return accessFull
}

// Policy says who may impersonate whom (DESIGN.md 3.5).
type Policy struct {
	// Admins who may impersonate. Every non-empty list must match (a list
	// matches when any of its entries does); all empty: any authenticated
	// admin.
	Emails           []string
	Teams            []string
	Roles            []string
	PermissionLevels []string
	// Collections that may be targeted.
	Collections []string
	// Never lists, per collection, the record ids that can never be
	// impersonated. An id matches an entry when their ident.Kind keys
	// are equal: another spelling of a listed record is refused too.
	Never map[string][]string
	// IDs declares, per collection, how the customer's database reads its
	// ids (policy key ids). A declared id is put in its kind's one
	// spelling before the policy and in the token; one that is not of
	// the kind is refused (400). Undeclared collections: ident.Undeclared.
	IDs map[string]ident.Kind
	// MinReason is the minimum reason length, in characters.
	MinReason int
	// Rate is the number of impersonations per admin per period.
	Rate config.Rate
	// DefaultAccess is the scope of a request that does not choose one:
	// token.ScopeFull (the default) or token.ScopeRead.
	DefaultAccess string
	// FullAccess, when set, is who may choose full access; anyone else is
	// refused it (rule full_access). Nil: every admin may.
	FullAccess *Selector
	// RequireConsent lists the collections whose records may be
	// impersonated only under the customer's active consent.
	RequireConsent []string
	// Reviewers, when set, is who may read a record's impersonation
	// history in the admin panel (the Impersonation history action). Nil:
	// whoever may impersonate (the admins lists).
	Reviewers *Selector
	// accessSet: the file names default_access or full_access, so the
	// action's form shows the Access field.
	accessSet bool
}

// Selector selects admins as the policy's admins list does: every non-empty
// list must match (a list matches when any of its entries does).
type Selector struct {
	Emails           []string
	Teams            []string
	Roles            []string
	PermissionLevels []string
}

// match reports whether a is selected; when not, it names the list that
// refused, prefixed by what (e.g. "admins").
func (s Selector) match(a Admin, what string) (bool, string) {
	switch {
	case len(s.Emails) > 0 && !slices.Contains(s.Emails, strings.ToLower(a.Email)):
		return false, fmt.Sprintf("admin email %q is not in %s.emails", a.Email, what)
	case len(s.Teams) > 0 && !slices.Contains(s.Teams, a.Team):
		return false, fmt.Sprintf("admin team %q is not in %s.teams", a.Team, what)
	case len(s.Roles) > 0 && !slices.Contains(s.Roles, a.Role):
		return false, fmt.Sprintf("admin role %q is not in %s.roles", a.Role, what)
	case len(s.PermissionLevels) > 0 && !slices.Contains(s.PermissionLevels, a.PermissionLevel):
		return false, fmt.Sprintf("admin permission level %q is not in %s.permission_levels", a.PermissionLevel, what)
	}
	return true, ""
}

// ShowsAccess reports whether the action's form offers the Access field:
// the policy names default_access or full_access. A policy that names
// neither keeps the form of before scopes (a Reason only); a request may
// still choose its Access.
func (p *Policy) ShowsAccess() bool { return p.accessSet || p.FullAccess != nil }

// defaultAccess is the scope of a request that chooses none.
func (p *Policy) defaultAccess() string {
	if p.DefaultAccess == token.ScopeRead {
		return token.ScopeRead
	}
	return token.ScopeFull
}

// requiresConsent reports whether collection's records need consent.
func (p *Policy) requiresConsent(collection string) bool {
	return slices.Contains(p.RequireConsent, collection)
}

// DefaultPolicy is the policy without a file: any authenticated admin,
// collection users, a reason of at least 8 characters, 30 per admin per
// hour.
func DefaultPolicy() *Policy {
	return &Policy{
		Collections:   []string{"users"},
		MinReason:     8,
		Rate:          config.Rate{N: 30, Per: time.Hour},
		DefaultAccess: token.ScopeFull,
	}
}

// policyFile is the file format (YAML, or JSON which YAML reads too).
type policyFile struct {
	Admins          selectorFile          `yaml:"admins"`
	Collections     []string              `yaml:"collections"`
	Never           map[string][]string   `yaml:"never"`
	IDs             map[string]idKindFile `yaml:"ids"`
	MinReasonLength *int                  `yaml:"min_reason_length"`
	Rate            *string               `yaml:"rate"`
	DefaultAccess   *string               `yaml:"default_access"`
	FullAccess      *selectorFile         `yaml:"full_access"`
	RequireConsent  []string              `yaml:"require_consent"`
	Reviewers       *selectorFile         `yaml:"reviewers"`
}

type selectorFile struct {
	Emails           []string `yaml:"emails"`
	Teams            []string `yaml:"teams"`
	Roles            []string `yaml:"roles"`
	PermissionLevels []string `yaml:"permission_levels"`
}

// idKindFile is one collection's entry under ids: a kind's name
// (integer, uuid, objectid, string), or {kind: string, case_sensitive:
// true} for strings the database compares with their case.
type idKindFile struct{ kind ident.Kind }

func (k *idKindFile) UnmarshalYAML(n *yaml.Node) error {
	var name string
	var caseSensitive bool
	if n.Kind == yaml.ScalarNode {
		name = n.Value
	} else {
		var m struct {
			Kind          string `yaml:"kind"`
			CaseSensitive bool   `yaml:"case_sensitive"`
		}
		for i := 0; n.Kind == yaml.MappingNode && i < len(n.Content); i += 2 {
			if key := n.Content[i].Value; key != "kind" && key != "case_sensitive" {
				return fmt.Errorf("line %d: unknown key %q in an id kind (kind, case_sensitive)", n.Content[i].Line, key)
			}
		}
		if err := n.Decode(&m); err != nil {
			return err
		}
		name, caseSensitive = m.Kind, m.CaseSensitive
	}
	switch {
	case caseSensitive && name == string(ident.String):
		k.kind = ident.StringCaseSensitive
	case caseSensitive:
		return fmt.Errorf("case_sensitive applies to kind string only, not %q", name)
	case name == string(ident.Integer), name == string(ident.UUID), name == string(ident.ObjectID), name == string(ident.String):
		k.kind = ident.Kind(name)
	default:
		return fmt.Errorf("id kind %q is not integer, uuid, objectid, string or {kind: string, case_sensitive: true}", name)
	}
	return nil
}

func (f selectorFile) selector() Selector {
	return Selector{Emails: lower(f.Emails), Teams: f.Teams, Roles: f.Roles, PermissionLevels: f.PermissionLevels}
}

// LoadPolicy reads a policy file; an empty path gives DefaultPolicy. Unknown
// keys are errors, and so is every value that does not make sense; the
// error lists every problem.
func LoadPolicy(path string) (*Policy, error) {
	if path == "" {
		return DefaultPolicy(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := ParsePolicy(b)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// ParsePolicy parses a policy document (YAML or JSON).
func ParsePolicy(b []byte) (*Policy, error) {
	var f policyFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	var problems []error
	p := DefaultPolicy()
	admins := f.Admins.selector()
	p.Emails, p.Teams, p.Roles, p.PermissionLevels = admins.Emails, admins.Teams, admins.Roles, admins.PermissionLevels
	if f.Collections != nil {
		p.Collections = f.Collections
	}
	if len(p.Collections) == 0 {
		problems = append(problems, errors.New("collections: at least one collection is needed"))
	}
	for _, c := range p.Collections {
		if strings.TrimSpace(c) == "" {
			problems = append(problems, errors.New("collections: empty name"))
		}
	}
	p.IDs = make(map[string]ident.Kind, len(f.IDs))
	for c, k := range f.IDs {
		if !slices.Contains(p.Collections, c) {
			problems = append(problems, fmt.Errorf("ids: collection %q is not in collections", c))
		}
		p.IDs[c] = k.kind
	}
	// never lists hold canonical ids only, so "01" or " 1" in the file
	// cannot hide what it means, and a spelling of the id in a request
	// cannot slip past it (requests are canonicalised the same way, and
	// compared by their kind's key).
	p.Never = make(map[string][]string, len(f.Never))
	for c, ids := range f.Never {
		if !slices.Contains(p.Collections, c) {
			problems = append(problems, fmt.Errorf("never: collection %q is not in collections", c))
		}
		for _, id := range ids {
			cid, err := p.IDs[c].Parse(id)
			if err != nil {
				problems = append(problems, fmt.Errorf("never.%s: %w", c, err))
				continue
			}
			p.Never[c] = append(p.Never[c], cid)
		}
	}
	if f.MinReasonLength != nil {
		p.MinReason = *f.MinReasonLength
		if p.MinReason < 1 || p.MinReason > 500 {
			problems = append(problems, fmt.Errorf("min_reason_length: %d is outside [1, 500]: a reason is always required", p.MinReason))
		}
	}
	if f.Rate != nil {
		r, err := config.ParseRate(*f.Rate)
		if err != nil {
			problems = append(problems, fmt.Errorf("rate: %w", err))
		}
		p.Rate = r
	}
	if f.DefaultAccess != nil {
		p.accessSet = true
		switch *f.DefaultAccess {
		case "read":
			p.DefaultAccess = token.ScopeRead
		case "full":
			p.DefaultAccess = token.ScopeFull
		default:
			problems = append(problems, fmt.Errorf("default_access: %q is neither read nor full", *f.DefaultAccess))
		}
	}
	if f.FullAccess != nil {
		sel := f.FullAccess.selector()
		p.FullAccess = &sel
		if len(sel.Emails)+len(sel.Teams)+len(sel.Roles)+len(sel.PermissionLevels) == 0 {
			problems = append(problems, errors.New("full_access: name at least one of emails, teams, roles, permission_levels (leave full_access out to let every admin choose full access)"))
		}
	}
	for _, c := range f.RequireConsent {
		if !slices.Contains(p.Collections, c) {
			problems = append(problems, fmt.Errorf("require_consent: collection %q is not in collections", c))
		}
	}
	p.RequireConsent = f.RequireConsent
	if f.Reviewers != nil {
		sel := f.Reviewers.selector()
		p.Reviewers = &sel
		if len(sel.Emails)+len(sel.Teams)+len(sel.Roles)+len(sel.PermissionLevels) == 0 {
			problems = append(problems, errors.New("reviewers: name at least one of emails, teams, roles, permission_levels (leave reviewers out to let whoever may impersonate review)"))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return p, nil
}

func lower(s []string) []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = strings.ToLower(strings.TrimSpace(v))
	}
	return out
}

// Rules a refusal names in its audit event.
const (
	ruleAdmin      = "admins"
	ruleCollection = "collections"
	ruleNever      = "never"
	ruleRate       = "rate"
	ruleApproval   = "approval"
	ruleFullAccess = "full_access"
	ruleConsent    = "consent"
	ruleReviewers  = "reviewers"
)

// mayReview reports whether a may read impersonation histories: the
// reviewers lists when the policy names them, else the admins lists; when
// not, it names the list that refused.
func (p *Policy) mayReview(a Admin) (bool, string) {
	if p.Reviewers != nil {
		return p.Reviewers.match(a, "reviewers")
	}
	admins := Selector{Emails: p.Emails, Teams: p.Teams, Roles: p.Roles, PermissionLevels: p.PermissionLevels}
	return admins.match(a, "admins")
}

// check applies the policy's rules to admin and target; it returns the rule
// that refuses, with a detail for the audit log, or "" when allowed. The
// reason's length is checked separately (an action-level 400).
func (p *Policy) check(a Admin, t target) (rule, detail string) {
	admins := Selector{Emails: p.Emails, Teams: p.Teams, Roles: p.Roles, PermissionLevels: p.PermissionLevels}
	if ok, detail := admins.match(a, "admins"); !ok {
		return ruleAdmin, detail
	}
	switch {
	case !slices.Contains(p.Collections, t.Collection):
		return ruleCollection, fmt.Sprintf("collection %q is not in collections", t.Collection)
	}
	if listed := p.listedAs(t.Collection, t.ID); listed != "" {
		if listed == t.ID {
			return ruleNever, fmt.Sprintf("%s %s is listed in never", t.Collection, t.ID)
		}
		return ruleNever, fmt.Sprintf("%s %s is another spelling of %s, which is listed in never", t.Collection, t.ID, listed)
	}
	if n := leadingInteger(t.ID); n != "" && slices.Contains(p.Never[t.Collection], n) {
		return ruleNever, fmt.Sprintf("%s %s reads as %s (Rails' to_i, JavaScript's parseInt), which is listed in never", t.Collection, t.ID, n)
	}
	if t.Scope != token.ScopeRead && p.FullAccess != nil {
		if ok, detail := p.FullAccess.match(a, "full_access"); !ok {
			return ruleFullAccess, detail + ": full access refused"
		}
	}
	return "", ""
}

// listedAs returns the never entry of collection that id is a spelling
// of (their kind's keys are equal), or "".
func (p *Policy) listedAs(collection, id string) string {
	kind := p.IDs[collection]
	key := kind.Key(id)
	for _, n := range p.Never[collection] {
		if kind.Key(n) == key {
			return n
		}
	}
	return ""
}

// leadingInteger is the integer an app reads from the start of id ("1" of
// "1-slug" or "1abc", as Rails' to_i and JavaScript's parseInt do), or ""
// when id is not a longer string that starts with one.
func leadingInteger(id string) string {
	n := 0
	if strings.HasPrefix(id, "-") {
		n = 1
	}
	start := n
	for n < len(id) && id[n] >= '0' && id[n] <= '9' {
		n++
	}
	if n == start || n == len(id) {
		return ""
	}
	return id[:n]
}
