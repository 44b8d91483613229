// kubectl, built from the Go module proxy at the API server's version for caddy-beacon's tests
// (kubectl kustomize, kubectl apply --dry-run=server). This file is cmd/kubectl/kubectl.go of
// k8s.io/kubernetes v1.37.2 without the cloud auth plugins, Copyright 2014 The Kubernetes
// Authors, under the Apache License 2.0 (http://www.apache.org/licenses/LICENSE-2.0).
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// The verbosity is parsed first so that klog applies it while the command is built.
	logs.GlogSetter(cmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := cmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		util.CheckErr(err)
	}
}
