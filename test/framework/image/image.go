// Package image builds container images without Docker or a registry: a
// static binary goes into a one-layer image written as a docker-archive
// tarball that `ctr images import` (and `kind load image-archive`) accept.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// NonRoot is the user distroless' nonroot images run as; the Dockerfile uses
// it too, and config/ sets runAsUser to the same number.
const NonRoot = 65532

// Spec describes a one-binary image.
type Spec struct {
	// Ref names the image, e.g. "localhost/secctx:e2e".
	Ref string
	// Binary is a static executable on disk; it becomes /<Path>.
	Binary string
	// Path is where the binary goes in the image, without the leading slash.
	Path string
	// Cmd is the image's default arguments to the binary.
	Cmd []string
	// User is "uid:gid"; empty means root.
	User string
	// More are other static executables to put in the image: path in the
	// image (without the leading slash) to the file on disk.
	More map[string]string
}

// epoch keeps layers byte-identical across builds of the same binary, so the
// digest only changes when the binary does.
var epoch = time.Unix(0, 0)

// Build writes the image to out as a tarball and returns its digest.
func Build(s Spec, out string) (string, error) {
	bin, err := os.ReadFile(s.Binary)
	if err != nil {
		return "", fmt.Errorf("read binary: %w", err)
	}
	layerTar, err := rootfs(s, bin)
	if err != nil {
		return "", err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return "", fmt.Errorf("layer: %w", err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", fmt.Errorf("append layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", fmt.Errorf("config file: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = runtime.GOARCH, "linux"
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Entrypoint = []string{"/" + s.Path}
	cf.Config.Cmd = s.Cmd
	cf.Config.User = s.User
	cf.Config.WorkingDir = "/"
	// No shell in the image: PATH only has to find nothing, but some
	// libraries read it, and distroless sets the same value.
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return "", fmt.Errorf("set config: %w", err)
	}
	tag, err := name.NewTag(s.Ref)
	if err != nil {
		return "", fmt.Errorf("image ref %q: %w", s.Ref, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	if err := tarball.WriteToFile(out, tag, img); err != nil {
		return "", fmt.Errorf("write %s: %w", out, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// rootfs is what distroless/static:nonroot holds that a static Go binary
// needs: passwd and group entries for root and nonroot, a world-writable /tmp,
// and the host's CA bundle; no shell and no package manager.
func rootfs(s Spec, bin []byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRoot, NonRoot)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRoot)
	steps := []func() error{
		func() error { return dir("etc/", 0o755) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("tmp/", 0o1777) },
		func() error { return dir("home/", 0o755) },
		func() error {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "home/nonroot/", Mode: 0o700, Uid: NonRoot, Gid: NonRoot, ModTime: epoch})
		},
	}
	if ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt"); err == nil {
		steps = append(steps,
			func() error { return dir("etc/ssl/", 0o755) },
			func() error { return dir("etc/ssl/certs/", 0o755) },
			func() error { return file("etc/ssl/certs/ca-certificates.crt", 0o644, ca) })
	}
	if d := filepath.Dir(s.Path); d != "." {
		steps = append(steps, func() error { return dir(d+"/", 0o755) })
	}
	steps = append(steps, func() error { return file(s.Path, 0o755, bin) })
	for _, p := range slices.Sorted(maps.Keys(s.More)) {
		steps = append(steps, func() error {
			b, err := os.ReadFile(s.More[p])
			if err != nil {
				return err
			}
			return file(p, 0o755, b)
		})
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, fmt.Errorf("image layer: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// GoBuild builds a static binary of pkg (a package path or ./dir relative to
// dir) into out. ldflags may be empty.
func GoBuild(ctx context.Context, dir, pkg, out, ldflags string) error {
	args := []string{"build", "-trimpath", "-o", out}
	if ldflags != "" {
		args = append(args, "-ldflags", ldflags)
	}
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return nil
}
