package main

import (
	"strings"
	"testing"
)

func TestRatios(t *testing.T) {
	in := `goos: linux
pkg: github.com/impersonator/impersonator/internal/token
BenchmarkFloorVerify-2   	   50000	     20000 ns/op	       0 B/op	       0 allocs/op
BenchmarkVerify-2        	   40000	     30000 ns/op	    4000 B/op	      50 allocs/op
pkg: github.com/impersonator/impersonator/internal/other
BenchmarkAlone-2        	   40000	     1000 ns/op
PASS
`
	var out strings.Builder
	if err := run(strings.NewReader(in), &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if !strings.HasPrefix(got, in) {
		t.Error("input was not passed through")
	}
	for _, want := range []string{"BenchmarkVerify  30000  BenchmarkFloorVerify  20000        1.50x", "BenchmarkAlone   1000   -"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}
