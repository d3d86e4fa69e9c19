package redistest

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
)

// EmbeddedURL starts a miniredis and returns it with its redis:// URL, the
// form store.Open takes.
func EmbeddedURL(tb testing.TB) (*miniredis.Miniredis, string) {
	m := miniredis.RunT(tb)
	return m, "redis://" + m.Addr()
}
