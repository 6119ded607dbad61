package deploytest

import (
	"fmt"
	"path"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// CheckWorkloads reports what decoding cannot see but a cluster would trip
// over later: CronJob schedules and time zones the controller cannot parse,
// and images that would be pulled on every start (`Always`, `:latest` or no
// tag), which fails where nothing can be pulled and makes rollouts
// non-reproducible everywhere.
func CheckWorkloads(s *Set) []error {
	var problems []error
	bad := func(format string, a ...any) { problems = append(problems, fmt.Errorf(format, a...)) }
	for _, o := range s.Kinds("CronJob") {
		cj := o.Obj.(*batchv1.CronJob)
		// The CronJob controller parses with the same library and options.
		if _, err := cron.ParseStandard(cj.Spec.Schedule); err != nil {
			bad("%s: schedule %q: %v", o, cj.Spec.Schedule, err)
		}
		if tz := cj.Spec.TimeZone; tz != nil {
			if _, err := time.LoadLocation(*tz); err != nil {
				bad("%s: timeZone %q: %v", o, *tz, err)
			}
		}
	}
	for _, p := range s.PodTemplates() {
		for _, c := range allContainers(&p.Spec) {
			if c.ImagePullPolicy == corev1.PullAlways {
				bad("%s container %s: imagePullPolicy Always", p.Owner, c.Name)
			}
			if c.ImagePullPolicy == "" {
				bad("%s container %s: imagePullPolicy unset (the default depends on the tag)", p.Owner, c.Name)
			}
			if tag, ok := imageTag(c.Image); !ok || tag == "latest" {
				bad("%s container %s: image %q needs a fixed tag or digest", p.Owner, c.Name, c.Image)
			}
		}
	}
	return problems
}

// imageTag returns the tag of an image reference, or "@" for a digest.
func imageTag(ref string) (string, bool) {
	if strings.Contains(ref, "@") {
		return "@", true
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	i := strings.LastIndex(last, ":")
	if i < 0 {
		return "", false
	}
	return last[i+1:], true
}

// FileSource tells where a file that a container reads comes from.
type FileSource struct {
	Volume corev1.Volume
	Key    string // the ConfigMap/Secret key, or the path inside the volume
}

// MountedFile resolves a file path in container c of pod p to the volume and
// key that provide it, as kubelet would lay the mounts out.
func MountedFile(p PodTemplate, container, file string) (FileSource, error) {
	var c *corev1.Container
	for _, cc := range allContainers(&p.Spec) {
		if cc.Name == container {
			c = cc
		}
	}
	if c == nil {
		return FileSource{}, fmt.Errorf("%s: no container %s", p.Owner, container)
	}
	file = path.Clean(file)
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		m := &c.VolumeMounts[i]
		mp := path.Clean(m.MountPath)
		if file == mp || strings.HasPrefix(file, mp+"/") {
			if best == nil || len(mp) > len(path.Clean(best.MountPath)) {
				best = m
			}
		}
	}
	if best == nil {
		return FileSource{}, fmt.Errorf("%s container %s: %s is not on any mounted volume (the root filesystem is read-only)", p.Owner, container, file)
	}
	var vol *corev1.Volume
	for i := range p.Spec.Volumes {
		if p.Spec.Volumes[i].Name == best.Name {
			vol = &p.Spec.Volumes[i]
		}
	}
	if vol == nil {
		return FileSource{}, fmt.Errorf("%s container %s: volumeMount %s names no volume", p.Owner, container, best.Name)
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(file, path.Clean(best.MountPath)), "/")
	if best.SubPath != "" {
		rel = path.Join(best.SubPath, rel)
	}
	if rel == "" {
		return FileSource{}, fmt.Errorf("%s container %s: %s is a mount point of volume %s, not a file in it", p.Owner, container, file, vol.Name)
	}
	var items []corev1.KeyToPath
	switch {
	case vol.ConfigMap != nil:
		items = vol.ConfigMap.Items
	case vol.Secret != nil:
		items = vol.Secret.Items
	}
	if len(items) == 0 {
		return FileSource{Volume: *vol, Key: rel}, nil
	}
	for _, it := range items {
		if it.Path == rel {
			return FileSource{Volume: *vol, Key: it.Key}, nil
		}
	}
	return FileSource{}, fmt.Errorf("%s container %s: volume %s projects no item at %s", p.Owner, container, vol.Name, rel)
}

// Flag returns the value of --name in args (either "--name v" or
// "--name=v").
func Flag(args []string, name string) (string, bool) {
	for i, a := range args {
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}
