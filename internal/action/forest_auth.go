// Package action serves the Forest Admin "Impersonate" smart action: it
// authenticates the admin, applies the policy, mints a single-use
// impersonation token and answers in Forest's webhook format.
package action

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/safetext"
	"github.com/impersonator/impersonator/internal/token"
)

// Admin is the Forest user who triggers the action, from the Forest UI's
// bearer JWT.
type Admin struct {
	ID              string
	Email           string
	FirstName       string
	LastName        string
	Team            string
	Role            string
	PermissionLevel string
	RenderingID     string
}

// maxNameBytes caps the admin's name kept in grants, sessions and events.
const maxNameBytes = 200

// Name is the admin's first and last name, as the history shows it.
func (a Admin) Name() string {
	return safetext.Truncate(strings.TrimSpace(strings.TrimSpace(a.FirstName)+" "+strings.TrimSpace(a.LastName)), maxNameBytes)
}

// Authenticator checks the Forest UI's bearer JWT: HS256 only, signed with
// FOREST_AUTH_SECRET, exp required.
type Authenticator struct {
	secret []byte
	now    func() time.Time
	// verified remembers JWTs that verified, keyed by their SHA-256, until
	// their exp: the Forest UI sends the same JWT with every action of a
	// session, and parsing it was a third of a mint's allocations.
	mu       sync.Mutex
	verified map[[32]byte]verifiedAdmin
}

type verifiedAdmin struct {
	admin Admin
	exp   time.Time
}

// maxVerifiedAdmins bounds the cache; when full it is emptied.
const maxVerifiedAdmins = 10000

// NewAuthenticator returns an authenticator for secret; an empty secret
// authenticates nobody.
func NewAuthenticator(secret string, now func() time.Time) *Authenticator {
	return &Authenticator{secret: []byte(secret), now: now, verified: map[[32]byte]verifiedAdmin{}}
}

// errNotConfigured: FOREST_AUTH_SECRET is unset.
var errNotConfigured = errors.New("FOREST_AUTH_SECRET is not set")

// maxAdminJWT bounds what is parsed at all.
const maxAdminJWT = 8 << 10

// Authenticate returns the admin of r's "Authorization: Bearer" JWT. The
// error says why for the log; clients only ever see a generic message.
func (a *Authenticator) Authenticate(r *http.Request) (Admin, error) {
	if len(a.secret) == 0 {
		return Admin{}, errNotConfigured
	}
	scheme, raw, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || raw == "" {
		return Admin{}, errors.New("no bearer token")
	}
	if len(raw) > maxAdminJWT {
		return Admin{}, errors.New("bearer token too large")
	}
	if err := token.CheckCompact(raw); err != nil {
		return Admin{}, fmt.Errorf("forest jwt: malformed: %w", err)
	}
	key := sha256.Sum256([]byte(raw))
	a.mu.Lock()
	v, ok := a.verified[key]
	a.mu.Unlock()
	// exp with the parser's leeway: the same answer the parser would give.
	if ok && a.now().Before(v.exp.Add(5*time.Second)) {
		return v.admin, nil
	}
	claims := jwt.MapClaims{}
	_, err := jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(5*time.Second),
		jwt.WithStrictDecoding(),
		jwt.WithTimeFunc(a.now),
	).ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		return Admin{}, fmt.Errorf("forest jwt: %w", err)
	}
	admin := Admin{
		ID:              claimString(claims, "id"),
		Email:           claimString(claims, "email"),
		FirstName:       claimString(claims, "firstName", "first_name"),
		LastName:        claimString(claims, "lastName", "last_name"),
		Team:            claimString(claims, "team"),
		Role:            claimString(claims, "role"),
		PermissionLevel: claimString(claims, "permissionLevel", "permission_level"),
		RenderingID:     claimString(claims, "renderingId", "rendering_id"),
	}
	if admin.ID == "" || admin.Email == "" {
		return Admin{}, errors.New("forest jwt: missing id or email")
	}
	if exp, err := claims.GetExpirationTime(); err == nil && exp != nil {
		a.mu.Lock()
		if len(a.verified) >= maxVerifiedAdmins {
			clear(a.verified)
		}
		a.verified[key] = verifiedAdmin{admin: admin, exp: exp.Time}
		a.mu.Unlock()
	}
	return admin, nil
}

// checkText refuses an admin whose Forest-signed values hold a control
// character or invalid UTF-8: the email and id travel on in the token, the
// session and the X-Impersonation-Actor header, where a NUL or CR LF could
// cut or forge a header. A refusal at mint (400), with the field to fix in
// Forest.
func (a Admin) checkText() error {
	for _, f := range []struct{ name, v string }{
		{"id", a.ID}, {"email", a.Email}, {"first name", a.FirstName}, {"last name", a.LastName},
		{"team", a.Team}, {"role", a.Role}, {"permission level", a.PermissionLevel},
	} {
		if httpx.HasControl(f.v) {
			return refuse("your Forest user's %s contains a control character or invalid UTF-8 (%s); fix it in Forest, then try again", f.name, strconv.QuoteToASCII(f.v))
		}
	}
	return nil
}

// claimString reads the first present of names as a string; Forest sends
// ids as numbers (Node) or strings (Ruby, Python), and team sometimes as an
// object with a name.
func claimString(c jwt.MapClaims, names ...string) string {
	for _, n := range names {
		v, ok := c[n]
		if !ok || v == nil {
			continue
		}
		return scalarString(v)
	}
	return ""
}

func scalarString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case map[string]any:
		if name, ok := x["name"].(string); ok {
			return name
		}
	}
	return ""
}
