// Command kube-apiserver is the Kubernetes API server, built from the
// k8s.io/kubernetes Go module (with go.mod's replace directives, which point
// the staging modules k8s.io/api, k8s.io/apiserver, ... at their published
// versions, as Kubernetes' own go.mod points them at its staging/
// directory) for the end-to-end test of Signet as its external
// service-account token signer (--service-account-signing-endpoint). It is
// kube-apiserver's own command, in a module of its own so that Signet does
// not depend on Kubernetes. Build it with `make bin/kube-apiserver`.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // --logging-format=json, as the real binary has it
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
