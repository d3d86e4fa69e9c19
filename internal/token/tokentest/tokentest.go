// Package tokentest gives tests a fresh signing keyset in a temporary keys
// folder, written and loaded the way the service does it.
package tokentest

import (
	"testing"
	"time"

	"github.com/impersonator/impersonator/internal/token"
)

// Keyset writes one new key of alg (token.AlgEdDSA when empty) to a
// temporary folder and loads it.
func Keyset(tb testing.TB, alg string) *token.Keyset {
	tb.Helper()
	if alg == "" {
		alg = token.AlgEdDSA
	}
	dir := tb.TempDir()
	if _, err := token.WriteNew(dir, alg, time.Now()); err != nil {
		tb.Fatal(err)
	}
	ks, err := token.LoadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return ks
}
