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
)

// reasonField is the action form's field that carries the reason.
const reasonField = "Reason"

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
	// impersonated.
	Never map[string][]string
	// MinReason is the minimum reason length, in characters.
	MinReason int
	// Rate is the number of impersonations per admin per period.
	Rate config.Rate
}

// DefaultPolicy is the policy without a file: any authenticated admin,
// collection users, a reason of at least 8 characters, 30 per admin per
// hour.
func DefaultPolicy() *Policy {
	return &Policy{
		Collections: []string{"users"},
		MinReason:   8,
		Rate:        config.Rate{N: 30, Per: time.Hour},
	}
}

// policyFile is the file format (YAML, or JSON which YAML reads too).
type policyFile struct {
	Admins struct {
		Emails           []string `yaml:"emails"`
		Teams            []string `yaml:"teams"`
		Roles            []string `yaml:"roles"`
		PermissionLevels []string `yaml:"permission_levels"`
	} `yaml:"admins"`
	Collections     []string            `yaml:"collections"`
	Never           map[string][]string `yaml:"never"`
	MinReasonLength *int                `yaml:"min_reason_length"`
	Rate            *string             `yaml:"rate"`
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
	p.Emails = lower(f.Admins.Emails)
	p.Teams, p.Roles, p.PermissionLevels = f.Admins.Teams, f.Admins.Roles, f.Admins.PermissionLevels
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
	// never lists hold canonical ids only, so "01" or " 1" in the file
	// cannot hide what it means, and a spelling of the id in a request
	// cannot slip past it (requests are canonicalised the same way).
	p.Never = make(map[string][]string, len(f.Never))
	for c, ids := range f.Never {
		if !slices.Contains(p.Collections, c) {
			problems = append(problems, fmt.Errorf("never: collection %q is not in collections", c))
		}
		for _, id := range ids {
			cid, err := ident.Parse(id)
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
)

// check applies the policy's rules to admin and target; it returns the rule
// that refuses, with a detail for the audit log, or "" when allowed. The
// reason's length is checked separately (an action-level 400).
func (p *Policy) check(a Admin, t target) (rule, detail string) {
	switch {
	case len(p.Emails) > 0 && !slices.Contains(p.Emails, strings.ToLower(a.Email)):
		return ruleAdmin, fmt.Sprintf("admin email %q is not in admins.emails", a.Email)
	case len(p.Teams) > 0 && !slices.Contains(p.Teams, a.Team):
		return ruleAdmin, fmt.Sprintf("admin team %q is not in admins.teams", a.Team)
	case len(p.Roles) > 0 && !slices.Contains(p.Roles, a.Role):
		return ruleAdmin, fmt.Sprintf("admin role %q is not in admins.roles", a.Role)
	case len(p.PermissionLevels) > 0 && !slices.Contains(p.PermissionLevels, a.PermissionLevel):
		return ruleAdmin, fmt.Sprintf("admin permission level %q is not in admins.permission_levels", a.PermissionLevel)
	case !slices.Contains(p.Collections, t.Collection):
		return ruleCollection, fmt.Sprintf("collection %q is not in collections", t.Collection)
	case slices.Contains(p.Never[t.Collection], t.ID):
		return ruleNever, fmt.Sprintf("%s %s is listed in never", t.Collection, t.ID)
	case slices.Contains(p.Never[t.Collection], leadingInteger(t.ID)):
		return ruleNever, fmt.Sprintf("%s %s reads as %s (Rails' to_i, JavaScript's parseInt), which is listed in never", t.Collection, t.ID, leadingInteger(t.ID))
	}
	return "", ""
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
