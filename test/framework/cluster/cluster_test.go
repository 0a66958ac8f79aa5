package cluster

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func binDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "bin")
}

// TestControlPlane starts the fast mode, checks that pods are admitted with
// the ServiceAccount plugin on, and that Stop leaves the machine as it was.
func TestControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and kube-apiserver")
	}
	// The deadline covers the wait for the machine's cluster lock: the
	// e2e and chart suites of the same module hold it for about 17 and 2
	// minutes, in either order, before this test gets it (go test's own
	// -timeout in make test is 30 minutes).
	ctx, cancel := context.WithTimeout(context.Background(), 27*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Mode: ControlPlane, BinDir: binDir(), Dir: filepath.Join(os.TempDir(), "secctx-cp-test"), Progress: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if t.Failed() {
			dst := filepath.Join(binDir(), "..", "_artifacts", "control-plane-"+time.Now().Format("20060102-150405"))
			_ = c.CollectArtifacts(context.Background(), dst)
			t.Logf("component logs are in %s", dst)
		}
		if !stopped {
			c.Stop()
		}
	}()
	t.Logf("control plane up in %s", c.StartDuration)
	if err := c.CreateNamespace(ctx, "cp-test", nil); err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "cp-test"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}},
	}
	got, err := c.Client.CoreV1().Pods("cp-test").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The ServiceAccount admission plugin sets the account and mounts its
	// token; that is what secctx's service-account rules build on.
	if got.Spec.ServiceAccountName != "default" {
		t.Errorf("serviceAccountName = %q, want default", got.Spec.ServiceAccountName)
	}
	var projected bool
	for _, v := range got.Spec.Volumes {
		projected = projected || strings.HasPrefix(v.Name, "kube-api-access-")
	}
	if !projected {
		t.Errorf("no kube-api-access volume: %+v", got.Spec.Volumes)
	}
	out, _, err := c.Kubectl(ctx, nil, "version", "-o", "yaml")
	if err != nil || !strings.Contains(out, "gitVersion: v1.37.2") {
		t.Errorf("kubectl version: %v\n%s", err, out)
	}
	stopped = true
	// Stop checks that the machine is as it was.
	if err := c.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
