// Command chartdoc regenerates the values table in a Helm chart's README.md
// from values.schema.json and values.yaml: `make chart-docs`.
//
// Usage: go -C deploy run ./cmd/chartdoc helm/signet
package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/signet-dev/signet/deploy/internal/chartdoc"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: chartdoc CHART_DIR")
		os.Exit(2)
	}
	want, got, err := chartdoc.README(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "chartdoc:", err)
		os.Exit(1)
	}
	if bytes.Equal(want, got) {
		return
	}
	// #nosec G306 G703 -- the chart's README, a public document in the
	// directory make chart-docs names.
	if err := os.WriteFile(filepath.Join(os.Args[1], "README.md"), want, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "chartdoc:", err)
		os.Exit(1)
	}
	fmt.Println("updated", filepath.Join(os.Args[1], "README.md"))
}
