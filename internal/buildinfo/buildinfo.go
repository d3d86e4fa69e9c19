// Package buildinfo says which build of impersonator runs: the version and
// commit stamped by `make build` (-ldflags -X), else those Go stamps from
// the module and the git checkout (debug.ReadBuildInfo), else "dev".
package buildinfo

import (
	"runtime/debug"
	"sync"
)

// Set at build time: -ldflags "-X github.com/impersonator/impersonator/internal/buildinfo.version=v1.2.3
// -X github.com/impersonator/impersonator/internal/buildinfo.commit=abc123".
var version, commit string

var read = sync.OnceValues(func() (string, string) {
	v, c := version, commit
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return or(v, "dev"), or(c, "unknown")
	}
	if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	if c == "" {
		modified := false
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				c = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if c != "" && modified {
			c += "-dirty"
		}
	}
	return or(v, "dev"), or(c, "unknown")
})

// Version is the module version, such as v1.2.3 or a pseudo-version, or
// "dev" when nothing stamped one.
func Version() string { v, _ := read(); return v }

// Commit is the git commit built, with "-dirty" when the checkout had
// changes, or "unknown".
func Commit() string { _, c := read(); return c }

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
