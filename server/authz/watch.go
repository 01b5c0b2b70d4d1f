package authz

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"sync"
)

// watcher re-reads files when they change: the policy file and the TLS
// certificates, in one loop. It compares sizes and modification times
// rather than subscribing to file events, so it also follows the symlink
// swaps with which Kubernetes updates a mounted ConfigMap or Secret.
type watcher struct {
	log      *slog.Logger
	onReload func(file string, err error)
	mu       sync.Mutex // one poll at a time
	items    []*watched
}

type watched struct {
	name   string // "policy" or "certificates", for OnReload
	what   string
	files  []string
	reload func() error
	stamp  string
}

func (w *watcher) add(name, what string, files []string, reload func() error) {
	w.items = append(w.items, &watched{name: name, what: what, files: files, reload: reload, stamp: stampOf(files)})
}

func stampOf(files []string) string {
	var b bytes.Buffer
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		} else {
			b.WriteString("-;")
		}
	}
	return b.String()
}

// poll reloads whatever changed since the last poll. A reload that fails is
// logged and the version in force stays; it is tried again only when the
// files change again.
func (w *watcher) poll() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, it := range w.items {
		stamp := stampOf(it.files)
		if stamp == it.stamp {
			continue
		}
		it.stamp = stamp
		err := it.reload()
		if w.onReload != nil {
			w.onReload(it.name, err)
		}
		if err != nil {
			w.log.Error(it.what+" changed but cannot be loaded; the previous one stays in force", "files", it.files, "err", err)
			continue
		}
		w.log.Info(it.what+" reloaded", "files", it.files)
	}
}
