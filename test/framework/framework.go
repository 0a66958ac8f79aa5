// Package framework is what the end-to-end suite and `make demo` share: it
// builds secctx's image and the test images, brings a cluster up with them,
// deploys secctx from config/, and runs pods to completion.
package framework

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/secctx/secctx/test/framework/cluster"
	"github.com/secctx/secctx/test/framework/image"
)

// Image references the suite imports into the cluster.
const (
	SecctxImage = "localhost/secctx:e2e"
	TaskImage   = "localhost/secctx-task:e2e"
	// OIDCImage is a real OpenID Provider (zitadel/oidc) and a resource
	// server that checks its tokens (test/images/oidc).
	OIDCImage = "localhost/secctx-oidc:e2e"
	// OIDCIP is the fixed ClusterIP of the test provider's Service (the
	// cluster has no DNS), and OIDCHost its address, which secctx is
	// configured to reach over plain http (inject.tokens.httpHosts).
	OIDCIP   = "10.0.0.200"
	OIDCHost = OIDCIP + ":8080"
)

// Root is the repository's top directory.
func Root() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// Options for Up.
type Options struct {
	Mode cluster.Mode
	// Dir is the cluster's state directory; default /var/tmp/secctx-cluster.
	Dir string
	// Progress gets one line per step.
	Progress io.Writer
	// Kubeconfig, when set, names a cluster that runs already (kind): Up
	// attaches to it with Kubectl instead of starting one, and builds no
	// images (load them first, see `make test-e2e-kind`).
	Kubeconfig, Kubectl string
}

// Up builds the images (Full mode) and starts a cluster with them.
func Up(ctx context.Context, o Options) (*cluster.Cluster, error) {
	root := Root()
	if o.Kubeconfig != "" {
		return cluster.Attach(o.Kubeconfig, o.Kubectl)
	}
	if o.Dir == "" {
		o.Dir = "/var/tmp/secctx-cluster"
	}
	var images []string
	if o.Mode == cluster.Full {
		t0 := time.Now()
		// A directory of this run's own: test packages run in parallel and
		// each builds its images before it waits for the machine's cluster
		// lock, so a shared directory would have two builds write one file.
		dir, err := os.MkdirTemp("", "secctx-images-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir) // Start imports the images into containerd
		images, err = BuildImages(ctx, root, dir)
		if err != nil {
			return nil, err
		}
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "images built in %.1fs\n", time.Since(t0).Seconds())
		}
	}
	return cluster.Start(ctx, cluster.Config{
		Mode: o.Mode, BinDir: filepath.Join(root, "bin"), Dir: o.Dir, Images: images, Progress: o.Progress,
	})
}

// BuildImages builds static binaries of secctx, the pause program and the
// task program, and writes an image tarball for each into out.
func BuildImages(ctx context.Context, root, out string) ([]string, error) {
	binDir := filepath.Join(out, "bin")
	specs := []struct {
		dir, pkg, ldflags string
		spec              image.Spec
	}{
		// The test images are built in the test module (test/).
		{root, "./cmd/webhook", "-s -w -X github.com/secctx/secctx/pkg/version.Version=v0.0.0-e2e",
			image.Spec{Ref: SecctxImage, Path: "secctx", Cmd: []string{"serve"}, User: fmt.Sprintf("%d:%d", image.NonRoot, image.NonRoot)}},
		{filepath.Join(root, "test"), "./images/pause", "-s -w", image.Spec{Ref: cluster.PauseImage, Path: "pause"}},
		{filepath.Join(root, "test"), "./images/task", "-s -w", image.Spec{Ref: TaskImage, Path: "task", User: fmt.Sprintf("%d:%d", image.NonRoot, image.NonRoot)}},
		{filepath.Join(root, "test"), "./images/oidc", "-s -w", image.Spec{Ref: OIDCImage, Path: "oidc", User: fmt.Sprintf("%d:%d", image.NonRoot, image.NonRoot)}},
	}
	// secctx's image holds the agent and the fetch too, at /secctx-agent
	// and /secctx-fetch, as the Dockerfile builds them.
	agent := filepath.Join(binDir, "secctx-agent")
	if err := image.GoBuild(ctx, root, "./cmd/agent", agent, "-s -w"); err != nil {
		return nil, err
	}
	fetch := filepath.Join(binDir, "secctx-fetch")
	if err := image.GoBuild(ctx, root, "./cmd/fetch", fetch, "-s -w"); err != nil {
		return nil, err
	}
	specs[0].spec.More = map[string]string{"secctx-agent": agent, "secctx-fetch": fetch}
	var tars []string
	for _, s := range specs {
		bin := filepath.Join(binDir, s.spec.Path)
		if err := image.GoBuild(ctx, s.dir, s.pkg, bin, s.ldflags); err != nil {
			return nil, err
		}
		s.spec.Binary = bin
		tar := filepath.Join(out, s.spec.Path+".tar")
		if _, err := image.Build(s.spec, tar); err != nil {
			return nil, fmt.Errorf("image %s: %w", s.spec.Ref, err)
		}
		tars = append(tars, tar)
	}
	return tars, nil
}

// Secctx is secctx deployed in a cluster.
type Secctx struct {
	Namespace string
}

// DeploySecctx applies config/flyte (config/default plus the webhook for
// Flyte's label) through a kustomize overlay that only sets the locally built
// image, as a user would install it, and waits until the webhook answers:
// secctx makes its own certificate (self mode).
func DeploySecctx(ctx context.Context, c *cluster.Cluster, progress io.Writer) (*Secctx, error) {
	t0 := time.Now()
	ns := "secctx-system"
	dir, err := os.MkdirTemp("", "secctx-overlay")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// kustomize takes no absolute paths, so the overlay names config/ by a
	// relative one.
	base, err := filepath.Rel(dir, filepath.Join(Root(), "config", "flyte"))
	if err != nil {
		return nil, err
	}
	repo, tag, _ := strings.Cut(SecctxImage, ":")
	kustomization := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
- name: ghcr.io/secctx/secctx
  newName: %s
  newTag: %s
patches:
- path: configmap.yaml
`, base, repo, tag)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(kustomization), 0o600); err != nil {
		return nil, err
	}
	// The config names secctx's image for the token sidecar, which the
	// images transformer does not see; and the test provider is plain http.
	cm, err := os.ReadFile(filepath.Join(Root(), "config", "flyte", "configmap.yaml"))
	if err != nil {
		return nil, err
	}
	patched := strings.Replace(string(cm), `image: "ghcr.io/secctx/secctx:0.1.0"`, `image: "`+SecctxImage+`"`, 1)
	patched = strings.Replace(patched, "        dir: /etc/flyte/tokens\n", "        dir: /etc/flyte/tokens\n        httpHosts: [\""+OIDCHost+"\"]\n", 1)
	// The test provider's tokens live 10 s, less than the default floor
	// between renewals (10 s), which real providers are far above.
	floor := strings.Replace(patched, "        minRefreshSeconds: 10\n", "        minRefreshSeconds: 2\n", 1)
	if patched == string(cm) || !strings.Contains(patched, OIDCHost) || floor == patched {
		return nil, errors.New("config/flyte/configmap.yaml: cannot set the agent image, httpHosts and minRefreshSeconds for the test")
	}
	patched = floor
	if err := os.WriteFile(filepath.Join(dir, "configmap.yaml"), []byte(patched), 0o600); err != nil {
		return nil, err
	}
	if _, _, err := c.Kubectl(ctx, nil, "apply", "--server-side", "-k", dir); err != nil {
		return nil, err
	}
	s := &Secctx{Namespace: ns}
	if err := s.WaitReady(ctx, c, 2); err != nil {
		return nil, err
	}
	if progress != nil {
		fmt.Fprintf(progress, "secctx deployed from config/ and answering in %.1fs\n", time.Since(t0).Seconds())
	}
	return s, nil
}

// Scale sets the Deployment's replicas and waits for them: ready and
// answering when n > 0, gone from the Service when n == 0.
func (s *Secctx) Scale(ctx context.Context, c *cluster.Cluster, n int) error {
	if _, _, err := c.Kubectl(ctx, nil, "-n", s.Namespace, "scale", "deployment/secctx", fmt.Sprintf("--replicas=%d", n)); err != nil {
		return err
	}
	if n > 0 {
		return s.WaitReady(ctx, c, n)
	}
	return Poll(ctx, 90*time.Second, func() (bool, error) {
		pods, err := c.Client.CoreV1().Pods(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=secctx"})
		if err != nil {
			return false, err
		}
		if len(pods.Items) > 0 {
			return false, nil
		}
		eps, err := c.Client.DiscoveryV1().EndpointSlices(s.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=secctx-webhook"})
		if err != nil {
			return false, err
		}
		for _, e := range eps.Items {
			if len(e.Endpoints) > 0 {
				return false, nil
			}
		}
		return true, nil
	})
}

// WaitReady waits for n ready replicas, then until the API server's calls
// reach the webhook: a server-side dry run of a labelled pod comes back
// injected.
func (s *Secctx) WaitReady(ctx context.Context, c *cluster.Cluster, n int) error {
	return s.WaitAdmits(ctx, c, n, `{}`, 1)
}

// WaitAdmits is WaitReady with the dry-run pod asking for securityContext,
// until it is injected times in a row: after a config change, until no
// replica with the old config answers.
func (s *Secctx) WaitAdmits(ctx context.Context, c *cluster.Cluster, n int, securityContext string, times int) error {
	if _, _, err := c.Kubectl(ctx, nil, "-n", s.Namespace, "rollout", "status", "deployment/secctx", "--timeout=120s"); err != nil {
		return err
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "probe-",
			Labels:       map[string]string{"secctx.dev/inject": "true"},
			Annotations:  map[string]string{"secctx.dev/security-context": securityContext},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: TaskImage}}},
	}
	var last error
	inARow := 0
	err := Poll(ctx, 60*time.Second, func() (bool, error) {
		d, err := c.Client.AppsV1().Deployments(s.Namespace).Get(ctx, "secctx", metav1.GetOptions{})
		if err != nil {
			last = err
			return false, nil
		}
		if int(d.Status.ReadyReplicas) != n || int(d.Status.Replicas) != n {
			last = fmt.Errorf("deployment secctx: %d ready of %d, want %d", d.Status.ReadyReplicas, d.Status.Replicas, n)
			return false, nil
		}
		got, err := c.Client.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			last = err
			return false, nil
		}
		if _, ok := got.Annotations["secctx.dev/status"]; ok {
			inARow++
		} else {
			inARow = 0
		}
		return inARow >= times, nil
	})
	if err != nil {
		return fmt.Errorf("wait for secctx: %w (last: %v)", err, last)
	}
	return nil
}

// RunPod creates pod and waits until it has finished (Succeeded or Failed);
// it returns the pod as it ended and every container's log by name.
func RunPod(ctx context.Context, c *cluster.Cluster, pod *corev1.Pod, timeout time.Duration) (*corev1.Pod, map[string]string, error) {
	created, err := c.Client.CoreV1().Pods(pod.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return nil, nil, err
	}
	var final *corev1.Pod
	err = Poll(ctx, timeout, func() (bool, error) {
		p, err := c.Client.CoreV1().Pods(created.Namespace).Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		final = p
		return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		phase := corev1.PodPhase("unknown")
		if final != nil {
			phase = final.Status.Phase
		}
		return final, nil, fmt.Errorf("pod %s/%s did not finish (phase %s): %w", created.Namespace, created.Name, phase, err)
	}
	logs, err := containerLogs(ctx, c, final)
	return final, logs, err
}

// RunJob runs pod's spec as a Job (one pod, no retry), as workflow engines
// run tasks: the pod is made by the Job controller, from the template, with
// a generated name. It returns the Job's pod once it has finished, and the
// logs of its containers, as RunPod does.
func RunJob(ctx context.Context, c *cluster.Cluster, pod *corev1.Pod, timeout time.Duration) (*corev1.Pod, map[string]string, error) {
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		Spec: batchv1.JobSpec{BackoffLimit: ptr.To(int32(0)), Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations},
			Spec:       *pod.Spec.DeepCopy(),
		}},
	}
	job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
	if _, err := c.Client.BatchV1().Jobs(pod.Namespace).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		return nil, nil, err
	}
	var final *corev1.Pod
	err := Poll(ctx, timeout, func() (bool, error) {
		pods, err := c.Client.CoreV1().Pods(pod.Namespace).List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job.Name})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		final = &pods.Items[0]
		return final.Status.Phase == corev1.PodSucceeded || final.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		return final, nil, fmt.Errorf("job %s/%s: its pod did not finish: %w", job.Namespace, job.Name, err)
	}
	logs, err := containerLogs(ctx, c, final)
	return final, logs, err
}

// containerLogs are the logs of every container of pod, init containers
// included, by name.
func containerLogs(ctx context.Context, c *cluster.Cluster, pod *corev1.Pod) (map[string]string, error) {
	logs := map[string]string{}
	for _, ctr := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		b, err := c.Client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: ctr.Name}).DoRaw(ctx)
		if err != nil {
			return logs, fmt.Errorf("logs of %s/%s container %s: %w", pod.Namespace, pod.Name, ctr.Name, err)
		}
		logs[ctr.Name] = string(b)
	}
	return logs, nil
}

// Poll calls f every 200 ms until it returns true or an error, or the
// timeout passes. NotFound errors count as "not yet".
func Poll(ctx context.Context, timeout time.Duration, f func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		ok, err := f()
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.New("timed out after " + timeout.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
