// Package e2e is berth's end-to-end suite against a real Kubernetes cluster
// (build tag e2e): each test deploys deploy/overlays/local into its own
// namespace and checks what users rely on. See setup_test.go for the knobs.
//
//	make e2e          # the cluster in KUBECONFIG (k3d, kind, ...)
//	make e2e-local    # ../shared/k8s, brought up and torn down around the run
package e2e
