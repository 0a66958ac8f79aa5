package inject

import (
	"context"
	"errors"
	"fmt"

	jsonv2 "github.com/go-json-experiment/json"
	corev1 "k8s.io/api/core/v1"
)

// Outcome is Inject's answer, with the patch.
type Outcome struct {
	// Pod is the pod as Inject leaves it. From InjectJSON it holds only the
	// fields of PodView.
	Pod *corev1.Pod
	// Patch is the JSON patch that turns the input into Pod; nil when the pod
	// is left as it is.
	Patch []byte
	Result
}

// PodView is the part of a pod that Inject reads and changes. Decoding a pod
// into it skips everything else (images, resources, probes, status...)
// instead of building it, which more than halves the cost of reading a
// typical task pod; the patch only ever touches these fields anyway. Its
// decoder is written out by hand (podview.go).
type PodView struct {
	Metadata podMeta `json:"metadata"`
	Spec     podSpec `json:"spec"`
}

type podMeta struct {
	Name         string            `json:"name"`
	GenerateName string            `json:"generateName"`
	Namespace    string            `json:"namespace"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
}

type podSpec struct {
	InitContainers []ContainerView `json:"initContainers"`
	Containers     []ContainerView `json:"containers"`
	// Volumes hold their name, their secret or emptyDir source when that is
	// their only one, and an empty source of their kind when that is a kind the kubelet
	// mounts read-only (configMap, projected, downwardAPI).
	Volumes                      []corev1.Volume               `json:"volumes"`
	ServiceAccountName           string                        `json:"serviceAccountName"`
	DeprecatedServiceAccount     string                        `json:"serviceAccount"`
	AutomountServiceAccountToken *bool                         `json:"automountServiceAccountToken"`
	ImagePullSecrets             []corev1.LocalObjectReference `json:"imagePullSecrets"`
	// NodeSelector tells a Windows pod, whose AWS token file is named the
	// Windows way.
	NodeSelector map[string]string `json:"nodeSelector"`
	// SecurityContext keeps the users: who the fetched secrets' files are
	// for.
	SecurityContext *podUsers `json:"securityContext"`
	// ShareProcessNamespace tells whether the targets could see the
	// sidecar's processes.
	ShareProcessNamespace *bool `json:"shareProcessNamespace"`
}

// podUsers is the part of a pod's securityContext that Inject reads.
type podUsers struct {
	RunAsUser  *int64 `json:"runAsUser"`
	RunAsGroup *int64 `json:"runAsGroup"`
	FSGroup    *int64 `json:"fsGroup"`
}

// containerUsers is the part of a container's securityContext that Inject
// reads.
type containerUsers struct {
	RunAsUser  *int64 `json:"runAsUser"`
	RunAsGroup *int64 `json:"runAsGroup"`
}

// AgentView is a PodView whose init containers and volumes are whole,
// for the pods where secctx compares them whole (ErrFullPodNeeded): its
// own init containers and projected volumes on a reinvocation, and the
// volumes an account switch removes. Decoding those alone costs far less
// than the whole pod.
type AgentView struct {
	PodView
}

// ContainerView is the part of a container that Inject reads and changes.
type ContainerView struct {
	// Whole, when set, is the whole container (an init container of an
	// AgentView); the other fields are then unset.
	Whole *corev1.Container `json:"-"`
	Name  string            `json:"name"`
	// Image, Command and Args are read to wrap a command and to recognise
	// secctx's own containers on a reinvocation; Args of init containers
	// only.
	Image        string                 `json:"image"`
	Command      []string               `json:"command"`
	Args         []string               `json:"args"`
	Env          []corev1.EnvVar        `json:"env"`
	EnvFrom      []corev1.EnvFromSource `json:"envFrom"`
	VolumeMounts []corev1.VolumeMount   `json:"volumeMounts"`
	// SecurityContext keeps the container's users.
	SecurityContext *containerUsers `json:"securityContext"`
}

// Pod returns a pod with the view's fields and nothing else.
func (v *PodView) Pod() *corev1.Pod {
	p := &corev1.Pod{}
	m := &v.Metadata
	p.Name, p.GenerateName, p.Namespace, p.Labels, p.Annotations = m.Name, m.GenerateName, m.Namespace, m.Labels, m.Annotations
	p.Spec.InitContainers = containers(v.Spec.InitContainers)
	p.Spec.Containers = containers(v.Spec.Containers)
	p.Spec.Volumes = v.Spec.Volumes
	p.Spec.ServiceAccountName = v.Spec.ServiceAccountName
	p.Spec.DeprecatedServiceAccount = v.Spec.DeprecatedServiceAccount
	p.Spec.AutomountServiceAccountToken = v.Spec.AutomountServiceAccountToken
	p.Spec.ImagePullSecrets = v.Spec.ImagePullSecrets
	p.Spec.NodeSelector = v.Spec.NodeSelector
	p.Spec.ShareProcessNamespace = v.Spec.ShareProcessNamespace
	if u := v.Spec.SecurityContext; u != nil {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: u.RunAsUser, RunAsGroup: u.RunAsGroup, FSGroup: u.FSGroup}
	}
	return p
}

func containers(views []ContainerView) []corev1.Container {
	if views == nil {
		return nil
	}
	cs := make([]corev1.Container, len(views))
	for i, v := range views {
		if v.Whole != nil {
			cs[i] = *v.Whole
			continue
		}
		cs[i] = corev1.Container{Name: v.Name, Image: v.Image, Command: v.Command, Args: v.Args, Env: v.Env, EnvFrom: v.EnvFrom, VolumeMounts: v.VolumeMounts}
		if u := v.SecurityContext; u != nil {
			cs[i].SecurityContext = &corev1.SecurityContext{RunAsUser: u.RunAsUser, RunAsGroup: u.RunAsGroup}
		}
	}
	return cs
}

// InjectJSON decodes a pod's JSON into a PodView, injects into it and returns
// the patch. Field names are matched case-sensitively, as the API server does.
// A pod whose view is not enough (ErrFullPodNeeded) is decoded again with
// its init containers and volumes whole (AgentView).
func (in *Injector) InjectJSON(ctx context.Context, namespace string, raw []byte) (*Outcome, error) {
	var v PodView
	if err := jsonv2.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	o, err := in.PatchView(ctx, nil, &v, namespace)
	if !errors.Is(err, ErrFullPodNeeded) {
		return o, err
	}
	var av AgentView
	if err := jsonv2.Unmarshal(raw, &av); err != nil {
		return nil, fmt.Errorf("decode pod: %w", err)
	}
	return in.PatchAgentView(ctx, nil, &av, namespace)
}

// Patch injects into a copy of pod, as Inject does, and returns the JSON
// patch that turns pod into it.
func (in *Injector) Patch(ctx context.Context, pod *corev1.Pod, namespace string) (*Outcome, error) {
	return in.PatchTo(ctx, nil, pod, namespace)
}

// PatchTo is Patch with the patch appended to dst, so that a server can
// reuse one buffer for every request; Outcome.Patch then shares dst's array
// and is only valid until the buffer is reused.
func (in *Injector) PatchTo(ctx context.Context, dst []byte, pod *corev1.Pod, namespace string) (*Outcome, error) {
	return in.patchTo(ctx, dst, pod, namespace, false)
}

// PatchView is PatchTo for a pod decoded into a PodView. It returns
// ErrFullPodNeeded for a pod whose view lacks what secctx must compare; the
// caller then decodes the whole pod and calls PatchTo.
func (in *Injector) PatchView(ctx context.Context, dst []byte, v *PodView, namespace string) (*Outcome, error) {
	return in.patchTo(ctx, dst, v.Pod(), namespace, true)
}

// PatchAgentView is PatchTo for a pod decoded into an AgentView: its init
// containers and volumes are whole, which is all PatchView may ask for.
func (in *Injector) PatchAgentView(ctx context.Context, dst []byte, v *AgentView, namespace string) (*Outcome, error) {
	return in.patchTo(ctx, dst, v.Pod(), namespace, false)
}

func (in *Injector) patchTo(ctx context.Context, dst []byte, pod *corev1.Pod, namespace string, partial bool) (*Outcome, error) {
	out, res, err := in.inject(ctx, pod, namespace, partial)
	if err != nil {
		return nil, err
	}
	o := &Outcome{Pod: out, Result: res}
	if out != pod {
		p, err := appendPatch(dst, pod, out, res.tokens.encoded)
		if err != nil {
			return nil, fmt.Errorf("encode patch: %w", err)
		}
		if len(p) > len(dst) {
			o.Patch = p[len(dst):]
		}
	}
	return o, nil
}
