// Package deploytest renders the Kustomize overlays under deploy/ and checks
// the result the way an API server and a careful reviewer would: strict
// decoding, Pod Security "restricted", references between objects, ports,
// selectors and the NetworkPolicy flows. The checks return problems instead of
// failing a test, so that each one can be tested against broken fixtures.
package deploytest

import (
	"fmt"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// Object is one rendered resource, decoded into its Kubernetes API type.
type Object struct {
	GVK  schema.GroupVersionKind
	Name string
	// Namespace is empty unless the kustomization sets one.
	Namespace string
	YAML      []byte
	Obj       runtime.Object
}

func (o *Object) String() string { return o.GVK.Kind + "/" + o.Name }

// Set is the rendered content of one kustomization.
type Set struct {
	Dir     string
	Objects []*Object
}

var scheme = newScheme()

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme, monitoringv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(fmt.Sprintf("building the decoding scheme: %v", err))
		}
	}
	return s
}

// RenderDir runs Kustomize on the kustomization in dir, as
// `kubectl apply -k dir` would, and decodes every object strictly.
func RenderDir(dir string) (*Set, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	set := &Set{Dir: dir}
	for _, r := range rm.Resources() {
		y, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s: serialising %s/%s: %w", dir, r.GetKind(), r.GetName(), err)
		}
		gvk := r.GetGvk()
		o, err := Decode(y, schema.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		set.Objects = append(set.Objects, o)
	}
	return set, nil
}

// Decode decodes one YAML document into the Go type registered for gvk.
// Unknown fields, duplicate fields and kinds without a registered type are
// errors: a typo must not silently drop a setting the way a lenient apply
// (or a cluster without validation) would.
func Decode(y []byte, gvk schema.GroupVersionKind) (*Object, error) {
	obj, err := scheme.New(gvk)
	if err != nil {
		return nil, fmt.Errorf("%s: no API type registered for strict decoding: %w", gvk, err)
	}
	if err := yaml.UnmarshalStrict(y, obj); err != nil {
		return nil, fmt.Errorf("%s: strict decode: %w", gvk.Kind, err)
	}
	acc, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("%s: type %T has no object metadata", gvk, obj)
	}
	if acc.GetName() == "" {
		return nil, fmt.Errorf("%s: metadata.name is empty", gvk.Kind)
	}
	return &Object{GVK: gvk, Name: acc.GetName(), Namespace: acc.GetNamespace(), YAML: y, Obj: obj}, nil
}

// Find returns the object of the given kind and name, or nil.
func (s *Set) Find(kind, name string) *Object {
	for _, o := range s.Objects {
		if o.GVK.Kind == kind && o.Name == name {
			return o
		}
	}
	return nil
}

// Kinds returns every object of kind, in render order.
func (s *Set) Kinds(kind string) []*Object {
	var out []*Object
	for _, o := range s.Objects {
		if o.GVK.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// PodTemplate is a pod that a workload object will create.
type PodTemplate struct {
	Owner string // Kind/name of the workload
	Meta  metav1.ObjectMeta
	Spec  corev1.PodSpec
}

// PodTemplates lists the pods of every workload kind that berth renders.
func (s *Set) PodTemplates() []PodTemplate {
	var out []PodTemplate
	for _, o := range s.Objects {
		switch v := o.Obj.(type) {
		case *appsv1.Deployment:
			out = append(out, PodTemplate{o.String(), v.Spec.Template.ObjectMeta, v.Spec.Template.Spec})
		case *appsv1.StatefulSet:
			out = append(out, PodTemplate{o.String(), v.Spec.Template.ObjectMeta, v.Spec.Template.Spec})
		case *appsv1.DaemonSet:
			out = append(out, PodTemplate{o.String(), v.Spec.Template.ObjectMeta, v.Spec.Template.Spec})
		case *batchv1.Job:
			out = append(out, PodTemplate{o.String(), v.Spec.Template.ObjectMeta, v.Spec.Template.Spec})
		case *batchv1.CronJob:
			t := v.Spec.JobTemplate.Spec.Template
			out = append(out, PodTemplate{o.String(), t.ObjectMeta, t.Spec})
		case *corev1.Pod:
			out = append(out, PodTemplate{o.String(), v.ObjectMeta, v.Spec})
		}
	}
	return out
}

// ConfigMapData returns the data of the ConfigMap whose generated name
// starts with prefix (Kustomize appends a content hash).
func (s *Set) ConfigMapData(prefix string) (name string, data map[string]string, err error) {
	var names []string
	for _, o := range s.Kinds("ConfigMap") {
		cm := o.Obj.(*corev1.ConfigMap)
		if o.Name == prefix || (len(o.Name) > len(prefix) && o.Name[:len(prefix)+1] == prefix+"-") {
			names = append(names, o.Name)
			name, data = o.Name, cm.Data
		}
	}
	sort.Strings(names)
	if len(names) != 1 {
		return "", nil, fmt.Errorf("want exactly one ConfigMap named %s[-hash], found %v", prefix, names)
	}
	return name, data, nil
}
