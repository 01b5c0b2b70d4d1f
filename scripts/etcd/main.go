// Command etcd is the etcd server, built from etcd's Go module for the
// Kubernetes end-to-end tests (cmd/signet's kube-apiserver test stores the
// cluster in it). It is etcd's own main, in a module of its own so that
// Signet does not depend on etcd's server code. Build it with `make bin/etcd`.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
