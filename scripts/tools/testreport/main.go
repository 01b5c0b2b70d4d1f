// Command testreport reads `go test -json` on stdin and prints what a plain
// `go test` prints (build errors, the output of failing tests, a line per
// package), then lists every skipped test and exits 1 if there was any.
//
// CI runs the tests through it (`make test CI=true`): in CI a skipped test
// is a dependency that is missing or a check that was switched off, not a
// pass. go test's own exit status is kept by the shell (set -o pipefail).
//
// Usage: go test -json ./... | go -C scripts/tools run ./testreport
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// event is one line of `go test -json` (see `go doc test2json`).
type event struct {
	Action     string
	Package    string
	Test       string
	Output     string
	ImportPath string // build-output events
}

type skip struct {
	pkg, test, output string
}

func main() {
	skips, n, err := report(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport:", err)
		os.Exit(2)
	}
	// The counts say, run after run, that no test went missing.
	fmt.Printf("tests (with subtests): %d passed, %d failed, %d skipped\n", n.pass, n.fail, len(skips))
	if len(skips) > 0 {
		fmt.Printf("\n%d test(s) skipped; CI fails on any skipped test:\n", len(skips))
		for _, s := range skips {
			fmt.Printf("--- SKIP: %s %s\n", s.pkg, s.test)
			// The test's t.Skip reason and logs, without go test's own lines.
			printOutput(os.Stdout, s.output, "--- SKIP")
		}
		os.Exit(1)
	}
}

// counts are the tests (subtests included) that passed and failed.
type counts struct{ pass, fail int }

// report copies r to w as a plain `go test` would print it and returns the
// skipped tests in the order they ended, and how many passed and failed.
func report(r io.Reader, w io.Writer) ([]skip, counts, error) {
	var skips []skip
	var n counts
	// Output of each test still running, by package then test name; printed
	// only if the test (or, for output of a test that never ended, its
	// package) fails.
	running := map[string]map[string]*strings.Builder{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			fmt.Fprintf(w, "%s\n", line) // not an event: pass it on as is
			continue
		}
		switch {
		case e.Action == "build-output":
			fmt.Fprint(w, e.Output)
		case e.Test == "":
			switch e.Action {
			case "output":
				if strings.HasPrefix(e.Output, "FAIL") {
					// Before the package's FAIL lines, as go test does:
					// the output of tests that never ended (a timeout).
					flush(w, running[e.Package])
					delete(running, e.Package)
				}
				if e.Output != "PASS\n" { // plain go test omits it too
					fmt.Fprint(w, e.Output)
				}
			case "pass", "fail", "skip": // the package ended
				if e.Action == "fail" {
					flush(w, running[e.Package])
				}
				delete(running, e.Package)
			}
		default:
			tests := running[e.Package]
			if tests == nil {
				tests = map[string]*strings.Builder{}
				running[e.Package] = tests
			}
			b := tests[e.Test]
			if b == nil {
				b = new(strings.Builder)
				tests[e.Test] = b
			}
			switch e.Action {
			case "output":
				b.WriteString(e.Output)
			case "pass":
				n.pass++
				delete(tests, e.Test)
			case "skip":
				skips = append(skips, skip{e.Package, e.Test, b.String()})
				delete(tests, e.Test)
			case "fail":
				n.fail++
				printOutput(w, b.String(), "")
				delete(tests, e.Test)
			}
		}
	}
	return skips, n, sc.Err()
}

// printOutput prints a test's output as a plain go test would: without the
// "=== RUN" (PAUSE, CONT, NAME) lines that -json adds, and without lines
// starting with drop if it is not empty.
func printOutput(w io.Writer, out, drop string) {
	for _, line := range strings.SplitAfter(out, "\n") {
		if line == "" || strings.HasPrefix(line, "=== ") || drop != "" && strings.HasPrefix(line, drop) {
			continue
		}
		fmt.Fprint(w, line)
	}
}

// flush prints the output of tests that have not ended, in name order.
func flush(w io.Writer, tests map[string]*strings.Builder) {
	for _, name := range slices.Sorted(maps.Keys(tests)) {
		printOutput(w, tests[name].String(), "")
	}
}
