package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	iofs "io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/impersonator/impersonator/internal/app"
	"github.com/impersonator/impersonator/internal/config"
)

const devUsage = `Usage: impersonator dev forest-jwt --email E [--id N] [--team T] [--role R]
                                  [--permission-level L] [--ttl D]

Development helpers; nothing here is needed in production.

  forest-jwt  print a JWT like the one the Forest UI sends to the Impersonate
              action (HS256, signed with FOREST_AUTH_SECRET from the
              environment, else with the development secret serve keeps
              in the keys folder, IMPERSONATOR_KEYS_DIR or keys, when it
              runs on the embedded Redis), to call the action by hand:
              TOKEN=$(impersonator dev forest-jwt --email ada@example.com)
              Only the JWT is printed on stdout.
`

// Bounds of dev forest-jwt --ttl.
const (
	defaultDevJWTTTL = time.Hour
	maxDevJWTTTL     = 24 * time.Hour
)

func runDev(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	return devCommand(args, getenv, time.Now, stdout, stderr)
}

// devCommand is `impersonator dev`, with now as the clock.
func devCommand(args []string, getenv func(string) string, now func() time.Time, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "forest-jwt" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprint(stdout, devUsage)
			return flag.ErrHelp
		}
		if len(args) > 0 {
			fmt.Fprintf(stderr, "impersonator dev: unknown subcommand %q\n\n", args[0])
		}
		fmt.Fprint(stderr, devUsage)
		return errUsage
	}
	fs := flag.NewFlagSet("dev forest-jwt", flag.ContinueOnError)
	email := fs.String("email", "", "the admin's email (required)")
	id := fs.String("id", "1001", "the admin's Forest user id; a JSON number when numeric, as Node agents send it")
	team := fs.String("team", "Support", "the admin's team")
	role := fs.String("role", "Admin", "the admin's role")
	level := fs.String("permission-level", "admin", "the admin's permission level (admin, developer, user)")
	ttl := fs.Duration("ttl", defaultDevJWTTTL, "lifetime of the JWT (exp = now + ttl), at most 24h")
	if err := parseFlags(fs, args[1:], devUsage, stdout); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("dev forest-jwt: unexpected argument %q (see impersonator dev forest-jwt --help)", fs.Arg(0))
	case strings.TrimSpace(*email) == "":
		return errors.New("dev forest-jwt: --email is required")
	case strings.TrimSpace(*id) == "":
		return errors.New("dev forest-jwt: --id is empty")
	case *ttl <= 0 || *ttl > maxDevJWTTTL:
		return fmt.Errorf("dev forest-jwt: --ttl %s is out of range: more than 0, at most %s", *ttl, maxDevJWTTTL)
	}
	secret := getenv("FOREST_AUTH_SECRET")
	if secret == "" {
		// make run's first run keeps a development secret beside its key.
		dir := getenv("IMPERSONATOR_KEYS_DIR")
		if dir == "" {
			dir = "keys"
		}
		s, err := app.ReadDevForestSecret(dir)
		if err != nil {
			if errors.Is(err, iofs.ErrNotExist) {
				return fmt.Errorf("dev forest-jwt: FOREST_AUTH_SECRET is not set and %s has no development secret: export the value the service runs with, or start serve once on the embedded Redis (make run), which makes one there", dir)
			}
			return fmt.Errorf("dev forest-jwt: %w", err)
		}
		fmt.Fprintf(stderr, "dev forest-jwt: signed with the development secret in %s\n", filepath.Join(dir, app.DevForestSecretFile))
		secret = s
	}
	if n := len(secret); n < 32 {
		return fmt.Errorf("dev forest-jwt: FOREST_AUTH_SECRET is shorter than 32 characters (%d), so serve refuses it: generate it randomly", n)
	}
	if why := config.WeakSecret(secret); why != "" {
		return fmt.Errorf("dev forest-jwt: FOREST_AUTH_SECRET %s, so serve refuses it: generate it randomly (openssl rand -hex 32)", why)
	}
	tok, err := forestJWTFor(secret, forestAdmin{ID: *id, Email: *email, Team: *team, Role: *role, PermissionLevel: *level}, now(), *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, tok)
	return err
}

// forestAdmin is who a development Forest JWT names.
type forestAdmin struct {
	ID, Email, Team, Role, PermissionLevel string
}

// forestJWTFor signs claims shaped like the Forest UI's (camelCase, as
// Node agents read them) with secret, HS256, valid from now for ttl.
func forestJWTFor(secret string, a forestAdmin, now time.Time, ttl time.Duration) (string, error) {
	first, _, _ := strings.Cut(a.Email, "@")
	claims := jwt.MapClaims{
		"id":              jsonID(a.ID),
		"email":           a.Email,
		"firstName":       first,
		"lastName":        "",
		"team":            a.Team,
		"role":            a.Role,
		"permissionLevel": a.PermissionLevel,
		"renderingId":     1,
		"iat":             now.Unix(),
		"exp":             now.Add(ttl).Unix(),
	}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
}

// maxSafeInteger is the largest integer a JSON number carries exactly to
// JavaScript and to a float64 reader (2^53 - 1).
const maxSafeInteger = 1<<53 - 1

// jsonID returns id as a number when it is a canonical decimal integer a
// JSON reader keeps exactly (as Node agents send ids), else as a string.
func jsonID(id string) any {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || strconv.FormatInt(n, 10) != id || n > maxSafeInteger || n < -maxSafeInteger {
		return id
	}
	return n
}
