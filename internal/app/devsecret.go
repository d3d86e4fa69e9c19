package app

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DevForestSecretFile is the development FOREST_AUTH_SECRET's file in the
// keys folder, beside the development key: serve writes it on its first
// run with the embedded Redis and no FOREST_AUTH_SECRET, and `impersonator
// dev forest-jwt` reads it.
const DevForestSecretFile = "dev-forest-auth-secret"

// DevForestSecret returns the development secret kept in dir, creating a
// random one (mode 0600) when there is none; created says it was made now.
func DevForestSecret(dir string) (secret string, created bool, err error) {
	if s, err := ReadDevForestSecret(dir); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return s, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", false, err
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", false, err
	}
	secret = base64.RawURLEncoding.EncodeToString(b)
	f, err := os.OpenFile(filepath.Join(dir, DevForestSecretFile), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // another process made it first
		s, err := ReadDevForestSecret(dir)
		return s, false, err
	}
	if err != nil {
		return "", false, err
	}
	if _, err := f.WriteString(secret + "\n"); err != nil {
		f.Close()
		return "", false, err
	}
	return secret, true, f.Close()
}

// ReadDevForestSecret reads the development secret kept in dir.
func ReadDevForestSecret(dir string) (string, error) {
	path := filepath.Join(dir, DevForestSecretFile)
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s is readable or writable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if len(s) < 32 {
		return "", fmt.Errorf("%s holds fewer than 32 characters: delete it and serve makes a new one", path)
	}
	return s, nil
}
