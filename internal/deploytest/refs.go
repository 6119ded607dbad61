package deploytest

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// Ref is a use of a Secret or ConfigMap key by a rendered object.
type Ref struct {
	Kind string // Secret or ConfigMap
	Name string
	Key  string // "" when the whole object is used (envFrom, a volume without items)
	From string // the object that uses it
}

// UserSecrets maps the name of a Secret that users create themselves (it is
// never rendered) to its documented keys.
type UserSecrets map[string][]string

// Refs lists every Secret and ConfigMap key the rendered objects use.
func (s *Set) Refs() []Ref {
	var refs []Ref
	for _, p := range s.PodTemplates() {
		for _, v := range p.Spec.Volumes {
			switch {
			case v.ConfigMap != nil:
				refs = append(refs, keyRefs("ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items, p.Owner)...)
			case v.Secret != nil:
				refs = append(refs, keyRefs("Secret", v.Secret.SecretName, v.Secret.Items, p.Owner)...)
			case v.Projected != nil:
				for _, src := range v.Projected.Sources {
					if src.ConfigMap != nil {
						refs = append(refs, keyRefs("ConfigMap", src.ConfigMap.Name, src.ConfigMap.Items, p.Owner)...)
					}
					if src.Secret != nil {
						refs = append(refs, keyRefs("Secret", src.Secret.Name, src.Secret.Items, p.Owner)...)
					}
				}
			}
		}
		for _, c := range allContainers(&p.Spec) {
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					refs = append(refs, Ref{"ConfigMap", r.Name, r.Key, p.Owner})
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					refs = append(refs, Ref{"Secret", r.Name, r.Key, p.Owner})
				}
			}
			for _, e := range c.EnvFrom {
				if e.ConfigMapRef != nil {
					refs = append(refs, Ref{"ConfigMap", e.ConfigMapRef.Name, "", p.Owner})
				}
				if e.SecretRef != nil {
					refs = append(refs, Ref{"Secret", e.SecretRef.Name, "", p.Owner})
				}
			}
		}
	}
	for _, o := range s.Kinds("Ingress") {
		for _, t := range o.Obj.(*networkingv1.Ingress).Spec.TLS {
			refs = append(refs, Ref{"Secret", t.SecretName, "tls.crt", o.String()}, Ref{"Secret", t.SecretName, "tls.key", o.String()})
		}
	}
	return refs
}

func keyRefs(kind, name string, items []corev1.KeyToPath, from string) []Ref {
	if len(items) == 0 {
		return []Ref{{kind, name, "", from}}
	}
	var out []Ref
	for _, it := range items {
		out = append(out, Ref{kind, name, it.Key, from})
	}
	return out
}

func allContainers(spec *corev1.PodSpec) []*corev1.Container {
	var out []*corev1.Container
	for i := range spec.InitContainers {
		out = append(out, &spec.InitContainers[i])
	}
	for i := range spec.Containers {
		out = append(out, &spec.Containers[i])
	}
	return out
}

// CheckReferences reports Secret and ConfigMap keys that are used but exist
// neither in the render nor in the user-created list, and claims of
// PersistentVolumeClaims or PersistentVolumes that the render lacks.
func CheckReferences(s *Set, user UserSecrets) []error {
	var problems []error
	for _, r := range s.Refs() {
		switch r.Kind {
		case "ConfigMap":
			o := s.Find("ConfigMap", r.Name)
			if o == nil {
				problems = append(problems, fmt.Errorf("%s uses ConfigMap %s, which is not rendered", r.From, r.Name))
				continue
			}
			cm := o.Obj.(*corev1.ConfigMap)
			if _, ok := cm.Data[r.Key]; r.Key != "" && !ok {
				if _, ok := cm.BinaryData[r.Key]; !ok {
					problems = append(problems, fmt.Errorf("%s uses key %q of ConfigMap %s, which has keys %v", r.From, r.Key, r.Name, mapKeys(cm.Data)))
				}
			}
		case "Secret":
			if o := s.Find("Secret", r.Name); o != nil {
				sec := o.Obj.(*corev1.Secret)
				_, inData := sec.Data[r.Key]
				_, inString := sec.StringData[r.Key]
				if r.Key != "" && !inData && !inString {
					problems = append(problems, fmt.Errorf("%s uses key %q of Secret %s, which lacks it", r.From, r.Key, r.Name))
				}
				continue
			}
			keys, ok := user[r.Name]
			if !ok {
				problems = append(problems, fmt.Errorf("%s uses Secret %s, which is neither rendered nor in the documented user-created Secrets", r.From, r.Name))
				continue
			}
			if r.Key != "" && !slices.Contains(keys, r.Key) {
				problems = append(problems, fmt.Errorf("%s uses key %q of Secret %s; the documented keys are %v", r.From, r.Key, r.Name, keys))
			}
		}
	}
	for _, p := range s.PodTemplates() {
		vols := map[string]bool{}
		for _, v := range p.Spec.Volumes {
			vols[v.Name] = true
		}
		for _, c := range allContainers(&p.Spec) {
			for _, m := range c.VolumeMounts {
				if !vols[m.Name] {
					problems = append(problems, fmt.Errorf("%s container %s mounts volume %s, which the pod does not define", p.Owner, c.Name, m.Name))
				}
			}
		}
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil && s.Find("PersistentVolumeClaim", v.PersistentVolumeClaim.ClaimName) == nil {
				problems = append(problems, fmt.Errorf("%s mounts PersistentVolumeClaim %s, which is not rendered", p.Owner, v.PersistentVolumeClaim.ClaimName))
			}
		}
	}
	for _, o := range s.Kinds("PersistentVolumeClaim") {
		pvc := o.Obj.(*corev1.PersistentVolumeClaim)
		if n := pvc.Spec.VolumeName; n != "" {
			pv := s.Find("PersistentVolume", n)
			if pv == nil {
				problems = append(problems, fmt.Errorf("%s binds PersistentVolume %s, which is not rendered", o, n))
				continue
			}
			problems = append(problems, checkBinding(o.String(), pvc, pv.Obj.(*corev1.PersistentVolume))...)
		}
	}
	return problems
}

// checkBinding reports what would keep a claim Pending on its named volume.
func checkBinding(claim string, pvc *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) []error {
	var problems []error
	pvClass, pvcClass := pv.Spec.StorageClassName, ""
	if pvc.Spec.StorageClassName != nil {
		pvcClass = *pvc.Spec.StorageClassName
	} else {
		problems = append(problems, fmt.Errorf("%s: storageClassName unset: a default StorageClass would be filled in and never match PersistentVolume %s; set it to %q", claim, pv.Name, pvClass))
	}
	if pvcClass != pvClass {
		problems = append(problems, fmt.Errorf("%s: storageClassName %q differs from PersistentVolume %s's %q", claim, pvcClass, pv.Name, pvClass))
	}
	for _, m := range pvc.Spec.AccessModes {
		if !slices.Contains(pv.Spec.AccessModes, m) {
			problems = append(problems, fmt.Errorf("%s: access mode %s not offered by PersistentVolume %s (%v)", claim, m, pv.Name, pv.Spec.AccessModes))
		}
	}
	want, have := pvc.Spec.Resources.Requests[corev1.ResourceStorage], pv.Spec.Capacity[corev1.ResourceStorage]
	if want.Cmp(have) > 0 {
		problems = append(problems, fmt.Errorf("%s: requests %s but PersistentVolume %s holds %s", claim, want.String(), pv.Name, have.String()))
	}
	return problems
}

// CheckDocumentedSecretsUsed reports documented Secrets and keys that no
// rendered object uses: documentation that asks users to create something
// nothing reads has drifted from the manifests.
func CheckDocumentedSecretsUsed(sets []*Set, user UserSecrets) []error {
	used := map[string]bool{}
	for _, s := range sets {
		for _, r := range s.Refs() {
			if r.Kind == "Secret" {
				used[r.Name] = true
				used[r.Name+"/"+r.Key] = true
			}
		}
	}
	var problems []error
	for _, name := range mapKeys(user) {
		if !used[name] {
			problems = append(problems, fmt.Errorf("documented Secret %s is used by no overlay", name))
			continue
		}
		for _, k := range user[name] {
			if !used[name+"/"+k] && !used[name+"/"] {
				problems = append(problems, fmt.Errorf("documented key %q of Secret %s is used by no overlay", k, name))
			}
		}
	}
	return problems
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// ParseSecretsTable reads the user-created Secrets from a Markdown table
// whose rows start with a backquoted Secret name followed by a cell of
// backquoted keys: | `berth-redis` | `password` | ... |
func ParseSecretsTable(markdown string) UserSecrets {
	out := UserSecrets{}
	for _, line := range strings.Split(markdown, "\n") {
		cells := strings.Split(strings.TrimSpace(line), "|")
		if len(cells) < 4 || cells[0] != "" {
			continue
		}
		name, ok := singleCode(cells[1])
		if !ok {
			continue
		}
		var keys []string
		for _, part := range strings.Split(cells[2], ",") {
			k, ok := singleCode(part)
			if !ok {
				keys = nil
				break
			}
			keys = append(keys, k)
		}
		if len(keys) > 0 {
			out[name] = keys
		}
	}
	return out
}

// singleCode returns x for a cell that is exactly `x`.
func singleCode(cell string) (string, bool) {
	c := strings.TrimSpace(cell)
	if len(c) < 3 || c[0] != '`' || c[len(c)-1] != '`' || strings.Count(c, "`") != 2 {
		return "", false
	}
	return c[1 : len(c)-1], true
}
