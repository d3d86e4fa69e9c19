package config

import (
	"fmt"
	"math"
	"strings"
	"unicode"
)

// minSecretBits is the least estimated entropy a secret may have.
const minSecretBits = 128

// WeakSecret says why s is guessable, or "" when it is not. A secret is
// judged by its estimated entropy, its length times the bits per character
// of the smallest alphabet its characters come from (hex digits of one
// case: 4 bits; digits: 3.3; otherwise the union of the classes it uses:
// lower case 26, upper case 26, digits 10, other characters 33), which must
// be at least 128 bits; and by two patterns random text does not have: one
// piece repeated, or mostly runs of repeated or consecutive characters
// ("aaaa", "1234", "fedc"). So 64 random hex digits (Forest's
// FOREST_ENV_SECRET, openssl rand -hex 32) always pass, and 32 do too.
func WeakSecret(s string) string {
	r := []rune(s)
	if bits := float64(len(r)) * math.Log2(float64(alphabet(s))); bits < minSecretBits {
		return fmt.Sprintf("has about %d bits of entropy (%d characters from an alphabet of %d), at least %d are required", int(bits), len(r), alphabet(s), minSecretBits)
	}
	if p := period(r); p > 0 {
		return fmt.Sprintf("is a piece of %d characters repeated", p)
	}
	if n := inRuns(r); 3*n > 2*len(r) {
		return fmt.Sprintf("is mostly runs of repeated or consecutive characters (%d of %d characters)", n, len(r))
	}
	return ""
}

// alphabet is the size of the smallest alphabet s's characters are from.
func alphabet(s string) int {
	var lower, upper, digit, other, hexLetters bool
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digit = true
		case r >= 'a' && r <= 'z':
			lower = true
			hexLetters = hexLetters || r > 'f'
		case r >= 'A' && r <= 'Z':
			upper = true
			hexLetters = hexLetters || r > 'F'
		default:
			other = true
		}
	}
	switch {
	case !other && !hexLetters && !(lower && upper) && (lower || upper):
		return 16
	case !other && !lower && !upper:
		return 10
	}
	n := 0
	for _, c := range []struct {
		used bool
		size int
	}{{lower, 26}, {upper, 26}, {digit, 10}, {other, 33}} {
		if c.used {
			n += c.size
		}
	}
	return max(n, 2)
}

// period is the length of the piece r repeats (r is that piece twice or
// more, the last time perhaps cut short), or 0.
func period(r []rune) int {
	for p := 1; p <= len(r)/2; p++ {
		repeats := true
		for i := p; i < len(r) && repeats; i++ {
			repeats = r[i] == r[i-p]
		}
		if repeats {
			return p
		}
	}
	return 0
}

// inRuns counts the characters of r that continue a run of three or more
// equal or consecutive characters ("aaa", "abc", "cba", "135" is not one):
// the ones a guesser gets for free.
func inRuns(r []rune) int {
	n := 0
	for i := 2; i < len(r); i++ {
		d := r[i] - r[i-1]
		if d == r[i-1]-r[i-2] && (d == 0 || d == 1 || d == -1) && !unicode.IsSpace(r[i]) {
			n++
		}
	}
	return n
}

// unknownEnv warns of each IMPERSONATOR_* variable of environ ("K=V") that
// is no setting, naming the nearest known one when one is close.
func unknownEnv(environ []string) []string {
	known := make(map[string]bool, len(Vars)+len(OtherEnv))
	for _, v := range Vars {
		known[v.Env] = true
	}
	for _, e := range OtherEnv {
		known[e] = true
	}
	var out []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "IMPERSONATOR_") || known[k] {
			continue
		}
		best, dist := "", math.MaxInt
		for name := range known {
			if d := editDistance(k, name); d < dist || d == dist && name < best {
				best, dist = name, d
			}
		}
		if dist <= max(2, len(k)/4) {
			out = append(out, fmt.Sprintf("%s is not a setting and is ignored; did you mean %s?", k, best))
		} else {
			out = append(out, fmt.Sprintf("%s is not a setting and is ignored (impersonator serve --help lists them)", k))
		}
	}
	return out
}

// editDistance is the Levenshtein distance between a and b (bytes: the
// names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
