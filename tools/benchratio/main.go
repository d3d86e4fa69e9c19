// Command benchratio reads `go test -bench` output on stdin, passes it
// through, and then prints each benchmark's figures with its ratio to the
// floor measured in the same run: BenchmarkFloorX is the floor of
// BenchmarkX, and a package's only floor is the floor of all its
// benchmarks. A floor is the cheapest possible way to do the same job (for
// example one raw signature check, or one Redis round trip), so the ratio
// says how much this service adds on top, on this machine, right now.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
)

type result struct {
	pkg, name string
	nsPerOp   float64
	line      string
}

var benchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$`)

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchratio:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	var results []result
	pkg := ""
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(out, line)
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
			continue
		}
		if m := benchLine.FindStringSubmatch(line); m != nil {
			ns, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				continue
			}
			results = append(results, result{pkg: pkg, name: m[1], nsPerOp: ns, line: strings.TrimSpace(m[3])})
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	floors := map[string]map[string]result{}
	for _, r := range results {
		if strings.HasPrefix(r.name, "BenchmarkFloor") {
			if floors[r.pkg] == nil {
				floors[r.pkg] = map[string]result{}
			}
			floors[r.pkg][r.name] = r
		}
	}
	fmt.Fprintln(out, "\nRatios to the floor measured in this run:")
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "package\tbenchmark\tns/op\tfloor\tfloor ns/op\tratio")
	for _, r := range results {
		if strings.HasPrefix(r.name, "BenchmarkFloor") {
			continue
		}
		f, ok := floorOf(r, floors[r.pkg])
		if !ok {
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t-\t-\t-\n", short(r.pkg), r.name, r.nsPerOp)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%s\t%.0f\t%.2fx\n", short(r.pkg), r.name, r.nsPerOp, f.name, f.nsPerOp, r.nsPerOp/f.nsPerOp)
	}
	return tw.Flush()
}

func floorOf(r result, floors map[string]result) (result, bool) {
	base, _, _ := strings.Cut(strings.TrimPrefix(r.name, "Benchmark"), "/")
	if f, ok := floors["BenchmarkFloor"+base]; ok {
		return f, true
	}
	if len(floors) == 1 {
		for _, f := range floors {
			return f, true
		}
	}
	return result{}, false
}

func short(pkg string) string {
	if i := strings.Index(pkg, "/internal/"); i >= 0 {
		return pkg[i+1:]
	}
	return pkg
}
