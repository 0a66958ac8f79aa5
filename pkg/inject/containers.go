package inject

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/secctx/secctx/pkg/securityctx"
)

// targets returns the containers to inject into, init containers first, as
// pointers into pod. Without the containers annotation that is every
// container and init container (native sidecars included); with it, the
// named ones, and a name that is not in the pod is an error.
func targets(pod *corev1.Pod) ([]*corev1.Container, string) {
	var all []*corev1.Container
	for i := range pod.Spec.InitContainers {
		all = append(all, &pod.Spec.InitContainers[i])
	}
	for i := range pod.Spec.Containers {
		all = append(all, &pod.Spec.Containers[i])
	}
	v, ok := pod.Annotations[securityctx.AnnotationContainers]
	if !ok {
		return all, ""
	}
	want := map[string]bool{}
	var order []string
	for _, n := range strings.Split(v, ",") {
		if n = strings.TrimSpace(n); n != "" && !want[n] {
			want[n] = true
			order = append(order, n)
		}
	}
	if len(want) == 0 {
		return nil, fmt.Sprintf("%s %q: names no container; list container names separated by commas, or remove the annotation to inject into all", securityctx.AnnotationContainers, v)
	}
	var picked []*corev1.Container
	names := make([]string, 0, len(all))
	for _, c := range all {
		names = append(names, c.Name)
		if want[c.Name] {
			picked = append(picked, c)
			delete(want, c.Name)
		}
	}
	for _, n := range order {
		if want[n] {
			return nil, fmt.Sprintf("%s %q: the pod has no container %q; it has %s", securityctx.AnnotationContainers, v, n, strings.Join(names, ", "))
		}
	}
	return picked, ""
}

// applyToContainer adds the plan's env, envFrom and mounts to c. What is
// already there and equal is left alone; what is there and different is a
// clash, reported with both sides.
func applyToContainer(c *corev1.Container, p *secretPlan) []string {
	var clashes []string
	// Clip, then Grow: one new array for what will be appended, never the
	// spare capacity of the input pod's array, which another Inject of the
	// same pod would write over.
	c.Env = slices.Grow(slices.Clip(c.Env), len(p.env))
	c.EnvFrom = slices.Clip(c.EnvFrom)
	c.VolumeMounts = slices.Grow(slices.Clip(c.VolumeMounts), len(p.volumes))
	for _, it := range p.env {
		if i := findEnv(c.Env, it.env.Name); i >= 0 {
			if !sameEnv(c.Env[i], it.env) {
				clashes = append(clashes, fmt.Sprintf("container %q already sets env %s %s; %s would set it %s",
					c.Name, it.env.Name, describeEnv(c.Env[i]), it.by, it.describe()))
			}
			continue
		}
		c.Env = append(c.Env, it.env)
	}
	for _, f := range p.envFrom {
		if !hasEnvFrom(c.EnvFrom, f) {
			c.EnvFrom = append(c.EnvFrom, f)
		}
	}
	for _, v := range p.volumes {
		m := corev1.VolumeMount{Name: v.volume.Name, MountPath: v.dir, ReadOnly: true}
		if i := findMount(c.VolumeMounts, m.MountPath); i >= 0 {
			if have := c.VolumeMounts[i]; have.Name != m.Name || !have.ReadOnly || have.SubPath != "" || have.SubPathExpr != "" {
				clashes = append(clashes, fmt.Sprintf("container %q already mounts volume %q at %s; %s would mount Secret %q there",
					c.Name, have.Name, m.MountPath, v.by, v.volume.Secret.SecretName))
			}
			continue
		}
		c.VolumeMounts = append(c.VolumeMounts, m)
	}
	return clashes
}

func findEnv(env []corev1.EnvVar, name string) int {
	for i := range env {
		if env[i].Name == name {
			return i
		}
	}
	return -1
}

func findMount(mounts []corev1.VolumeMount, path string) int {
	for i := range mounts {
		if mounts[i].MountPath == path {
			return i
		}
	}
	return -1
}

func hasEnvFrom(have []corev1.EnvFromSource, f corev1.EnvFromSource) bool {
	for _, h := range have {
		if h.Prefix == f.Prefix && h.SecretRef != nil && h.SecretRef.Name == f.SecretRef.Name && !boolOr(h.SecretRef.Optional, false) {
			return true
		}
	}
	return false
}

// addVolumes adds the plan's volumes to the pod; a volume of the same name
// that differs is a clash.
func addVolumes(pod *corev1.Pod, p *secretPlan) []string {
	var clashes []string
	pod.Spec.Volumes = slices.Clip(pod.Spec.Volumes) // see applyToContainer
	for _, v := range p.volumes {
		found := false
		for i := range pod.Spec.Volumes {
			have := &pod.Spec.Volumes[i]
			if have.Name != v.volume.Name {
				continue
			}
			found = true
			if !sameSecretVolume(have, &v.volume) {
				clashes = append(clashes, fmt.Sprintf("the pod already has a volume named %q; %s needs that name for Secret %q",
					have.Name, v.by, v.volume.Secret.SecretName))
			}
		}
		if !found {
			pod.Spec.Volumes = append(pod.Spec.Volumes, v.volume)
		}
	}
	return clashes
}

func sameSecretVolume(a, b *corev1.Volume) bool {
	x, y := a.Secret, b.Secret
	if x == nil || y == nil || x.SecretName != y.SecretName || len(x.Items) != len(y.Items) ||
		boolOr(x.Optional, false) != boolOr(y.Optional, false) {
		return false
	}
	if (x.DefaultMode == nil) != (y.DefaultMode == nil) || (x.DefaultMode != nil && *x.DefaultMode != *y.DefaultMode) {
		return false
	}
	for i := range x.Items {
		if x.Items[i].Key != y.Items[i].Key || x.Items[i].Path != y.Items[i].Path || x.Items[i].Mode != nil || y.Items[i].Mode != nil {
			return false
		}
	}
	// No other volume source may be set beside the secret.
	z := a.VolumeSource
	z.Secret = nil
	return z == (corev1.VolumeSource{})
}
