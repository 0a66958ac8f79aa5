package inject

import (
	"fmt"
	"path"
	"slices"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/secctx/secctx/pkg/securityctx"
)

// targets returns the containers to inject into, init containers first, as
// pointers into pod:
//   - with the containers annotation, the containers it names; names the
//     pod does not have are returned as later (another webhook may add
//     them, and they are targets then), but at least one must be there;
//   - else, once secctx has run (the status annotation is there, as on a
//     reinvocation), the containers of that first pass: a container another
//     webhook added after secctx (a mesh proxy, an agent) gets nothing;
//   - else every container and init container, native sidecars included.
//
// secctx's own agent containers (token sidecar, installer, fetch) are never
// targets. A pod without containers, and a status annotation that is not a
// record secctx could have written (one that names no container, or a
// container the pod does not have), are problems: either would admit the
// pod without what it asked for.
func targets(pod *corev1.Pod) (tgts []*corev1.Container, later []string, problem string) {
	var all []*corev1.Container
	for i := range pod.Spec.InitContainers {
		if !isAgentContainer(pod.Spec.InitContainers[i].Name) {
			all = append(all, &pod.Spec.InitContainers[i])
		}
	}
	for i := range pod.Spec.Containers {
		all = append(all, &pod.Spec.Containers[i])
	}
	if len(pod.Spec.Containers) == 0 {
		return nil, nil, "the pod has no containers (spec.containers is empty or missing): there is nothing to inject into"
	}
	st, reinvoked := pod.Annotations[securityctx.AnnotationStatus]
	var prev Status
	if reinvoked {
		var msg string
		if prev, msg = readStatus(st, all); msg != "" {
			return nil, nil, fmt.Sprintf("%s %s: is not a record secctx wrote (%s); remove it, secctx writes it",
				securityctx.AnnotationStatus, securityctx.Quote(st), msg)
		}
	}
	v, named := pod.Annotations[securityctx.AnnotationContainers]
	if !named {
		if !reinvoked {
			return all, nil, ""
		}
		return slices.DeleteFunc(all, func(c *corev1.Container) bool { return !slices.Contains(prev.Containers, c.Name) }), nil, ""
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
		return nil, nil, fmt.Sprintf("%s %s: names no container; list container names separated by commas, or remove the annotation to inject into all", securityctx.AnnotationContainers, securityctx.Quote(v))
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
	if len(picked) == 0 {
		return nil, nil, fmt.Sprintf("%s %s: the pod has none of these containers; it has %s", securityctx.AnnotationContainers,
			securityctx.Quote(v), securityctx.Shorten(strings.Join(names, ", ")))
	}
	// A name the pod does not have (yet) is for a container that another
	// webhook adds later; the caller warns, in case it is a typo.
	for _, n := range order {
		if want[n] {
			later = append(later, n)
		}
	}
	return picked, later, ""
}

// readStatus decodes a status annotation and checks it against the pod's
// containers (all, secctx's own left out): secctx writes one on its first
// pass, naming every target, and a pod has at least one. So a record that
// names none, names one twice, or names a container the pod does not have
// was not written by secctx for this pod; msg says which.
func readStatus(st string, all []*corev1.Container) (prev Status, msg string) {
	if err := jsonv2.Unmarshal([]byte(st), &prev); err != nil {
		return prev, securityctx.Shorten(err.Error())
	}
	if len(prev.Containers) == 0 {
		return prev, "it names no container"
	}
	for i, n := range prev.Containers {
		if slices.Contains(prev.Containers[:i], n) {
			return prev, "it names container " + securityctx.Quote(n) + " twice"
		}
		if !slices.ContainsFunc(all, func(c *corev1.Container) bool { return c.Name == n }) {
			return prev, "it names container " + securityctx.Quote(n) + ", which the pod does not have"
		}
	}
	return prev, ""
}

// reservedNames refuses a container that takes the name of one of secctx's
// own: on the first pass (no status annotation) any such container, which
// is not secctx's and would be taken for it; after it (reinvocation), one
// that is not an init container. An init container of that name on a
// reinvocation must be exactly what secctx writes (applyAgent). It also
// refuses a container other than the fetch and the sidecar that mounts a
// store's login token, but for Azure's when azureTask
// (inject.azure.taskIdentity) gives it to the targets; and one that mounts
// a volume the agent writes and the targets read (isSharedAgentVolume)
// other than read-only on a reinvocation.
func reservedNames(pod *corev1.Pod, reinvoked, azureTask bool) []string {
	var problems []string
	for _, list := range []struct {
		what string
		cs   []corev1.Container
		init bool
	}{{"an init container", pod.Spec.InitContainers, true}, {"a container", pod.Spec.Containers, false}} {
		for i := range list.cs {
			n := list.cs[i].Name
			switch {
			case !isAgentContainer(n):
			case !reinvoked || !list.init:
				problems = append(problems, fmt.Sprintf("the pod has %s named %s, a name secctx reserves for its %s; rename it",
					list.what, n, describeAgent(n)))
			case slices.ContainsFunc(list.cs[:i], func(c corev1.Container) bool { return c.Name == n }):
				problems = append(problems, fmt.Sprintf("the pod has two init containers named %s; secctx writes one", n))
			}
		}
	}
	// The stores' login tokens are the fetch's alone, and the sidecar's
	// when it refreshes secrets: another container that mounts one would
	// get a token for Vault, Google or Entra. (Either of those two is
	// checked to be exactly secctx's, applyAgent.)
	for _, list := range []struct {
		cs   []corev1.Container
		init bool
	}{{pod.Spec.InitContainers, true}, {pod.Spec.Containers, false}} {
		for i := range list.cs {
			c := &list.cs[i]
			if list.init && (c.Name == FetchContainer || c.Name == SidecarContainer) {
				continue
			}
			for _, m := range c.VolumeMounts {
				switch {
				case isStoreTokenVolume(m.Name) && !(azureTask && m.Name == azureTokenVolumeName):
					problems = append(problems, fmt.Sprintf("container %s mounts volume %s, the %s, which only secctx's fetch may mount; remove the mount",
						securityctx.Quote(c.Name), m.Name, describeAgent(m.Name)))
				case isSharedAgentVolume(m.Name) && (!reinvoked || !m.ReadOnly):
					// Written by the fetch and the sidecar, and read by
					// the targets through the mounts secctx adds, read-only:
					// a container that writes one could change the
					// secrets, the tokens or the wrapper every target
					// runs, or lead the sidecar astray.
					problems = append(problems, fmt.Sprintf("container %s mounts volume %s, the %s, which secctx mounts itself, read-only, in the containers it injects into; remove the mount",
						securityctx.Quote(c.Name), m.Name, describeAgent(m.Name)))
				}
			}
		}
	}
	return problems
}

// applyToContainer adds the plan's env, envFrom and mounts to c. What is
// already there and equal is left alone; what is there and different is a
// clash, reported with both sides. volumes are the pod's, to tell which of
// c's mounts are read-only.
func applyToContainer(c *corev1.Container, p *secretPlan, volumes []corev1.Volume) []string {
	var clashes []string
	q := securityctx.Quote
	// Clip, then Grow: one new array for what will be appended, never the
	// spare capacity of the input pod's array, which another Inject of the
	// same pod would write over.
	c.Env = slices.Grow(slices.Clip(c.Env), len(p.env))
	c.EnvFrom = slices.Clip(c.EnvFrom)
	c.VolumeMounts = slices.Grow(slices.Clip(c.VolumeMounts), len(p.volumes))
	own := c.Env[:len(c.Env):len(c.Env)] // the container's own, before secctx's
	for _, it := range p.env {
		if slices.ContainsFunc(it.yieldTo, func(n string) bool { return findEnv(own, n) >= 0 }) {
			continue
		}
		if i := findEnv(c.Env, it.env.Name); i >= 0 {
			if !sameEnv(c.Env[i], it.env) {
				clashes = append(clashes, fmt.Sprintf("container %s already sets env %s %s; %s would set it %s",
					q(c.Name), it.env.Name, describeEnv(c.Env[i]), it.by, it.describe()))
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
		clashes = append(clashes, mountInto(c, v, volumes, p.volumes)...)
	}
	return clashes
}

// mountInto mounts v read-only at its directory in c, unless it is there
// already; a mount of c at, inside or around that directory that would
// stop it is a clash. volumes are the pod's, to tell which of c's mounts are
// read-only.
func mountInto(c *corev1.Container, v *secretVolume, volumes []corev1.Volume, own []*secretVolume) []string {
	var clashes []string
	q := securityctx.Quote
	present := false
	// The pod's mounts are compared by the directory they name, the way the
	// runtime resolves them: "/etc/flyte/secrets/g/", "/etc//flyte/./secrets/g"
	// and "/etc/flyte/secrets/g" are one.
	for _, have := range c.VolumeMounts {
		at := cleanMountPath(have.MountPath)
		switch {
		case at == v.dir:
			if have.Name == v.volume.Name && have.ReadOnly && have.SubPath == "" && have.SubPathExpr == "" {
				present = true
				continue
			}
			clashes = append(clashes, fmt.Sprintf("container %s already mounts volume %s at %s; %s would mount %s there",
				q(c.Name), q(have.Name), q(have.MountPath), v.by, v.what()))
		case within(at, v.dir) && !(v.volume.Name == fetchedVolumeName && ownSecretVolume(have, own)):
			clashes = append(clashes, fmt.Sprintf("container %s mounts volume %s at %s, inside %s where %s mounts %s read-only: "+
				"the mount point cannot be made there, and it would hide the files; mount it elsewhere",
				q(c.Name), q(have.Name), q(have.MountPath), v.dir, v.by, v.what()))
		case within(v.dir, at) && mountReadOnly(have, volumes) && !(have.Name == fetchedVolumeName && v.volume.Secret != nil):
			clashes = append(clashes, fmt.Sprintf("container %s mounts volume %s read-only at %s, and %s would mount %s at %s inside it: "+
				"the mount point cannot be made in a read-only volume, so the container would not start; mount it elsewhere or writable",
				q(c.Name), q(have.Name), q(have.MountPath), v.by, v.what(), v.dir))
		}
	}
	if !present {
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: v.volume.Name, MountPath: v.dir, ReadOnly: true})
	}
	return clashes
}

// ownSecretVolume: m is a Secret volume of the plan, mounted where secctx mounts it, in the secrets
// directory. Those may be inside the fetched volume (a pod that mixes
// Kubernetes Secrets with a fetched store): the planner checked that
// neither hides the other's files, and the fetch makes their mount points,
// which the runtime could not make in the read-only volume (checkNested).
func ownSecretVolume(m corev1.VolumeMount, own []*secretVolume) bool {
	return slices.ContainsFunc(own, func(v *secretVolume) bool {
		return v.volume.Secret != nil && v.volume.Name == m.Name && v.dir == cleanMountPath(m.MountPath)
	})
}

// equalProjected compares two volume sources as the API server stores them.
func equalProjected(a, b corev1.VolumeSource) bool {
	return equality.Semantic.DeepEqual(projectedAsStored(a), projectedAsStored(b))
}

// projectedAsStored is a volume source with the API server's defaults for
// a projected service-account token applied: the volume's mode and the
// token's lifetime.
func projectedAsStored(vs corev1.VolumeSource) corev1.VolumeSource {
	p := vs.Projected
	if p == nil {
		return vs
	}
	c := p.DeepCopy()
	if c.DefaultMode == nil {
		c.DefaultMode = ptr(corev1.ProjectedVolumeSourceDefaultMode)
	}
	for i := range c.Sources {
		if t := c.Sources[i].ServiceAccountToken; t != nil && t.ExpirationSeconds == nil {
			t.ExpirationSeconds = ptr(int64(3600))
		}
	}
	vs.Projected = c
	return vs
}

// cleanMountPath is the directory a mount path names inside the container:
// runtimes resolve it against the root, so a relative path, repeated or
// trailing slashes and "." or ".." elements name the same directory as
// their clean absolute form.
func cleanMountPath(p string) string {
	if strings.HasPrefix(p, "/") {
		return path.Clean(p) // no allocation when p is already clean
	}
	return path.Clean("/" + p)
}

// within reports whether p is strictly inside dir; both are clean.
func within(p, dir string) bool {
	return dir == "/" && p != "/" || strings.HasPrefix(p, dir) && len(p) > len(dir) && p[len(dir)] == '/'
}

// mountReadOnly reports whether nothing can be created under the mount in
// the container: it is mounted read-only, or its volume is of a kind the
// kubelet always mounts read-only.
func mountReadOnly(m corev1.VolumeMount, volumes []corev1.Volume) bool {
	if m.ReadOnly {
		return true
	}
	for i := range volumes {
		if v := &volumes[i]; v.Name == m.Name {
			return v.Secret != nil || v.ConfigMap != nil || v.Projected != nil || v.DownwardAPI != nil
		}
	}
	return false
}

func findEnv(env []corev1.EnvVar, name string) int {
	for i := range env {
		if env[i].Name == name {
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
	_, reinvoked := pod.Annotations[securityctx.AnnotationStatus]
	pod.Spec.Volumes = slices.Clip(pod.Spec.Volumes) // see applyToContainer
	for _, v := range p.volumes {
		if have := addVolume(pod, v.volume, reinvoked); have != nil {
			clashes = append(clashes, fmt.Sprintf("the pod already has a volume named %s; %s needs that name for %s",
				securityctx.Quote(have.Name), v.by, v.what()))
		}
	}
	return clashes
}

// addVolume appends v to the pod's volumes (a plan's volume, cloned for
// this pod), unless the pod has it already; it returns the pod's volume of
// that name when that differs.
func addVolume(pod *corev1.Pod, v corev1.Volume, reinvoked bool) (clash *corev1.Volume) {
	for i := range pod.Spec.Volumes {
		if have := &pod.Spec.Volumes[i]; have.Name == v.Name {
			if !sameVolume(have, &v, reinvoked) {
				return have
			}
			return nil
		}
	}
	pod.Spec.Volumes = append(pod.Spec.Volumes, v)
	return nil
}

// sameVolume compares a volume of the pod with one secctx adds: a secret
// or an emptyDir volume, as the pod view keeps them, or a projected one
// (a service-account token), which must be exactly secctx's once the API
// server's defaults are applied. Inject sees a projected volume whole only
// on a reinvocation (hasAgentParts); on a first pass one of secctx's names
// is never secctx's.
func sameVolume(a, b *corev1.Volume, reinvoked bool) bool {
	if b.Projected != nil {
		return reinvoked && equalProjected(a.VolumeSource, b.VolumeSource)
	}
	if b.EmptyDir != nil {
		x, y := a.EmptyDir, b.EmptyDir
		z := a.VolumeSource
		z.EmptyDir = nil
		return x != nil && z == (corev1.VolumeSource{}) && x.Medium == y.Medium &&
			(x.SizeLimit == nil) == (y.SizeLimit == nil) && (x.SizeLimit == nil || x.SizeLimit.Cmp(*y.SizeLimit) == 0)
	}
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
