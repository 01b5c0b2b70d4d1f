package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "ready.json")

	// A previous run's file is removed at startup.
	os.WriteFile(path, []byte(`{"grpc":"127.0.0.1:1","http":"127.0.0.1:2"}`), 0o600)
	if err := removeReadyFile(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a stale ready file survived startup: %v", err)
	}

	if err := writeReadyFile(path, readyAddrs{GRPC: "127.0.0.1:9090", HTTP: "127.0.0.1:8080"}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var got readyAddrs
	if err := json.Unmarshal(b, &got); err != nil || got != (readyAddrs{GRPC: "127.0.0.1:9090", HTTP: "127.0.0.1:8080"}) {
		t.Errorf("ready file %q: %+v %v", b, got, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("writing the ready file left %v behind", entries)
	}

	// What cannot be written is refused, naming the flag.
	missing := filepath.Join(dir, "missing", "ready.json")
	for name, err := range map[string]error{
		"remove in a missing directory": removeReadyFile(missing),
		"write in a missing directory":  writeReadyFile(missing, readyAddrs{GRPC: "a:1", HTTP: "b:2"}),
		"a directory":                   removeReadyFile(dir),
	} {
		if err == nil || !strings.Contains(err.Error(), "--ready-file") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
