package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TestDeployment says how the e2e suite deploys the local overlay: into
// Namespace, with a PersistentVolume of its own (so parallel or leftover
// namespaces never share one) and the CronJobs suspended so that only the
// Jobs a test creates run.
type TestDeployment struct {
	Namespace string
	// Overlay is the local overlay's directory.
	Overlay string
	PVName  string
	PVPath  string
	// Policy replaces the retention policy when set.
	Policy string
}

// WriteKustomization writes the kustomization for d into dir (which must
// exist) and returns dir, ready for `kubectl apply -k`.
func (d TestDeployment) WriteKustomization(dir string) (string, error) {
	overlay, err := filepath.Rel(dir, d.Overlay)
	if err != nil {
		return "", fmt.Errorf("overlay path: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: %s
resources:
  - %s
patches:
  - target: {kind: PersistentVolume, name: berth-registry}
    patch: |-
      - {op: replace, path: /metadata/name, value: %s}
      - {op: replace, path: /spec/hostPath/path, value: %s}
  - target: {kind: PersistentVolumeClaim, name: %s}
    patch: |-
      - {op: replace, path: /spec/volumeName, value: %s}
  - target: {kind: CronJob}
    patch: |-
      - {op: add, path: /spec/suspend, value: true}
`, d.Namespace, overlay, d.PVName, d.PVPath, PVCName, d.PVName)
	if d.Policy != "" {
		if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(d.Policy), 0o644); err != nil {
			return "", fmt.Errorf("write policy: %w", err)
		}
		b.WriteString(`configMapGenerator:
  - name: ` + PolicyMapPrefix + `
    behavior: replace
    files: [policy.yaml]
`)
	}
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("write kustomization: %w", err)
	}
	return dir, nil
}
